"""Score candidates against several references and aggregate as the paper does (§5.3, eqs. 1–3).

Per example, metric and segment: the scores against each reference, their mean and maximum; over
the examples, Avg of Avg and Avg of Max (the definitions are docs/eval.md's, "What is scored").
:func:`summarize` adds percentile bootstrap confidence intervals, with the same resamples of the
examples for every segment and metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eval import metrics as metric_suite
from eval.lexical import DocumentFrequencies
from release.schema import joint_column

SEGMENTS = ("full", "think", "answer")
BACKBONE_OPTIONS = ("bertscore_model", "bertscore_layer", "sbert_model", "device")


def segments(thinks: Sequence[str], answers: Sequence[str]) -> dict[str, list[str]]:
    """The three segments from think and answer strings.

    ``full`` is the think and the answer joined by a blank line, without the models'
    own delimiters, so that outputs of different styles (GLM, Kimi) compare alike.
    """
    if len(thinks) != len(answers):
        raise ValueError(f"{len(thinks)} thinks but {len(answers)} answers")
    full = [
        "\n\n".join(part for part in (think, answer) if part)
        for think, answer in zip(thinks, answers, strict=True)
    ]
    return {"full": full, "think": list(thinks), "answer": list(answers)}


def reference_segments(rows: Mapping[str, Sequence[str]], annotator: str) -> dict[str, list[str]]:
    """The segments of ``annotator``'s reference in rows of the release's ``both`` config."""
    return segments(rows[joint_column(annotator, "think")], rows[joint_column(annotator, "answer")])


def batched_rows(references, size: int) -> Iterator[dict[str, list]]:
    """The release rows in order, ``size`` at a time, as columns (read from the Arrow table in batches)."""
    for start in range(0, len(references), size):
        yield references[start : start + size]


def corpus_frequencies(texts: Iterable[list[dict[str, list]]]) -> dict[str, DocumentFrequencies]:
    """Per segment, the document frequencies of its distinct texts (each batch: the segments of the
    model and of the references, or of the references alone) over the whole split: the corpus
    ``tfidf_cosine_corpus`` fits its IDF on, as in one call over the split."""
    frequencies = {segment: DocumentFrequencies(distinct=True) for segment in SEGMENTS}
    for batch in texts:
        for segment, corpus in frequencies.items():
            for texts_of_one in batch:
                corpus.add(texts_of_one[segment])
    return frequencies


@dataclass(frozen=True)
class ReferenceScores:
    """Per-example scores: ``scores[segment][metric]`` is an (examples, references) array."""

    scores: dict[str, dict[str, np.ndarray]]
    backbones: dict[str, dict]

    @property
    def n_examples(self) -> int:
        return next((len(table) for by_metric in self.scores.values() for table in by_metric.values()), 0)

    def per_example(self, segment: str, metric: str, how: str) -> np.ndarray:
        """``m_avg`` (``how="avg"``) or ``m_max`` (``how="max"``) of each example."""
        table = self.scores[segment][metric]
        if how == "avg":
            return table.mean(axis=1)
        if how == "max":
            return table.max(axis=1)
        raise ValueError(f"how must be 'avg' or 'max', not {how!r}")

    @classmethod
    def concatenate(cls, parts: Sequence[ReferenceScores]) -> ReferenceScores:
        """The examples of ``parts`` one after the other (the same segments and metrics in each)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        scores = {
            segment: {
                metric: np.concatenate([part.scores[segment][metric] for part in parts])
                for metric in by_metric
            }
            for segment, by_metric in parts[0].scores.items()
        }
        return cls(scores, parts[0].backbones)

    def columns(self) -> dict[str, np.ndarray]:
        """Flat columns ``{segment}/{metric}/{s1…|avg|max}``, e.g. for ``pyarrow.table``."""
        out = {}
        for segment, by_metric in self.scores.items():
            for metric, table in by_metric.items():
                for k in range(table.shape[1]):
                    out[f"{segment}/{metric}/s{k + 1}"] = table[:, k]
                for how in ("avg", "max"):
                    out[f"{segment}/{metric}/{how}"] = self.per_example(segment, metric, how)
        return out


def score_against_references(
    candidates: Mapping[str, Sequence[str]],
    references: Sequence[Mapping[str, Sequence[str]]],
    metrics: Sequence[str] = metric_suite.PAPER_METRICS,
    *,
    idf_corpora: Mapping[str, DocumentFrequencies] | None = None,
    **options,
) -> ReferenceScores:
    """Score every segment of ``candidates`` against the same segment of each reference.

    ``candidates`` maps a segment name to one text per example; ``references`` holds one
    such mapping per reference (two in the paper). ``idf_corpora`` gives, per segment, the
    document frequencies ``tfidf_cosine_corpus`` uses (by default the distinct texts of the
    segment's call; :func:`eval.score.score` gathers them over the whole split, so that
    scoring in batches gives the same scores). ``options`` go to
    :func:`eval.metrics.similarities`.
    """
    if not references:
        raise ValueError("at least one reference is needed")
    scores = {}
    for segment, texts in candidates.items():
        reference_texts = [_segment_of(reference, segment, len(texts)) for reference in references]
        if idf_corpora is not None:
            options["idf_corpus"] = idf_corpora[segment]
        flat = metric_suite.similarities(
            metrics,
            list(texts) * len(references),
            [text for texts_k in reference_texts for text in texts_k],
            **options,
        )
        scores[segment] = {
            name: values.reshape(len(references), len(texts)).T for name, values in flat.items()
        }
    names = [name for by_metric in scores.values() for name in by_metric]
    backbone_options = {key: options[key] for key in BACKBONE_OPTIONS if key in options}
    return ReferenceScores(scores, metric_suite.backbones(list(dict.fromkeys(names)), **backbone_options))


