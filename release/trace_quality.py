"""What a release's reasoning traces are like, per annotator: cheap CPU measures beyond Tables 1-2.

Each measure is defined once, in ``docs/release.md`` ("Trace quality"), under the name it has in
``stats.json`` (``trace_quality.<annotator>.<name>``) and in the card. :class:`TraceQuality` is fed
the same per-annotator tables as :class:`release.stats.ReleaseStats`, in release order; each table's
words are found once (:class:`release.trace_words.Words`) and every measure over all traces is an
array operation on them. It keeps per trace a few integers (lengths, the MinHash bands' keys) and per
annotator counters and a fixed-size sample of traces, for the measures too costly for every trace
(distinct-n, Self-BLEU, the class named in the think).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.classes import imagenet21k_classes
from generation.verdicts.labels import CORRECT_KINDS, label_hits
from release.trace_words import MinHashScheme, Words, earlier_duplicates

logger = logging.getLogger(__name__)

# Said when a trace stops to doubt or re-check itself (as counted for R1-style traces); a marker of
# several words counts as that sequence of words.
REFLECTION_MARKERS = (
    "wait",
    "hmm",
    "alternatively",
    "actually",
    "let me check",
    "let me verify",
    "let me reconsider",
    "double check",
    "on second thought",
)
QUANTILES = {"min": 0, "median": 50, "p95": 95, "p99": 99, "max": 100}
REPEAT_N = 4  # repetition: the share of repeated word 4-grams
OPENING_WORDS = 5  # template collapse: the traces that open with the most common first five words
SAMPLE = 500  # traces per annotator (lowest sha256 of the image id) for distinct-n and the class check
SELF_BLEU_SAMPLE = 100  # the first of them for Self-BLEU (each against the others)
BLEU_ORDERS = (1, 2, 3, 4)
BLEU_EPSILON = 0.1  # nltk's smoothing method 1
MINHASH_PERMUTATIONS = 64  # near-duplicate traces: datasketch's MinHash with 64 permutations ...
NEAR_DUPLICATE_JACCARD = 0.8  # ... and its MinHashLSH at this threshold: 5 bands of 11 values
LSH_BANDS, LSH_ROWS = 5, 11  # (what datasketch chooses for 0.8 and 64; the tests check it)
TRACE_QUALITY_CHART = "trace_quality.png"  # in the release folder, beside the card
COLUMNS = [
    "image_id",
    "wnid",
    "think",
    "answer",
    "think_closed",
    "finish_reason",
    "forced_answer",
    "label_verdict",
]
_SCHEME = MinHashScheme(MINHASH_PERMUTATIONS, LSH_BANDS, LSH_ROWS)
_MARKERS = [marker.split() for marker in REFLECTION_MARKERS]


def distinct_n(texts: Words, n: int) -> float:
    """Distinct word n-grams over all word n-grams of ``texts`` (0.0 without any)."""
    codes, _, _ = texts.grams(n)
    return len(np.unique(codes)) / len(codes) if len(codes) else 0.0


def self_bleu(texts: Words) -> float:
    """The mean over ``texts`` (those with a word) of each one's BLEU-4 against all the others as
    references, as ``nltk``'s ``sentence_bleu`` gives it (uniform weights, smoothing method 1: a zero
    precision counts :data:`BLEU_EPSILON` matches; no unigram in common scores 0), in one pass: each
    n-gram's two largest counts over all texts, and which text holds the largest, give every text's
    clipped counts against the others at once (nltk counts every reference again for every hypothesis:
    minutes for 100 traces of 1,000 words). ``tests/test_trace_quality.py`` checks it against nltk."""
    lengths = texts.counts()
    usable = np.flatnonzero(lengths)
    if len(usable) < 2:
        return 0.0
    clipped = np.stack([_clipped_counts(texts, n) for n in BLEU_ORDERS], axis=1)
    totals = np.maximum(1, lengths[:, None] - np.asarray(BLEU_ORDERS) + 1)
    scores = []
    for index in usable.tolist():
        if not clipped[index, 0]:
            scores.append(0.0)
            continue
        precisions = [
            (c or BLEU_EPSILON) / t
            for c, t in zip(clipped[index].tolist(), totals[index].tolist(), strict=True)
        ]
        length = int(lengths[index])
        others = [int(lengths[i]) for i in usable.tolist() if i != index]
        closest = min(others, key=lambda other: (abs(other - length), other))
        penalty = 1.0 if length > closest else math.exp(1 - closest / length)
        scores.append(penalty * math.exp(math.fsum(math.log(p) / len(BLEU_ORDERS) for p in precisions)))
    return float(np.mean(scores))


def _clipped_counts(texts: Words, n: int) -> np.ndarray:
    """Per text, its n-grams' counts each clipped at the largest count of that n-gram in another text."""
    codes, text, bound = texts.grams(n)
    if not len(codes):
        return np.zeros(len(texts), np.int64)
    keys, counts = np.unique(text * bound + codes, return_counts=True)
    holders, grams = keys // bound, keys % bound
    order = np.lexsort((holders, -counts, grams))  # per n-gram: the largest count first, lowest text first
    grams, counts, holders = grams[order], counts[order], holders[order]
    starts = np.flatnonzero(np.r_[True, grams[1:] != grams[:-1]])
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(grams)]))
    after = np.minimum(starts + 1, len(grams) - 1)
    second = np.where((starts + 1 < len(grams)) & (grams[after] == grams[starts]), counts[after], 0)
    limit = np.where(holders[starts][group] == holders, second[group], counts[starts][group])
    return np.bincount(holders, np.minimum(counts, limit), minlength=len(texts)).astype(np.int64)


