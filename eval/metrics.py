"""The paper's text-similarity metrics (§5.3), fast, with the reference libraries' numbers.

``similarity(metric, candidates, references)`` gives one score in [0, 1] per pair;
``similarities(metrics, ...)`` scores several metrics with shared work: every distinct text is
tokenized once for all lexical metrics and embedded once per neural backbone.

The registry (``METRICS``, ``FAMILIES``) is the one definition in code of the metrics: each entry
names its family, its display name in the paper's tables, its backbone, and whether it is a column
of its family's table (:func:`paper_tables`) and a bar of its chart (:func:`family_charts`);
``eval.report`` names no metric itself. What each metric equals, and the empty-text rules:
docs/eval.md, "Metrics". The scoring itself is in :mod:`eval.lexical` and :mod:`eval.neural`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from eval.lexical import DEFAULT_CHUNK_PAIRS, LEXICAL_SCORERS, DocumentFrequencies, Pairs, lexical_scores
from eval.neural import bertscore, bertscore_backend, resolve_backbone, sbert_backend, sbert_cosine

# ---------------------------------------------------------------------------------------
# The registry: every metric, its family, and the paper's table and the report's chart that
# show it. The report (eval/report.py) builds Tables 3-7 and its charts from these entries only.


@dataclass(frozen=True)
class Family:
    """A metric family: the paper's table that lists its metrics (a row per model) and the
    report's bar chart (``chart_{chart}.png``) that draws them; families may share a chart."""

    name: str
    table: str
    chart: str


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in [
        Family("semantic", "Table 3: Semantic Similarity Metrics", "semantic"),
        Family("ngram", "Table 4: N-gram Overlap Metrics", "lexical"),
        Family("set", "Table 5: Lexical Set-Overlap Metrics", "lexical"),
        Family("vector", "Table 6: Vector Space Metrics", "vector"),
    ]
}
# Table 7: every metric scored, a row each, against the three segments (full, think, answer).
SEGMENT_TABLE = "Table 7: Thinking Tokens vs Answer Tokens"


@dataclass(frozen=True)
class Metric:
    """A registry entry: what a metric is and where the report shows it."""

    name: str
    family: str  # a key of FAMILIES
    display: str  # as in the paper's tables
    backbone: str | None = None  # "bertscore" or "sbert" for semantic metrics
    full_length: bool = False
    in_table: bool = True  # a column of its family's table (Tables 3-6); every metric is in Table 7
    in_chart: bool = True  # a bar of its family's chart


def _registry(metrics: Iterable[Metric]) -> dict[str, Metric]:
    registry: dict[str, Metric] = {}
    for metric in metrics:
        if metric.family not in FAMILIES or metric.name in registry:
            raise ValueError(f"{metric.name}: unknown family {metric.family!r} or a second entry")
        registry[metric.name] = metric
    return registry


_SHOWN_IN_TABLE_7_ONLY = {"in_table": False, "in_chart": False}
METRICS: dict[str, Metric] = _registry(
    [
        Metric("bertscore_f1", "semantic", "BERTScore", "bertscore"),
        Metric(
            "bertscore_precision", "semantic", "BERTScore Precision", "bertscore", **_SHOWN_IN_TABLE_7_ONLY
        ),
        Metric("bertscore_recall", "semantic", "BERTScore Recall", "bertscore", **_SHOWN_IN_TABLE_7_ONLY),
        Metric("sbert_cosine", "semantic", "Sentence-BERT Cosine Similarity", "sbert"),
        Metric("bertscore_f1_full", "semantic", "BERTScore (full length)", "bertscore", True),
        Metric(
            "bertscore_precision_full",
            "semantic",
            "BERTScore Precision (full length)",
            "bertscore",
            True,
            **_SHOWN_IN_TABLE_7_ONLY,
        ),
        Metric(
            "bertscore_recall_full",
            "semantic",
            "BERTScore Recall (full length)",
            "bertscore",
            True,
            **_SHOWN_IN_TABLE_7_ONLY,
        ),
        Metric(
            "sbert_cosine_full", "semantic", "Sentence-BERT Cosine Similarity (full length)", "sbert", True
        ),
        Metric("rouge1", "ngram", "ROUGE-1"),
        Metric("rougeL", "ngram", "ROUGE-L"),
        Metric("jaccard", "set", "Jaccard Index"),
        Metric("overlap", "set", "Overlap Coefficient"),
        Metric("tfidf_cosine", "vector", "TF-IDF Cosine Similarity"),
        Metric("tf_cosine", "vector", "Cosine Similarity"),
        Metric("tfidf_cosine_corpus", "vector", "TF-IDF Cosine Similarity (corpus IDF)", in_table=False),
    ]
)

# Table 7's row order. Table 7 labels the two vector rows "TF-IDF" and "TF-IDF Cosine
# Similarity"; Table 6 (and this registry) calls them "TF-IDF Cosine Similarity" and "Cosine Similarity".
PAPER_METRICS = (
    "bertscore_f1",
    "sbert_cosine",
    "rouge1",
    "rougeL",
    "jaccard",
    "overlap",
    "tfidf_cosine",
    "tf_cosine",
)


def paper_tables() -> dict[str, tuple[str, ...]]:
    """Tables 3-6: each family's table title and the metrics it lists, in registry order."""
    tables: dict[str, tuple[str, ...]] = {family.table: () for family in FAMILIES.values()}
    for metric in METRICS.values():
        if metric.in_table:
            tables[FAMILIES[metric.family].table] += (metric.name,)
    return tables


