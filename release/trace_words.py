"""Texts as words, a table at a time, for the trace report (:mod:`release.trace_quality`), in numpy.

Words are lowercase ``[a-z]+`` runs of the lower-cased text (docs/release.md, "Trace quality").
:meth:`Words.of` finds them in an Arrow string column's UTF-8 bytes at once: ASCII capitals are
lowered, every other byte but a-z separates words (each byte of a non-ASCII character is above 127),
and the words become ids of one dictionary. A text holding one of the two characters outside ASCII
whose lower case holds an ASCII letter (U+0130, the Kelvin sign) goes through the regular expression
instead. The measures per text are then array operations over the ids. MinHash signatures follow
``datasketch`` 2's "affine32" scheme and its LSH banding, computed here for whole tables (datasketch
itself would cost a second of imports and a Python call per trace); ``tests/test_trace_quality_batch.py``
checks both against datasketch.
"""

from __future__ import annotations

import functools
import re
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

WORD = re.compile(r"[a-z]+")
# Byte -> its lower-case ASCII letter, or 0 for a byte that is none.
_LETTERS = bytes(c + 32 if 65 <= c <= 90 else c if 97 <= c <= 122 else 0 for c in range(256))
_ODD = ("\u0130", "\u212a")  # "İ".lower() is "i" and a combining dot; the Kelvin sign's is "k"
_CODES = 2**63  # n-gram codes, offset by their text, stay below
_PRESENCE_CELLS = 1 << 24
_SORT_CELLS = 1 << 21  # n-gram codes (int64) sorted at once by Words.repeated_shares
_PAD = np.iinfo(
    np.int64
).max  # above every code  # texts x vocabulary booleans held at once by Words.shared_shares
SHINGLE_WORDS = 5  # near-duplicate traces: MinHash over word 5-grams
_SHINGLE_BASE = np.uint64(1_000_003)
_LOW_32 = np.uint64(0xFFFFFFFF)
_SHINGLE_CHUNK = 1 << 13  # shingles permuted at once (55 permutations: 1.8 MiB of uint32)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _strings(texts) -> pa.Array:
    """``texts`` (an Arrow string column or a list of str) as one Arrow string array without nulls."""
    array = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(texts, pa.large_string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], array.type)
    if pa.types.is_null(array.type):
        array = array.cast(pa.string())
    return pc.fill_null(array, "") if array.null_count else array


def _bytes(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The texts' offsets (from 0) into their UTF-8 bytes, and the bytes."""
    kind = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], kind, len(array) + 1, array.offset * kind().itemsize)
    first, last = int(offsets[0]), int(offsets[-1])
    data = array.buffers()[2]
    raw = np.frombuffer(data, np.uint8)[first:last] if data is not None else np.zeros(0, np.uint8)
    return offsets.astype(np.int64) - first, raw


def _has_odd(data: np.ndarray) -> bool:
    """Whether the UTF-8 bytes hold U+0130 (C4 B0) or U+212A (E2 84 AA)."""
    ends = np.flatnonzero(data[1:] == 0xB0) + 1
    if (data[ends - 1] == 0xC4).any():
        return True
    ends = np.flatnonzero(data[2:] == 0xAA) + 2
    return bool(((data[ends - 1] == 0x84) & (data[ends - 2] == 0xE2)).any())


