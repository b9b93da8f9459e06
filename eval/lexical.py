"""The lexical and vector metrics of :mod:`eval.metrics`: one tokenization per text, sparse counts.

The lexical metrics share one tokenization per text (sparse count matrices; ROUGE-L by
rapidfuzz's LCS on token ids; pair-fitted TF-IDF in closed form, since with smooth IDF on two
documents a shared term weighs 1 and a one-sided term 1 + ln 1.5). Pairs are scored
``chunk_size`` at a time (default ``DEFAULT_CHUNK_PAIRS``), so that a call holds one chunk's
matrices (about 90 MiB for 512 pairs of 1,500-word texts) whatever the number of pairs, with the
same scores for every chunk size. ``tfidf_cosine_corpus`` needs its corpus's document frequencies
first (:class:`DocumentFrequencies`, which a caller may fill over batches, as ``eval score`` does);
its row sums run over the terms in byte order, so that it is identical across chunk sizes and
processes. Token ids are kept between calls (an LRU of ``DEFAULT_TOKEN_CACHE`` ids,
:func:`set_token_cache`): asking for the metrics one at a time tokenizes each text once.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse
from tqdm.auto import tqdm

DEFAULT_CHUNK_PAIRS = 512  # lexical pairs scored at a time: bounds a call's memory (about 90 MiB)
DEFAULT_TOKEN_CACHE = 1 << 22  # token ids (4 bytes each) kept between calls: 16 MiB


@dataclass(frozen=True)
class Pairs:
    """Pairs as indices into their distinct texts; non-strings count as empty text."""

    texts: list[str]
    candidates: np.ndarray
    references: np.ndarray

    @classmethod
    def index(cls, candidates: Sequence[str], references: Sequence[str]) -> Pairs:
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

    def chunk(self, start: int, stop: int) -> Pairs:
        """Pairs ``start..stop-1``, as indices into their own distinct texts."""
        candidates, references = self.candidates[start:stop], self.references[start:stop]
        used, local = np.unique(np.concatenate([candidates, references]), return_inverse=True)
        return Pairs([self.texts[row] for row in used], local[: len(candidates)], local[len(candidates) :])

    @cached_property
    def blank(self) -> np.ndarray:
        """Pairs where either text is empty or whitespace only."""
        blank_text = np.array([not text.strip() for text in self.texts], dtype=bool)
        return blank_text[self.candidates] | blank_text[self.references]


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


def lexical_scores(
    names: list[str],
    pairs: Pairs,
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
                scores[name][start : start + len(chunk.candidates)] = LEXICAL_SCORERS[name](index, chunk)
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


def _rouge1(index: _LexicalIndex, pairs: Pairs) -> np.ndarray:
    predicted = index.rouge_counts[pairs.candidates]
    target = index.rouge_counts[pairs.references]
    overlap = _row_sums(predicted.minimum(target))
    precision = overlap / np.maximum(_row_sums(predicted), 1)
    recall = overlap / np.maximum(_row_sums(target), 1)
    return _fmeasure(precision, recall)


def _rouge_l(index: _LexicalIndex, pairs: Pairs) -> np.ndarray:
    from rapidfuzz import process
    from rapidfuzz.distance import LCSseq

    sequences = index.lcs_sequences
    predicted = [sequences[row] for row in pairs.candidates]
    target = [sequences[row] for row in pairs.references]
    lcs = process.cpdist(predicted, target, scorer=LCSseq.similarity, workers=-1).astype(np.float64)
    lengths = np.array([len(ids) for ids in index.rouge_ids], dtype=np.float64)
    return _fmeasure(_ratio(lcs, lengths[pairs.candidates]), _ratio(lcs, lengths[pairs.references]))


def _set_sizes(index: _LexicalIndex, pairs: Pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|A∩B|, |A|, |B| of the pairs' token sets."""
    a = index.rouge_counts[pairs.candidates]
    b = index.rouge_counts[pairs.references]
    return a.minimum(b).getnnz(axis=1), a.getnnz(axis=1), b.getnnz(axis=1)


def _jaccard(index: _LexicalIndex, pairs: Pairs) -> np.ndarray:
    shared, a, b = _set_sizes(index, pairs)
    return _ratio(shared, a + b - shared)


def _overlap(index: _LexicalIndex, pairs: Pairs) -> np.ndarray:
    shared, a, b = _set_sizes(index, pairs)
    return _ratio(shared, np.minimum(a, b))


def _pair_fitted_cosine(index: _LexicalIndex, pairs: Pairs, one_sided_weight: float) -> np.ndarray:
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


def _tf_cosine(index: _LexicalIndex, pairs: Pairs) -> np.ndarray:
    return _pair_fitted_cosine(index, pairs, 1.0)


def _tfidf_cosine(index: _LexicalIndex, pairs: Pairs) -> np.ndarray:
    return _pair_fitted_cosine(index, pairs, ONE_SIDED_IDF)


def _tfidf_cosine_corpus(index: _LexicalIndex, pairs: Pairs) -> np.ndarray:
    weighted = index.corpus_weighted
    x, y = weighted[pairs.candidates], weighted[pairs.references]
    norms = np.sqrt(_row_sums(x.multiply(x)) * _row_sums(y.multiply(y)))
    return np.clip(_ratio(_row_sums(x.multiply(y)), norms), 0.0, 1.0)


LEXICAL_SCORERS = {
    "rouge1": _rouge1,
    "rougeL": _rouge_l,
    "jaccard": _jaccard,
    "overlap": _overlap,
    "tf_cosine": _tf_cosine,
    "tfidf_cosine": _tfidf_cosine,
    "tfidf_cosine_corpus": _tfidf_cosine_corpus,
}