def quantiles(values: np.ndarray | list[int]) -> dict[str, float]:
    if not len(values):
        return dict.fromkeys(QUANTILES, 0)
    array = np.asarray(values)
    return {name: float(np.percentile(array, q, method="lower")) for name, q in QUANTILES.items()}


def table_words(table: pa.Table) -> tuple[Words, Words]:
    """The words of a table's thinks and of its answers (one vocabulary)."""
    columns = [table[name].combine_chunks().cast(pa.large_string()) for name in ("think", "answer")]
    return Words.of(pa.concat_arrays(columns)).split(table.num_rows)


@dataclass
class _Annotator:
    think_words: list[np.ndarray] = field(default_factory=list)
    answer_words: list[np.ndarray] = field(default_factory=list)
    truncated: int = 0
    forced: int = 0
    unclosed: int = 0
    markers: int = 0
    with_marker: int = 0
    repeated: list[np.ndarray] = field(default_factory=list)
    openings: Counter = field(default_factory=Counter)
    overlap: list[np.ndarray] = field(default_factory=list)
    sample: list[int] = field(default_factory=list)  # a heap of the sampled image ids' negated keys
    sampled: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # key: think, wnid, verdict
    bands: list[np.ndarray] = field(default_factory=list)  # each trace's MinHash LSH band keys


def _prepare_class_check() -> None:
    """Build the label verifier's automaton (the class check's, a second or two) while the traces come."""
    try:
        label_hits(["warm-up"], [imagenet21k_classes().wnids[0]])
    except Exception:
        logger.debug("preparing the class check failed; the report will say why", exc_info=True)


def _count(table: pa.Table, column: str, value) -> int:
    return int(pc.sum(pc.equal(table[column], value)).as_py() or 0) if column in table.column_names else 0


