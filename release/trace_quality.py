"""What a release's reasoning traces are like, per annotator: cheap CPU measures beyond Tables 1-2.

Each measure is defined once, in ``docs/release.md`` ("Trace quality"), under the name it has in
``stats.json`` (``trace_quality.<annotator>.<name>``) and in the card. Words are the vocabulary
figure's: lowercase ``[a-z]+`` runs (:mod:`release.stats`). :class:`TraceQuality` is fed the same
per-annotator tables as :class:`release.stats.ReleaseStats`, in release order, and keeps per trace
only a few integers (lengths) plus per-measure counters, a fixed-size sample of traces (the
measures too costly for every trace: diversity, the class named in the think) and one MinHash LSH
index per annotator (``datasketch``, about 1.3 KiB per trace) for near-duplicate traces.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import itertools
import logging
import math
import re
import threading
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from datasketch import LeanMinHash, MinHash, MinHashLSH

from common.classes import imagenet21k_classes
from generation.verdicts.labels import CORRECT_KINDS, label_hits

logger = logging.getLogger(__name__)

WORD = re.compile(r"[a-z]+")
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
SHINGLE_WORDS = 5  # near-duplicate traces: MinHash over word 5-grams ...
MINHASH_PERMUTATIONS = 64
NEAR_DUPLICATE_JACCARD = 0.8  # ... estimated Jaccard similarity at least this
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


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(tokens[i:] for i in range(n)), strict=False))


def reflection_count(tokens: list[str]) -> int:
    """Occurrences of :data:`REFLECTION_MARKERS` in a trace's words."""
    text = f" {' '.join(tokens)} "
    return sum(text.count(f" {marker} ") for marker in REFLECTION_MARKERS)


def repeated_share(tokens: list[str], n: int = REPEAT_N) -> float | None:
    """The share of a trace's word n-grams that repeat an earlier one (None: fewer than n words)."""
    grams = ngrams(tokens, n)
    return 1 - len(set(grams)) / len(grams) if grams else None


def answer_in_think(think: list[str], answer: list[str]) -> float | None:
    """The share of the answer's distinct words that occur in the think (None: an answer without words)."""
    wanted = set(answer)
    return len(wanted & set(think)) / len(wanted) if wanted else None