def _segment_of(reference: Mapping[str, Sequence[str]], segment: str, n_examples: int) -> list[str]:
    if segment not in reference:
        raise ValueError(f"a reference lacks the segment {segment!r}")
    texts = list(reference[segment])
    if len(texts) != n_examples:
        raise ValueError(f"segment {segment!r}: {n_examples} candidates but {len(texts)} reference texts")
    return texts


def agreement_scores(
    annotators: Mapping[str, Mapping[str, Sequence[str]]],
    metrics: Sequence[str] = metric_suite.PAPER_METRICS,
    **options,
) -> tuple[ReferenceScores, list[str]]:
    """The annotators scored against each other: each one's texts as the candidate against each
    other one's, a column per ordered pair ("glm vs kimi", "kimi vs glm"), all in one call per
    segment (each text is tokenized and embedded once). ``options`` as for
    :func:`score_against_references`. Avg over the columns is the mean of both directions, Max
    the larger; for the symmetric metrics (all of the paper's) the two directions agree.
    """
    names = list(annotators)
    if len(names) < 2:
        raise ValueError(f"the agreement needs two annotators or more, not {names}")
    pairs = [(a, b) for a in names for b in names if a != b]
    first = annotators[names[0]]
    candidate = {segment: [t for a, _ in pairs for t in annotators[a][segment]] for segment in first}
    reference = {segment: [t for _, b in pairs for t in annotators[b][segment]] for segment in first}
    flat = score_against_references(candidate, [reference], metrics, **options)
    n_examples = len(next(iter(first.values())))
    scores = {
        segment: {
            metric: table[:, 0].reshape(len(pairs), n_examples).T for metric, table in by_metric.items()
        }
        for segment, by_metric in flat.scores.items()
    }
    return ReferenceScores(scores, flat.backbones), [f"{a} vs {b}" for a, b in pairs]


def summarize_columns(
    columns: Mapping[str, np.ndarray], n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, dict]:
    """Each column's mean over the examples with its percentile bootstrap interval (the same
    resamples of the examples for every column): ``{name: {"mean": m, "ci": (low, high)}}``."""
    if n_boot < 1:
        raise ValueError(f"the confidence intervals need at least 1 bootstrap resample, got {n_boot}")
    names = list(columns)
    values = np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in names])
    if len(values) == 0:
        raise ValueError("no examples to summarize")
    means = values.mean(axis=0)
    low, high = np.quantile(
        bootstrap_means(values, n_boot, seed), [(1 - confidence) / 2, (1 + confidence) / 2], axis=0
    )
    return {
        name: {"mean": float(mean), "ci": (float(lo), float(hi))}
        for name, mean, lo, hi in zip(names, means, low, high, strict=True)
    }


def summarize(
    per_example: ReferenceScores, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """Avg of Avg and Avg of Max per segment and metric, with bootstrap confidence intervals.

    Returns ``{"n_examples", "backbones", "bootstrap", "scores"}`` where
    ``scores[segment][metric]`` holds ``avg_of_avg``, ``avg_of_max`` and their ``*_ci``
    (low, high) pairs.
    """
    if per_example.n_examples == 0:
        raise ValueError("no examples to summarize")
    if n_boot < 1:
        raise ValueError(f"the confidence intervals need at least 1 bootstrap resample, got {n_boot}")
    keys = [
        (segment, metric, how)
        for segment, by_metric in per_example.scores.items()
        for metric in by_metric
        for how in ("avg", "max")
    ]
    summary = summarize_columns(
        {key: per_example.per_example(*key) for key in keys}, n_boot, seed, confidence
    )
    scores: dict[str, dict[str, dict]] = {}
    for (segment, metric, how), entry in summary.items():
        scores.setdefault(segment, {}).setdefault(metric, {})
        scores[segment][metric][f"avg_of_{how}"] = entry["mean"]
        scores[segment][metric][f"avg_of_{how}_ci"] = entry["ci"]
    return {
        "n_examples": per_example.n_examples,
        "backbones": per_example.backbones,
        "bootstrap": bootstrap_settings(n_boot, seed, confidence),
        "scores": scores,
    }


def bootstrap_settings(n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    return {"n_boot": n_boot, "seed": seed, "confidence": confidence, "method": "percentile"}


def bootstrap_means(values: np.ndarray, n_boot: int, seed: int, max_cells: int = 1 << 22) -> np.ndarray:
    """Column means of ``n_boot`` resamples of the rows of ``values`` (rows × columns)."""
    rng = np.random.default_rng(seed)
    n_rows = len(values)
    per_chunk = max(1, max_cells // n_rows)
    chunks = []
    for start in range(0, n_boot, per_chunk):
        size = min(per_chunk, n_boot - start)
        picks = rng.integers(0, n_rows, size=(size, n_rows)) + n_rows * np.arange(size)[:, None]
        counts = np.bincount(picks.ravel(), minlength=size * n_rows).reshape(size, n_rows)
        chunks.append(counts @ values / n_rows)
    return np.concatenate(chunks)