def family_charts() -> dict[str, tuple[str, ...]]:
    """The report's bar charts: each chart's name and the metrics it draws, in registry order."""
    charts: dict[str, tuple[str, ...]] = {family.chart: () for family in FAMILIES.values()}
    for metric in METRICS.values():
        if metric.in_chart:
            charts[FAMILIES[metric.family].chart] += (metric.name,)
    return charts


LEXICAL_METRICS = tuple(name for name, m in METRICS.items() if m.family != "semantic")
SEMANTIC_METRICS = tuple(name for name, m in METRICS.items() if m.family == "semantic")


def full_length_name(metric: str) -> str:
    """The whole-text variant of a semantic metric (``sbert_cosine`` -> ``sbert_cosine_full``)."""
    return metric if metric.endswith("_full") else f"{metric}_full"


def similarity(metric: str, candidates: Sequence[str], references: Sequence[str], **options) -> np.ndarray:
    """One score in [0, 1] per (candidate, reference) pair; options as for :func:`similarities`.

    One metric costs what it costs in a shared call, and no more: a text already tokenized by an
    earlier call (still in the token cache, :func:`set_token_cache`) is not tokenized again, so a
    caller who asks for the metrics one at a time pays the tokenization once.
    """
    return next(iter(similarities([metric], candidates, references, **options).values()))


def similarities(
    metrics: Iterable[str],
    candidates: Sequence[str],
    references: Sequence[str],
    *,
    full_length: bool = False,
    idf_corpus: Iterable[str] | DocumentFrequencies | None = None,
    bertscore_model: str | None = None,
    bertscore_layer: int | None = None,
    sbert_model: str | None = None,
    device: str | None = None,
    batch_size: int = 32,
    chunk_size: int = DEFAULT_CHUNK_PAIRS,
) -> dict[str, np.ndarray]:
    """Scores of several metrics on the same pairs, as ``{metric name: float64 array}``.

    ``full_length`` turns every semantic metric into its ``*_full`` variant (the result
    is keyed by that name). ``idf_corpus`` is the corpus ``tfidf_cosine_corpus`` fits its
    IDF on: texts (read once, in a first pass) or :class:`DocumentFrequencies` gathered
    beforehand; by default the call's distinct texts. ``bertscore_model``/``bertscore_layer``/
    ``sbert_model`` override the backbones (a hub id or a local folder; without a layer
    BERTScore uses the model's last). Neural metrics run on ``device`` (CUDA when present) in
    batches of ``batch_size`` sequences. Lexical metrics score ``chunk_size`` pairs at a time,
    which bounds the call's memory beyond its inputs and results; the scores do not depend on it.
    """
    names = _checked_names(metrics, full_length)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a whole number of pairs >= 1, not {chunk_size!r}")
    pairs = Pairs.index(candidates, references)
    scores: dict[str, np.ndarray] = {}
    lexical = [name for name in names if name in LEXICAL_METRICS]
    if lexical:
        scores.update(lexical_scores(lexical, pairs, idf_corpus, chunk_size))
    semantic = [METRICS[name] for name in names if name in SEMANTIC_METRICS]
    device = device or (_default_device() if semantic else "cpu")
    for full in sorted({metric.full_length for metric in semantic if metric.backbone == "bertscore"}):
        backbone = resolve_backbone("bertscore", bertscore_model, bertscore_layer)
        precision, recall, f1 = bertscore(pairs, backbone, full, device, batch_size)
        suffix = "_full" if full else ""
        scores[f"bertscore_precision{suffix}"] = precision
        scores[f"bertscore_recall{suffix}"] = recall
        scores[f"bertscore_f1{suffix}"] = f1
    for metric in semantic:
        if metric.backbone == "sbert":
            backbone = resolve_backbone("sbert", sbert_model)
            scores[metric.name] = sbert_cosine(pairs, backbone, metric.full_length, device, batch_size)
    return {name: scores[name] for name in names}


def backbones(
    metrics: Iterable[str] = PAPER_METRICS,
    *,
    bertscore_model: str | None = None,
    bertscore_layer: int | None = None,
    sbert_model: str | None = None,
    device: str | None = None,
) -> dict[str, dict]:
    """The backbone, layer and token limit behind each neural metric in ``metrics``."""
    kinds = {METRICS[name].backbone for name in _checked_names(metrics, False)} - {None}
    device = device or _default_device()
    report = {}
    if "bertscore" in kinds:
        backbone = resolve_backbone("bertscore", bertscore_model, bertscore_layer)
        _, _, max_length = bertscore_backend(backbone.model, backbone.layer, device)
        report["bertscore"] = backbone.describe(max_length)
    if "sbert" in kinds:
        backbone = resolve_backbone("sbert", sbert_model)
        report["sbert"] = backbone.describe(sbert_backend(backbone.model, device).max_seq_length)
    return report


def _checked_names(metrics: Iterable[str], full_length: bool) -> list[str]:
    names = list(metrics if not isinstance(metrics, str) else [metrics])
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected some of {list(METRICS)}")
    if full_length:
        names = [full_length_name(n) if METRICS[n].family == "semantic" else n for n in names]
    return list(dict.fromkeys(names))


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


if set(LEXICAL_SCORERS) != set(LEXICAL_METRICS):
    raise RuntimeError("every lexical metric of the registry needs a scorer, and only those")