@dataclass
class Words:
    """Texts as word ids: text i is ``ids[bounds[i]:bounds[i + 1]]``; equal ids are equal words, and
    ``vocabulary[id]`` is the word."""

    ids: np.ndarray
    bounds: np.ndarray
    vocabulary: list[str]

    @classmethod
    def of(cls, texts) -> Words:
        array = _strings(texts)
        offsets, data = _bytes(array)
        if _has_odd(data):
            odd = pc.or_(*(pc.match_substring(array, character) for character in _ODD)).to_pylist()
            texts = [" ".join(words(t)) if o else t for t, o in zip(array.to_pylist(), odd, strict=True)]
            offsets, data = _bytes(pa.array(texts, pa.large_string()))
        lowered = np.frombuffer(data.tobytes().translate(_LETTERS), np.uint8)
        letter = lowered != 0
        begins, ends = letter.copy(), letter.copy()
        begins[1:] &= ~letter[:-1]
        ends[:-1] &= ~letter[1:]
        inner = offsets[1:-1][(offsets[1:-1] > 0) & (offsets[1:-1] < len(letter))]
        begins[inner], ends[inner - 1] = letter[inner], letter[inner - 1]  # a text's ends end its words
        starts = np.flatnonzero(begins)
        word_offsets = np.zeros(len(starts) + 1, np.int64)
        np.cumsum(np.flatnonzero(ends) + 1 - starts, out=word_offsets[1:])
        letters = pa.py_buffer(lowered[letter])
        encoded = pc.dictionary_encode(
            pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(word_offsets), letters)
        )
        ids = encoded.indices.to_numpy(zero_copy_only=False)
        return cls(ids, np.searchsorted(starts, offsets), encoded.dictionary.to_pylist())

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def split(self, at: int) -> tuple[Words, Words]:
        """The first ``at`` texts and the others, sharing the vocabulary."""
        middle = self.bounds[at]
        return (
            Words(self.ids[:middle], self.bounds[: at + 1], self.vocabulary),
            Words(self.ids[middle:], self.bounds[at:] - middle, self.vocabulary),
        )

    def counts(self) -> np.ndarray:
        return np.diff(self.bounds)

    def tokens(self, index: int) -> list[str]:
        return [self.vocabulary[i] for i in self.ids[self.bounds[index] : self.bounds[index + 1]]]

    def distinct_words(self, start: int, stop: int) -> list[str]:
        """The distinct words of texts ``start`` to ``stop`` (excluded)."""
        return [self.vocabulary[i] for i in np.unique(self.ids[self.bounds[start] : self.bounds[stop]])]

    @functools.cached_property
    def text_of_words(self) -> np.ndarray:
        """The text each word is in."""
        return np.repeat(np.arange(len(self)), self.counts())

    def _within(self, n: int) -> np.ndarray:
        """Whether the n words from each position lie in one text (positions up to ``len(ids) - n``)."""
        text = self.text_of_words
        return text[: max(len(text) - n + 1, 0)] == text[n - 1 :]

    def first_words(self, k: int) -> list[str | None]:
        """Each text's first ``k`` words joined by spaces (None: fewer words)."""
        long = np.flatnonzero(self.counts() >= k)
        firsts = self.ids[self.bounds[long][:, None] + np.arange(k)].tolist()
        openings: list[str | None] = [None] * len(self)
        for index, row in zip(long.tolist(), firsts, strict=True):
            openings[index] = " ".join(self.vocabulary[i] for i in row)
        return openings

    def occurrences(self, sequences: list[list[str]]) -> np.ndarray:
        """Per text, how many times the word sequences occur in it (each wherever it starts)."""
        index = {word: i for i, word in enumerate(self.vocabulary)}
        text = self.text_of_words
        found = np.zeros(len(self), np.int64)
        for sequence in sequences:
            count = len(self.ids) - len(sequence) + 1
            if count <= 0 or not all(word in index for word in sequence):
                continue
            match = self.ids[:count] == index[sequence[0]]
            for k, word in enumerate(sequence[1:], 1):
                match &= self.ids[k : k + count] == index[word]
            starts = np.flatnonzero(match)
            starts = starts[text[starts] == text[starts + len(sequence) - 1]]  # within one text
            found += np.bincount(text[starts], minlength=len(self))
        return found

    def shared_shares(self, other: Words) -> np.ndarray:
        """Per text, the share of ``other``'s same text's distinct words that occur in this one (NaN:
        that text has no word); both of one vocabulary (:meth:`split`)."""
        size, texts = max(len(self.vocabulary), 1), len(self)
        distinct, shared = np.zeros(texts, np.int64), np.zeros(texts, np.int64)
        own_text, other_text = self.text_of_words, other.text_of_words
        step = max(1, _PRESENCE_CELLS // size)
        for first in range(0, texts, step):
            rows = min(step, texts - first)
            present, wanted = np.zeros((rows, size), bool), np.zeros((rows, size), bool)
            low, high = self.bounds[first], self.bounds[first + rows]
            present[own_text[low:high] - first, self.ids[low:high]] = True
            low, high = other.bounds[first], other.bounds[first + rows]
            wanted[other_text[low:high] - first, other.ids[low:high]] = True
            distinct[first : first + rows] = wanted.sum(axis=1)
            shared[first : first + rows] = (wanted & present).sum(axis=1)
        return np.divide(shared, distinct, out=np.full(texts, np.nan), where=distinct > 0)

    def _codes(self, n: int) -> tuple[np.ndarray, int]:
        """The code of the n words from each position up to ``len(ids) - n`` (equal codes for equal
        words; the n words may cross texts) and a bound above the codes, below 2**63."""
        size = max(len(self.vocabulary), 1)
        codes, bound = self.ids[: max(len(self.ids) - n + 1, 0)].astype(np.int64), size
        for k in range(1, n):  # (the code of the k words, the next word) as one code, in place
            if bound * size >= _CODES:
                codes, bound = np.unique(codes, return_inverse=True)[1], max(len(codes), 1)
            codes *= size
            codes += self.ids[k : k + len(codes)]
            bound *= size
        return codes, bound

    def grams(self, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Every word n-gram inside a text, in order: its code (equal codes for equal n-grams), its
        text, and a bound the codes stay under such that ``text * bound + code`` fits 63 bits."""
        codes, bound = self._codes(n)
        if bound * max(len(self), 1) >= _CODES:
            codes, bound = np.unique(codes, return_inverse=True)[1], max(len(codes), 1)
        within = self._within(n)
        return codes[within], self.text_of_words[: len(within)][within], bound

    def repeated_shares(self, n: int) -> np.ndarray:
        """Per text, the share of its word n-grams that repeat an earlier one (NaN: under n words). Each
        text's n-gram codes are sorted on their own, as a row of a matrix of texts of similar lengths
        (padded): cheaper than sorting a table's codes at once."""
        lengths = np.maximum(self.counts() - n + 1, 0)
        codes, _ = self._codes(n)
        distinct = np.zeros(len(self), np.int64)
        order = np.argsort(lengths, kind="stable")
        ordered = lengths[order]
        first = int(np.searchsorted(ordered, 1))  # texts without an n-gram have none distinct
        while first < len(order):  # as many texts as fit _SORT_CELLS padded to the longest of them
            padded_sizes = np.arange(1, len(order) - first + 1) * ordered[first:]
            last = first + max(1, int(np.searchsorted(padded_sizes, _SORT_CELLS, side="right")))
            texts, width = order[first:last], int(ordered[last - 1])
            columns = np.arange(width)
            at = self.bounds[texts][:, None] + np.minimum(columns, lengths[texts][:, None] - 1)
            padded = np.where(columns < lengths[texts][:, None], codes[at], _PAD)  # a row per text
            padded.sort(axis=1)
            changes = (padded[:, 1:] != padded[:, :-1]) & (padded[:, 1:] != _PAD)
            distinct[texts] = changes.sum(axis=1) + (padded[:, 0] != _PAD)
            first = last
        return 1 - np.divide(distinct, lengths, out=np.full(len(self), np.nan), where=lengths > 0)

    def signatures(self, scheme: MinHashScheme) -> np.ndarray:
        """Each text's MinHash values under ``scheme`` (one row per text; an empty text keeps the empty
        values): what ``datasketch.MinHash.update_batch`` gives the text's :func:`shingle_hashes`,
        for all texts at once, one row per permutation so that the minimum runs along memory."""
        hashes, starts = self._shingle_hashes()
        ends = np.append(starts[1:], len(hashes))
        mixed = _fmix32(hashes.astype(np.uint32))
        a, b = scheme.a[:, None], scheme.b[:, None]
        signatures = np.repeat(scheme.empty[None, :], len(starts), axis=0)
        filled = np.flatnonzero(ends > starts)
        splits = np.searchsorted(ends[filled], np.arange(_SHINGLE_CHUNK, len(mixed), _SHINGLE_CHUNK))
        longest = int((ends - starts).max(initial=0))
        work = np.empty((len(scheme.a), min(len(mixed), _SHINGLE_CHUNK + longest)), np.uint32)
        for texts in np.split(filled, splits):
            if len(texts):
                low, high = starts[texts[0]], ends[texts[-1]]
                permuted = work[:, : high - low]
                np.multiply(a, mixed[None, low:high], out=permuted)  # uint32: wraps, as the scheme means
                permuted += b
                signatures[texts] = np.minimum.reduceat(permuted, starts[texts] - low, axis=1).T
        return signatures

    def _shingle_hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`shingle_hashes` of every text, concatenated (repeats kept: a MinHash is a minimum), and
        where each text starts in them."""
        word_hashes = np.fromiter(
            (zlib.crc32(word.encode()) for word in self.vocabulary), np.uint64, len(self.vocabulary)
        )[self.ids]
        count = max(len(word_hashes) - SHINGLE_WORDS + 1, 0)
        full = word_hashes[:count]  # CRC-32s: below 2**32 already
        for k in range(1, SHINGLE_WORDS):
            full = (full * _SHINGLE_BASE + word_hashes[k : k + count]) & _LOW_32
        lengths = self.counts()
        shingles = np.where(lengths >= SHINGLE_WORDS, lengths - SHINGLE_WORDS + 1, np.minimum(lengths, 1))
        starts = np.cumsum(shingles) - shingles
        hashes = np.zeros(int(shingles.sum()), np.uint64)
        long = lengths >= SHINGLE_WORDS
        hashes[np.repeat(long, shingles)] = full[self._within(SHINGLE_WORDS)]
        for text in np.flatnonzero(~long & (lengths > 0)).tolist():  # under SHINGLE_WORDS words: one
            hashes[starts[text]] = _shingle_hashes(word_hashes[self.bounds[text] : self.bounds[text + 1]])[0]
        return hashes, starts


class MinHashScheme:
    """``datasketch.MinHash(num_perm=permutations, seed=seed)``'s "affine32" permutations (h -> a * h + b
    mod 2**32 of the MurmurHash3-mixed hash, drawn as datasketch 2 draws them) and ``MinHashLSH``'s
    bands: a trace is a candidate of another when the ``rows`` values of one of ``bands`` bands are all
    equal. Only the first ``bands * rows`` permutations are kept: no other value reaches the index."""

    def __init__(self, permutations: int, bands: int, rows: int, seed: int = 1) -> None:
        generator = np.random.RandomState(seed)
        a = generator.randint(0, 1 << 31, permutations, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = generator.randint(0, 1 << 32, permutations, dtype=np.uint32)
        self.bands, self.rows = bands, rows
        self.a, self.b = a[: bands * rows], b[: bands * rows]
        self.empty = np.full(bands * rows, 2**32 - 1, np.uint32)  # no shingle

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """A 64-bit key per band of each signature (one row per signature): equal bands, equal keys."""
        keys = np.zeros((len(signatures), self.bands), np.uint64)
        for k in range(self.rows):
            keys = _fmix64(keys ^ signatures[:, k :: self.rows][:, : self.bands].astype(np.uint64))
        return keys


def earlier_duplicates(keys: np.ndarray) -> np.ndarray:
    """Per row of band keys (in order), whether an earlier row shares a key with it in some band."""
    found = np.zeros(len(keys), bool)
    for band in keys.T:
        _, first, inverse = np.unique(band, return_index=True, return_inverse=True)
        found |= first[inverse] < np.arange(len(band))
    return found


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch's "affine32" scheme mixes a value before permuting."""
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


def _fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (a bijection: distinct bands collide only through the xor chain)."""
    values = (values ^ (values >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
    values = (values ^ (values >> np.uint64(33))) * np.uint64(0xC4CEB9FE1A85EC53)
    return values ^ (values >> np.uint64(33))


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
