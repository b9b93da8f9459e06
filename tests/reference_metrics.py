"""The per-pair reference-library computations that eval/metrics.py must equal.

They call rouge-score, scikit-learn, bert-score and sentence-transformers directly, one pair
at a time: tests/test_metrics.py checks the suite against them and benchmarks/bench_metrics.py
times it against them.
"""

from collections.abc import Callable

from rouge_score import rouge_scorer, tokenize
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

PairScore = Callable[[str, str], float]


def rouge_reference(metric: str) -> PairScore:
    scorer = rouge_scorer.RougeScorer([metric], use_stemmer=False)
    return lambda candidate, reference: scorer.score(reference, candidate)[metric].fmeasure


def token_sets(candidate: str, reference: str) -> tuple[set, set]:
    return set(tokenize.tokenize(candidate, None)), set(tokenize.tokenize(reference, None))


def jaccard_reference(candidate: str, reference: str) -> float:
    a, b = token_sets(candidate, reference)
    return len(a & b) / len(a | b) if a | b else 0.0


def overlap_reference(candidate: str, reference: str) -> float:
    a, b = token_sets(candidate, reference)
    return len(a & b) / min(len(a), len(b)) if a and b else 0.0


def pair_fitted_cosine(vectorizer) -> PairScore:
    """Cosine of the two texts' vectors, the vectorizer fitted on that pair alone."""

    def score(candidate: str, reference: str) -> float:
        try:
            matrix = vectorizer().fit_transform([candidate, reference])
        except ValueError:  # empty vocabulary: neither text has a term
            return 0.0
        return float(cosine_similarity(matrix[0], matrix[1])[0, 0])

    return score


LEXICAL_REFERENCES: dict[str, PairScore] = {
    "rouge1": rouge_reference("rouge1"),
    "rougeL": rouge_reference("rougeL"),
    "jaccard": jaccard_reference,
    "overlap": overlap_reference,
    "tf_cosine": pair_fitted_cosine(CountVectorizer),
    "tfidf_cosine": pair_fitted_cosine(TfidfVectorizer),
}


def bert_score_reference(candidates: list[str], references: list[str], model: str, num_layers: int):
    """``bert_score.score``'s (precision, recall, f1) tensors, one pair per batch.

    batch_size=1 scores each pair alone, as a per-pair call does; in larger batches
    bert_score's zero padding can replace a negative best cosine by 0.
    """
    import bert_score

    return bert_score.score(candidates, references, model_type=model, num_layers=num_layers, batch_size=1)


def sbert_cosine_reference(model: str, device: str | None = None) -> PairScore:
    """Cosine of the sentence-transformers embeddings of the two texts (unclipped)."""
    from sentence_transformers import SentenceTransformer, util

    encoder = SentenceTransformer(model, device=device)
    return lambda candidate, reference: util.cos_sim(
        encoder.encode(candidate), encoder.encode(reference)
    ).item()