class TraceQuality:
    """The trace-quality measures of each annotator's rows (columns :data:`COLUMNS`)."""

    def __init__(self, annotators=()) -> None:
        self._by = {annotator: _Annotator() for annotator in annotators}  # more as they come
        threading.Thread(target=_prepare_class_check, name="prepare-class-check", daemon=True).start()

    def add(self, annotator: str, table: pa.Table) -> None:
        self.add_words(annotator, table, *table_words(table))

    def add_words(self, annotator: str, table: pa.Table, think: Words, answer: Words) -> None:
        """:meth:`add` with the table's words already found (:func:`table_words`)."""
        counts = self._by.setdefault(annotator, _Annotator())
        counts.think_words.append(think.counts())
        counts.answer_words.append(answer.counts())
        counts.truncated += _count(table, "finish_reason", "length")
        counts.forced += _count(table, "forced_answer", True)
        counts.unclosed += _count(table, "think_closed", False)
        markers = think.occurrences(_MARKERS)
        counts.markers += int(markers.sum())
        counts.with_marker += int((markers > 0).sum())
        repeated = think.repeated_shares(REPEAT_N)
        counts.repeated.append(repeated[~np.isnan(repeated)])
        counts.openings.update(opening for opening in think.first_words(OPENING_WORDS) if opening)
        overlap = think.shared_shares(answer)
        counts.overlap.append(overlap[~np.isnan(overlap)])
        counts.bands.append(_SCHEME.band_keys(think.signatures(_SCHEME)))
        self._sample(counts, table)

    @staticmethod
    def _sample(counts: _Annotator, table: pa.Table) -> None:
        """Keep the :data:`SAMPLE` traces whose image ids hash lowest (whatever the order they come in):
        the heap holds their negated keys, ``counts.sampled`` their think, wnid and label verdict."""
        heap, entered = counts.sample, {}
        for index, image_id in enumerate(table["image_id"].to_pylist()):
            key = int.from_bytes(hashlib.sha256(image_id.encode()).digest(), "big")
            if len(heap) < SAMPLE:
                heapq.heappush(heap, -key)
            elif -key > heap[0]:
                dropped = -heapq.heapreplace(heap, -key)
                counts.sampled.pop(dropped, None)
                entered.pop(dropped, None)
            else:
                continue
            entered[key] = index
        if entered:
            rows = table.take(list(entered.values()))
            names = [name for name in ("think", "wnid", "label_verdict") if name in rows.column_names]
            columns = [rows[name].to_pylist() for name in names] + [[""] * len(entered)] * (3 - len(names))
            for key, *row in zip(entered, *columns, strict=True):
                counts.sampled[key] = (*row,)

    def result(self, tokens: dict[str, list[int]]) -> dict:
        """The measures per annotator (those of ``tokens`` first); ``tokens``: each annotator's token
        counts (Table 1's)."""
        return {
            annotator: self._result(self._by.get(annotator, _Annotator()), tokens.get(annotator, []))
            for annotator in dict.fromkeys([*tokens, *self._by])
        }

    @staticmethod
    def _result(counts: _Annotator, tokens: list[int]) -> dict:
        think_words = np.concatenate([np.zeros(0, np.int64), *counts.think_words])
        samples, words = len(think_words), int(think_words.sum())
        share = (lambda k: k / samples) if samples else (lambda k: 0.0)
        opening, top = counts.openings.most_common(1)[0] if counts.openings else ("", 0)
        sampled = [counts.sampled[key] for key in sorted(counts.sampled)]  # by the key, lowest first
        sample = Words.of([think for think, _, _ in sampled])
        verified = [(think, wnid) for think, wnid, verdict in sampled if verdict in CORRECT_KINDS]
        named = label_hits(*zip(*verified, strict=True)) if verified else np.zeros(0, bool)
        repeated, overlap = (
            np.concatenate([np.zeros(0), *parts]) for parts in (counts.repeated, counts.overlap)
        )
        bands = np.concatenate([np.zeros((0, LSH_BANDS), np.uint64), *counts.bands])
        return {
            "samples": samples,
            "tokens": quantiles(tokens),
            "think_words": quantiles(think_words),
            "answer_words": quantiles(np.concatenate([np.zeros(0, np.int64), *counts.answer_words])),
            "truncated_share": share(counts.truncated),
            "forced_share": share(counts.forced),
            "unclosed_share": share(counts.unclosed),
            "reflections_per_1000_words": 1000 * counts.markers / words if words else 0.0,
            "reflection_share": share(counts.with_marker),
            "repeated_4gram_share": float(np.mean(repeated)) if len(repeated) else 0.0,
            "template_share": share(top),
            "template_opening": opening,
            "distinct_1": distinct_n(sample, 1),
            "distinct_2": distinct_n(sample, 2),
            "self_bleu": self_bleu(sample.split(min(SELF_BLEU_SAMPLE, len(sample)))[0]),
            "sample": len(sample),
            "self_bleu_sample": min(SELF_BLEU_SAMPLE, len(sample)),
            "answer_in_think": float(np.mean(overlap)) if len(overlap) else 0.0,
            "class_in_think_share": float(np.mean(named)) if len(named) else 0.0,
            "class_in_think_sample": len(named),
            "near_duplicate_trace_share": share(int(earlier_duplicates(bands).sum())),
        }


# The card's columns: a measure (its name in stats.json and docs/release.md) and how it is shown.
CARD_COLUMNS = {
    "think_words": lambda q: f"{q['median']:,.0f} / {q['p95']:,.0f} / {q['max']:,.0f}",
    "answer_words": lambda q: f"{q['median']:,.0f} / {q['p95']:,.0f} / {q['max']:,.0f}",
    "reflections_per_1000_words": lambda v: f"{v:.1f}",
    "reflection_share": lambda v: f"{v:.0%}",
    "repeated_4gram_share": lambda v: f"{v:.1%}",
    "template_share": lambda v: f"{v:.1%}",
    "distinct_2": lambda v: f"{v:.3f}",
    "self_bleu": lambda v: f"{v:.3f}",
    "answer_in_think": lambda v: f"{v:.0%}",
    "class_in_think_share": lambda v: f"{v:.0%}",
    "near_duplicate_trace_share": lambda v: f"{v:.1%}",
}


def trace_quality_lines(stats: dict) -> list[str]:
    """The card's trace-quality table (from ``stats["trace_quality"]``; none for older stats)."""
    quality = stats.get("trace_quality")
    if not quality:
        return []
    lines = [
        "",
        "Trace quality per annotator (each measure is defined in the toolkit's docs/release.md, "
        f'"Trace quality", under the name it has here and in stats.json; word lengths are median / '
        f"p95 / max; chart: `{TRACE_QUALITY_CHART}`):",
        "",
        "| | " + " | ".join(f"`{name}`" for name in CARD_COLUMNS) + " |",
        "|---|" + "---:|" * len(CARD_COLUMNS),
    ]
    for annotator, measures in quality.items():
        cells = [show(measures[name]) for name, show in CARD_COLUMNS.items()]
        lines.append(f"| {annotator} | " + " | ".join(cells) + " |")
    return lines