def distinct_n(texts: list[list[str]], n: int) -> float:
    """Distinct n-grams over all n-grams of ``texts`` (0.0 without any)."""
    grams = [gram for tokens in texts for gram in ngrams(tokens, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: list[list[str]]) -> float:
    """The mean over ``texts`` (those with a word) of each one's BLEU-4 against all the others as
    references, as ``nltk``'s ``sentence_bleu`` gives it (uniform weights, smoothing method 1: a zero
    precision counts :data:`BLEU_EPSILON` matches; no unigram in common scores 0), computed in one
    pass. nltk counts every reference's n-grams again for every hypothesis (minutes for 100 traces of
    1,000 words) and takes seconds to import; here each n-gram's two largest counts over all texts,
    and which text holds the largest, give every hypothesis's clipped counts against the others at
    once. ``tests/test_trace_quality.py`` checks it against ``sentence_bleu``."""
    usable = [tokens for tokens in texts if tokens]
    if len(usable) < 2:
        return 0.0
    counts = [[Counter(ngrams(tokens, n)) for n in BLEU_ORDERS] for tokens in usable]
    tops = [_top_two([text[k] for text in counts]) for k in range(len(BLEU_ORDERS))]
    lengths = [len(tokens) for tokens in usable]
    scores = []
    for index, (length, text) in enumerate(zip(lengths, counts, strict=True)):
        clipped = [
            sum(
                min(count, second[gram] if holder[gram] == index else first[gram])
                for gram, count in own.items()
            )
            for own, (first, holder, second) in zip(text, tops, strict=True)
        ]
        if not clipped[0]:
            scores.append(0.0)
            continue
        precisions = [
            (c or BLEU_EPSILON) / max(1, sum(own.values())) for c, own in zip(clipped, text, strict=True)
        ]
        others = lengths[:index] + lengths[index + 1 :]
        closest = min(others, key=lambda other: (abs(other - length), other))
        penalty = 1.0 if length > closest else math.exp(1 - closest / length)
        scores.append(penalty * math.exp(math.fsum(math.log(p) / len(BLEU_ORDERS) for p in precisions)))
    return float(np.mean(scores))


def _top_two(counters: list[Counter]) -> tuple[dict, dict, Counter]:
    """Per n-gram: its largest count over ``counters``, the first counter holding it, and the second
    largest count (equal to the largest when two counters share it)."""
    first: dict = {}
    holder: dict = {}
    second: Counter = Counter()
    for index, counter in enumerate(counters):
        for gram, count in counter.items():
            best = first.get(gram, 0)
            if count > best:
                second[gram], first[gram], holder[gram] = best, count, index
            elif count > second[gram]:
                second[gram] = count
    return first, holder, second


_PERMUTATIONS = MinHash(num_perm=MINHASH_PERMUTATIONS)  # drawn once (seed 1), shared by every MinHash
_SHINGLE_BASE = np.uint64(1_000_003)
_LOW_32 = np.uint64(0xFFFFFFFF)
_SHINGLE_CHUNK = 1 << 16  # shingles permuted at once (64 permutations: 16 MiB of uint32)


@dataclass
class _Words:
    """A table's traces as words: the words per trace, and the same flattened to ids (``ids[offsets[i]:
    offsets[i + 1]]`` is trace i; equal ids are equal words) with each id's word (``vocabulary``)."""

    tokens: list[list[str]]
    ids: np.ndarray
    offsets: np.ndarray
    vocabulary: list[str]

    @classmethod
    def of(cls, texts: list[str]) -> _Words:
        tokens = [words(text) for text in texts]
        offsets = np.zeros(len(tokens) + 1, np.int64)
        np.cumsum([len(t) for t in tokens], out=offsets[1:])
        encoded = pa.array(list(itertools.chain.from_iterable(tokens)), pa.string()).dictionary_encode()
        ids = encoded.indices.to_numpy(zero_copy_only=False).astype(np.uint64)
        return cls(tokens, ids, offsets, encoded.dictionary.to_pylist())

    def repeated_shares(self, n: int = REPEAT_N) -> list[float | None]:
        """:func:`repeated_share` of every trace, counting n-grams as integer codes where they fit 64 bits:
        the codes of a group of traces, each offset by its trace, are sorted at once."""
        size = len(self.vocabulary)
        if size**n >= 2**64:
            return [repeated_share(tokens, n) for tokens in self.tokens]
        codes = self.ids[: max(len(self.ids) - n + 1, 0)]
        for k in range(1, n):
            codes = codes * np.uint64(size) + self.ids[k : k + len(codes)]
        lengths = np.maximum(np.diff(self.offsets) - n + 1, 0)  # each trace's n-grams
        trace = np.repeat(np.arange(len(lengths)), lengths)
        starts = np.repeat(self.offsets[:-1], lengths)
        grams = codes[starts + np.arange(len(trace)) - np.repeat(np.cumsum(lengths) - lengths, lengths)]
        group = (2**64 - 1) // size**n  # traces whose offset codes fit 64 bits together
        distinct = np.zeros(len(lengths), np.int64)
        for first in range(0, len(lengths), group):
            low, high = np.searchsorted(trace, [first, first + group])
            keys = np.sort((trace[low:high] - first).astype(np.uint64) * np.uint64(size**n) + grams[low:high])
            firsts = np.ones(len(keys), bool)  # the first of its code in its trace
            firsts[1:] = keys[1:] != keys[:-1]
            distinct += np.bincount(trace[low:high][firsts], minlength=len(lengths))  # traces: sorted too
        return [1 - d / g if g else None for d, g in zip(distinct.tolist(), lengths.tolist(), strict=True)]

    def signatures(self) -> np.ndarray:
        """Each trace's MinHash values, one row per trace: what ``datasketch.MinHash.update_batch`` gives
        a trace's :func:`shingle_hashes` under :data:`_PERMUTATIONS` (its "affine32" scheme), computed
        for the whole table at once (``tests/test_trace_quality_batch.py`` checks them against it)."""
        hashes, starts = self._shingle_hashes()
        ends = np.append(starts[1:], len(hashes))
        mixed = _fmix32(hashes.astype(np.uint32))
        a, b = _PERMUTATIONS.permutations
        signatures = np.repeat(_PERMUTATIONS.hashvalues[None, :], len(starts), axis=0)  # no shingle: empty
        filled = np.flatnonzero(ends > starts)
        splits = np.searchsorted(ends[filled], np.arange(_SHINGLE_CHUNK, len(mixed), _SHINGLE_CHUNK))
        for traces in np.split(filled, splits):
            if len(traces):
                low, high = starts[traces[0]], ends[traces[-1]]
                permuted = np.multiply.outer(a, mixed[low:high])  # uint32: wraps, as the scheme means
                permuted += b[:, None]  # one row per permutation: reduceat runs along contiguous memory
                signatures[traces] = np.minimum.reduceat(permuted, starts[traces] - low, axis=1).T
        return signatures

    def _shingle_hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`shingle_hashes` of every trace, concatenated (repeats kept: a MinHash is a minimum), and
        where each trace starts in them."""
        word_hashes = np.fromiter(
            (zlib.crc32(word.encode()) for word in self.vocabulary), np.uint64, len(self.vocabulary)
        )[self.ids.astype(np.intp)]
        count = max(len(word_hashes) - SHINGLE_WORDS + 1, 0)
        full = word_hashes[:count]  # CRC-32s: below 2**32 already
        for k in range(1, SHINGLE_WORDS):
            full = (full * _SHINGLE_BASE + word_hashes[k : k + count]) & _LOW_32
        parts, starts, at = [], [], 0
        for start, end in itertools.pairwise(self.offsets.tolist()):
            starts.append(at)
            if end - start >= SHINGLE_WORDS:
                parts.append(full[start : end - SHINGLE_WORDS + 1])
            elif end > start:
                parts.append(_shingle_hashes(word_hashes[start:end]))
            at += len(parts[-1]) if end > start else 0
        hashes = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        return hashes, np.asarray(starts, np.int64)


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch's "affine32" scheme mixes a value before permuting."""
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


def _shingle_hashes(word_hashes: np.ndarray) -> np.ndarray:
    count = max(len(word_hashes) - SHINGLE_WORDS + 1, 1 if len(word_hashes) else 0)
    hashes = np.zeros(count, np.uint64)
    for k in range(min(SHINGLE_WORDS, len(word_hashes))):
        hashes = (hashes * _SHINGLE_BASE + word_hashes[k : k + count]) & _LOW_32
    return hashes


def shingle_hashes(tokens: list[str]) -> np.ndarray:
    """32-bit hashes of a trace's distinct word :data:`SHINGLE_WORDS`-grams (fewer words: of all of them):
    each word's CRC-32, combined polynomially, in numpy (deterministic across processes)."""
    ids = np.fromiter((zlib.crc32(word.encode()) for word in tokens), dtype=np.uint64, count=len(tokens))
    return np.unique(_shingle_hashes(ids))


def _band_hash(band: bytes) -> bytes:
    """The LSH index's key for a band of a MinHash: 8 bytes instead of the band's 88 (memory)."""
    return hashlib.blake2b(band, digest_size=8).digest()


def quantiles(values: list[int]) -> dict[str, float]:
    if not values:
        return dict.fromkeys(QUANTILES, 0)
    array = np.asarray(values)
    return {name: float(np.percentile(array, q, method="lower")) for name, q in QUANTILES.items()}


@dataclass
class _Annotator:
    think_words: list[int] = field(default_factory=list)
    answer_words: list[int] = field(default_factory=list)
    truncated: int = 0
    forced: int = 0
    unclosed: int = 0
    words: int = 0
    markers: int = 0
    with_marker: int = 0
    repeated: list[float] = field(default_factory=list)
    openings: Counter = field(default_factory=Counter)
    overlap: list[float] = field(default_factory=list)
    sample: list[tuple[bytes, str, str, str]] = field(
        default_factory=list
    )  # heap of (-key, think, wnid, verdict)
    index: MinHashLSH = field(
        default_factory=lambda: MinHashLSH(NEAR_DUPLICATE_JACCARD, MINHASH_PERMUTATIONS, hashfunc=_band_hash)
    )
    near_duplicates: int = 0


def _prepare_class_check() -> None:
    """Build the label verifier's automaton (the class check's, a second or two) while the traces come."""
    try:
        label_hits(["warm-up"], [imagenet21k_classes().wnids[0]])
    except Exception:
        logger.debug("preparing the class check failed; the report will say why", exc_info=True)


class TraceQuality:
    """The trace-quality measures of each annotator's rows (columns :data:`COLUMNS`)."""

    def __init__(self, annotators) -> None:
        self._by = {annotator: _Annotator() for annotator in annotators}
        threading.Thread(target=_prepare_class_check, name="prepare-class-check", daemon=True).start()

    def add(self, annotator: str, table: pa.Table) -> None:
        counts = self._by[annotator]
        columns = table.select([c for c in COLUMNS if c in table.column_names]).to_pydict()
        n = table.num_rows
        thinks, answers, wnids = columns["think"], columns["answer"], columns["wnid"]
        closed = columns.get("think_closed", [True] * n)
        finish = columns.get("finish_reason", [""] * n)
        forced = columns.get("forced_answer", [False] * n)
        verdicts = columns.get("label_verdict", [""] * n)
        think_words, answer_words = _Words.of(thinks), [words(answer) for answer in answers]
        repeated = think_words.repeated_shares()
        signatures = think_words.signatures()
        for i in range(n):
            think, answer = think_words.tokens[i], answer_words[i]
            counts.think_words.append(len(think))
            counts.answer_words.append(len(answer))
            counts.truncated += finish[i] == "length"
            counts.forced += bool(forced[i])
            counts.unclosed += not closed[i]
            markers = reflection_count(think)
            counts.words += len(think)
            counts.markers += markers
            counts.with_marker += markers > 0
            if repeated[i] is not None:
                counts.repeated.append(repeated[i])
            if len(think) >= OPENING_WORDS:
                counts.openings[" ".join(think[:OPENING_WORDS])] += 1
            if (share := answer_in_think(think, answer)) is not None:
                counts.overlap.append(share)
            self._sample(counts, columns["image_id"][i], (thinks[i], wnids[i], verdicts[i]))
            signature = LeanMinHash(
                seed=_PERMUTATIONS.seed, hashvalues=signatures[i], scheme=_PERMUTATIONS.scheme
            )
            if counts.index.query(signature):
                counts.near_duplicates += 1
            counts.index.insert(len(counts.think_words), signature)

    @staticmethod
    def _sample(counts: _Annotator, image_id: str, trace: tuple[str, str, str]) -> None:
        """Keep the :data:`SAMPLE` traces whose image ids hash lowest (whatever the order they come in)."""
        key = hashlib.sha256(image_id.encode()).digest()
        item = (bytes(255 - b for b in key), *trace)  # a max-heap on the key
        if len(counts.sample) < SAMPLE:
            heapq.heappush(counts.sample, item)
        elif item > counts.sample[0]:
            heapq.heapreplace(counts.sample, item)

    def result(self, tokens: dict[str, list[int]]) -> dict:
        """The measures per annotator; ``tokens``: each annotator's token counts (Table 1's)."""
        return {
            annotator: self._result(counts, tokens.get(annotator, []))
            for annotator, counts in self._by.items()
        }

    @staticmethod
    def _result(counts: _Annotator, tokens: list[int]) -> dict:
        samples = len(counts.think_words)
        share = (lambda k: k / samples) if samples else (lambda k: 0.0)
        opening, top = counts.openings.most_common(1)[0] if counts.openings else ("", 0)
        sampled = sorted(counts.sample, reverse=True)  # by the key, lowest first
        sample = [words(think) for _, think, _, _ in sampled]
        verified = [(think, wnid) for _, think, wnid, verdict in sampled if verdict in CORRECT_KINDS]
        named = label_hits(*zip(*verified, strict=True)) if verified else np.zeros(0, bool)
        return {
            "samples": samples,
            "tokens": quantiles(tokens),
            "think_words": quantiles(counts.think_words),
            "answer_words": quantiles(counts.answer_words),
            "truncated_share": share(counts.truncated),
            "forced_share": share(counts.forced),
            "unclosed_share": share(counts.unclosed),
            "reflections_per_1000_words": 1000 * counts.markers / counts.words if counts.words else 0.0,
            "reflection_share": share(counts.with_marker),
            "repeated_4gram_share": float(np.mean(counts.repeated)) if counts.repeated else 0.0,
            "template_share": share(top),
            "template_opening": opening,
            "distinct_1": distinct_n(sample, 1),
            "distinct_2": distinct_n(sample, 2),
            "self_bleu": self_bleu(sample[:SELF_BLEU_SAMPLE]),
            "sample": len(sample),
            "self_bleu_sample": len(sample[:SELF_BLEU_SAMPLE]),
            "answer_in_think": float(np.mean(counts.overlap)) if counts.overlap else 0.0,
            "class_in_think_share": float(np.mean(named)) if len(named) else 0.0,
            "class_in_think_sample": len(named),
            "near_duplicate_trace_share": share(counts.near_duplicates),
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


def trace_quality_chart(quality: dict) -> bytes:
    """A PNG: think length quantiles (words) and the rate measures, one colour per annotator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    annotators = list(quality)
    figure, (lengths, rates) = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / max(len(annotators), 1)
    points = list(QUANTILES)
    rate_names = [
        "reflection_share",
        "repeated_4gram_share",
        "template_share",
        "answer_in_think",
        "class_in_think_share",
        "near_duplicate_trace_share",
        "forced_share",
    ]
    for index, annotator in enumerate(annotators):
        measures = quality[annotator]
        offsets = np.arange(len(points)) + index * width
        lengths.bar(offsets, [measures["think_words"][p] for p in points], width=width, label=annotator)
        offsets = np.arange(len(rate_names)) + index * width
        rates.bar(offsets, [measures[name] for name in rate_names], width=width, label=annotator)
    lengths.set_xticks(np.arange(len(points)) + width * (len(annotators) - 1) / 2, points)
    lengths.set_ylabel("words")
    lengths.set_title("think length")
    rates.set_xticks(
        np.arange(len(rate_names)) + width * (len(annotators) - 1) / 2,
        [name.replace("_share", "").replace("_", " ") for name in rate_names],
        rotation=30,
        ha="right",
    )
    rates.set_ylim(0, 1)
    rates.set_title("shares of traces (answer in think: of answer words)")
    lengths.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
