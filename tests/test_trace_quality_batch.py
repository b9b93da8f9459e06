"""The trace report's per-table (vectorised) measures equal their per-trace definitions."""

import random
import string

import numpy as np
from datasketch import MinHash

from release.trace_quality import (
    _PERMUTATIONS,
    MINHASH_PERMUTATIONS,
    _Words,
    repeated_share,
    shingle_hashes,
    words,
)


def _letters(number: int) -> str:
    word = ""
    while True:
        number, digit = divmod(number, 26)
        word += string.ascii_lowercase[digit]
        if not number:
            return word


def _traces(rng: random.Random) -> list[str]:
    vocabulary = ["wait", "the", "bird", "a", "red", "wing", "hmm", "finch", "so", "it"]
    texts = ["", "...", "one", "two words", "three words here", "four words are here"]
    texts += [" ".join(rng.choices(vocabulary, k=rng.randint(0, 60))) for _ in range(40)]
    texts += [texts[-1], texts[-1].upper() + " (Again!)", "İx Kelvin wait wait"]
    rng.shuffle(texts)
    return texts


def _reference(tokens: list[str]) -> np.ndarray:
    signature = MinHash(
        num_perm=MINHASH_PERMUTATIONS,
        permutations=_PERMUTATIONS.permutations,
        scheme=_PERMUTATIONS.scheme,
        hashfunc=int,
    )
    signature.update_batch(shingle_hashes(tokens).tolist())
    return signature.hashvalues


def test_table_signatures_are_datasketch_minhashes_of_each_trace():
    texts = _traces(random.Random(0))
    table = _Words.of(texts)
    assert table.tokens == [words(text) for text in texts]
    expected = np.stack([_reference(words(text)) for text in texts])
    assert np.array_equal(table.signatures(), expected)
    assert (expected != _PERMUTATIONS.hashvalues).any(axis=1).sum() == sum(bool(words(t)) for t in texts)


def test_table_signatures_across_permutation_chunks(monkeypatch):
    from release import trace_quality

    texts = _traces(random.Random(1))
    whole = _Words.of(texts).signatures()
    monkeypatch.setattr(trace_quality, "_SHINGLE_CHUNK", 7)  # traces split over many chunks
    assert np.array_equal(_Words.of(texts).signatures(), whole)


def test_table_repeated_shares_with_small_and_huge_vocabularies():
    texts = _traces(random.Random(2))
    assert _Words.of(texts).repeated_shares() == [repeated_share(words(t)) for t in texts]
    huge = " ".join(_letters(i) for i in range(70_000))  # 70,000**4 codes overflow 64 bits
    texts = [huge + " " + huge[:5000], "a b c d a b c d"]
    assert len(_Words.of(texts).vocabulary) >= 2**16
    assert _Words.of(texts).repeated_shares() == [repeated_share(words(t)) for t in texts]


def test_table_repeated_shares_when_traces_share_64_bits_in_groups():
    vocabulary = [_letters(i) for i in range(40_000)]  # 40,000**4: 7 traces' codes fit 64 bits together
    rng = random.Random(3)
    texts = [" ".join(rng.choices(vocabulary[:50], k=30) + vocabulary[i::20][:3000]) for i in range(20)]
    table = _Words.of(texts)
    assert 2**64 // len(table.vocabulary) ** 4 < len(texts) and len(table.vocabulary) < 2**16
    assert table.repeated_shares() == [repeated_share(words(t)) for t in texts]
