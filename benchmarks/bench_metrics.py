"""Time the metric suite against the naive reference loops and check their numbers agree.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_metrics --pairs 1000 --words 1500 --semantic-pairs 40

Examples mirror the paper's evaluation: two references and one candidate (``--models 1``) or five
(``--models 5``), texts of about ``--words`` words drawn deterministically from the ImageNet-21K
glosses' vocabulary, sharing sentences within an example as model outputs do. The naive loops
(``tests/fixtures/reference_metrics.py``) call the reference libraries per pair; ROUGE-L is timed on
the first ``--lcs-pairs`` pairs and the neural metrics on the first ``--semantic-pairs``, all
reported per 1,000 pairs. Figures: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

import numpy as np

from eval import lexical, metrics, neural
from tests.fixtures.reference_metrics import (
    LEXICAL_REFERENCES,
    bert_score_reference,
    sbert_cosine_reference,
)

LEXICAL = ("rouge1", "rougeL", "jaccard", "overlap", "tfidf_cosine", "tf_cosine")
SEMANTIC = ("bertscore_f1", "sbert_cosine")


def vocabulary() -> tuple[list[str], np.ndarray]:
    """Words of the ImageNet-21K glosses and lemmas and the cumulative distribution of their frequencies."""
    from common.classes import imagenet21k_classes

    classes = imagenet21k_classes()
    text = " ".join(
        [*classes.definitions.values(), *(" ".join(lemmas) for lemmas in classes.lemmas.values())]
    )
    words, counts = np.unique(re.findall(r"[A-Za-z][A-Za-z'-]*", text.lower()), return_counts=True)
    return words.tolist(), np.cumsum(counts) / counts.sum()


def sentence(rng: np.random.Generator, words: list[str], cdf: np.ndarray) -> str:
    draws = np.searchsorted(cdf, rng.random(int(rng.integers(8, 26))), side="right")
    chosen = [words[min(i, len(words) - 1)] for i in draws]
    if rng.random() < 0.2:
        chosen.insert(int(rng.integers(len(chosen))), str(int(rng.integers(2, 500))))
    return chosen[0].capitalize() + " " + " ".join(chosen[1:]) + rng.choice([".", ".", ",", "?", ";"])


def document(rng: np.random.Generator, shared: list[str], n_words: int, words, cdf) -> str:
    """Half shared sentences (a fifth of their words dropped), half fresh ones."""
    out: list[str] = []
    while sum(s.count(" ") + 1 for s in out) < n_words:
        if rng.random() < 0.5:
            kept = [w for w in shared[int(rng.integers(len(shared)))].split() if rng.random() > 0.2]
            out.append(" ".join(kept) or "Yes.")
        else:
            out.append(sentence(rng, words, cdf))
    return " ".join(out)


def make_pairs(n_pairs: int, n_words: int, seed: int = 0, models: int = 1) -> tuple[list[str], list[str]]:
    """Candidates and references: example k gives pairs (c_mk, r1_k) and (c_mk, r2_k) per model m."""
    rng = np.random.default_rng(seed)
    words, cdf = vocabulary()
    candidates, references = [], []
    while len(candidates) < n_pairs:
        shared = [sentence(rng, words, cdf) for _ in range(40)]
        example_references = [document(rng, shared, n_words, words, cdf) for _ in range(2)]
        for _ in range(models):
            candidate = document(rng, shared, n_words, words, cdf)
            candidates += [candidate, candidate]
            references += example_references
    return candidates[:n_pairs], references[:n_pairs]


def naive_semantic(metric: str) -> Callable[[str, str], float]:
    backbone = neural.resolve_backbone("bertscore" if metric.startswith("bertscore") else "sbert")
    if metric == "bertscore_f1":
        return lambda c, r: float(bert_score_reference([c], [r], backbone.model, backbone.layer)[2][0])
    return sbert_cosine_reference(backbone.model)


def timed(function: Callable, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def compare(metric: str, naive, candidates: list[str], references: list[str], naive_pairs: int) -> dict:
    """Seconds per 1,000 pairs of the suite (on all pairs, token cache empty: it tokenizes every
    text) and of the naive loop (on the first ``naive_pairs``), and the largest difference
    between them on those."""
    lexical.set_token_cache(lexical.DEFAULT_TOKEN_CACHE)  # empties it
    suite_seconds, got = timed(metrics.similarity, metric, candidates, references)
    pairs = zip(candidates[:naive_pairs], references[:naive_pairs], strict=True)
    naive_seconds, expected = timed(lambda: np.array([naive(c, r) for c, r in pairs]))
    return {
        "metric": metric,
        "suite_pairs": len(candidates),
        "naive_pairs": naive_pairs,
        "suite": suite_seconds * 1000 / len(candidates),
        "naive": naive_seconds * 1000 / naive_pairs,
        "diff": float(np.abs(np.clip(expected, 0, 1) - got[:naive_pairs]).max()),
    }


def print_rows(title: str, rows: list[dict], together_pairs: int, together_seconds: float) -> None:
    print(f"\n{title}\nseconds per 1,000 pairs; naive and suite timed on the pairs counted beside them")
    print(f"{'metric':<14}{'naive':>10}{'pairs':>7}{'suite':>10}{'pairs':>7}{'ratio':>9}{'max |diff|':>12}")
    for row in rows:
        print(
            f"{row['metric']:<14}{row['naive']:>10.3f}{row['naive_pairs']:>7}{row['suite']:>10.4f}"
            f"{row['suite_pairs']:>7}{row['naive'] / row['suite']:>8.0f}x{row['diff']:>12.2e}"
        )
    naive_total = sum(row["naive"] for row in rows)
    suite_total = together_seconds * 1000 / together_pairs
    print(
        f"{'together':<14}{naive_total:>10.3f}{'':>7}{suite_total:>10.4f}{together_pairs:>7}"
        f"{naive_total / suite_total:>8.0f}x  (suite: one similarities() call for all of them)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--words", type=int, default=1500)
    parser.add_argument("--semantic-pairs", type=int, default=40)
    parser.add_argument("--lcs-pairs", type=int, default=30, help="pairs for the naive ROUGE-L loop")
    parser.add_argument(
        "--models", type=int, default=1, help="candidates per example, all scored in one call"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    candidates, references = make_pairs(args.pairs, args.words, args.seed, args.models)
    print(f"{len(candidates)} pairs, {len(set(candidates) | set(references))} distinct texts, ", end="")
    print(f"{np.mean([len(t.split()) for t in candidates]):.0f} words a text on average")

    metrics.similarities(LEXICAL, candidates[:2], references[:2])  # imports outside the timings
    rows = [
        compare(
            metric,
            LEXICAL_REFERENCES[metric],
            candidates,
            references,
            args.lcs_pairs if metric == "rougeL" else len(candidates),
        )
        for metric in LEXICAL
    ]
    lexical.set_token_cache(lexical.DEFAULT_TOKEN_CACHE)
    together, _ = timed(metrics.similarities, LEXICAL, candidates, references)
    print_rows(
        "Lexical and vector metrics (each suite row tokenizes every text anew: token cache empty)",
        rows,
        len(candidates),
        together,
    )
    # The single-metric path: the six metrics asked one at a time, the cache empty at the first.
    lexical.set_token_cache(lexical.DEFAULT_TOKEN_CACHE)
    one_at_a_time = sum(timed(metrics.similarity, m, candidates, references)[0] for m in LEXICAL)
    print(
        f"{'one at a time':<14}{'':>17}{one_at_a_time * 1000 / len(candidates):>10.4f}{len(candidates):>7}"
        f"   {one_at_a_time / together:.2f}x the time of the one similarities() call (six similarity() "
        "calls in a row, the token cache empty at the first)"
    )

    n = args.semantic_pairs
    print(f"\nBackbones: {metrics.backbones(SEMANTIC)}")
    metrics.similarities(SEMANTIC, candidates[:1], references[:1])  # model loading outside the timings
    rows = [compare(metric, naive_semantic(metric), candidates[:n], references[:n], n) for metric in SEMANTIC]
    together, _ = timed(metrics.similarities, SEMANTIC, candidates[:n], references[:n])
    print_rows("Semantic metrics (the naive bert-score call loads its model each time)", rows, n, together)


if __name__ == "__main__":
    main()
