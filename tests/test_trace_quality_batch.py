"""The trace report's per-table (vectorised) measures equal their per-trace definitions, and its
MinHash and LSH are datasketch's."""

import hashlib
import random
import string

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash, MinHashLSH

from release import trace_words
from release.trace_quality import (
    _SCHEME,
    LSH_BANDS,
    LSH_ROWS,
    MINHASH_PERMUTATIONS,
    NEAR_DUPLICATE_JACCARD,
    REFLECTION_MARKERS,
)
from release.trace_words import Words, earlier_duplicates, shingle_hashes, words


def _letters(number: int) -> str:
    word = ""
    while True:
        number, digit = divmod(number, 26)
        word += string.ascii_lowercase[digit]
        if not number:
            return word


def _traces(rng: random.Random) -> list[str]:
    vocabulary = ["wait", "the", "bird", "a", "red", "wing", "hmm", "finch", "so", "it", "let", "me", "check"]
    texts = ["", "...", "one", "two words", "three words here", "four words are here"]
    texts += [" ".join(rng.choices(vocabulary, k=rng.randint(0, 60))) for _ in range(40)]
    texts += [texts[-1], texts[-1].upper() + " (Again!)", "İx Kelvin wait wait", "Wait, WAIT: hmm…"]
    rng.shuffle(texts)
    return texts


# The per-trace definitions (docs/release.md, "Trace quality"), on a trace's words.


def _repeated(tokens: list[str], n: int = 4) -> float:
    grams = list(zip(*(tokens[i:] for i in range(n)), strict=False))
    return 1 - len(set(grams)) / len(grams) if grams else np.nan


def _reflections(tokens: list[str]) -> int:
    return sum(
        tokens[i : i + len(marker.split())] == marker.split()
        for marker in REFLECTION_MARKERS
        for i in range(len(tokens))
    )


def _overlap(think: list[str], answer: list[str]) -> float:
    return len(set(answer) & set(think)) / len(set(answer)) if answer else np.nan


def _same(got: np.ndarray, expected: list[float]) -> bool:
    return np.allclose(got, np.asarray(expected, float), rtol=0, atol=0, equal_nan=True)


def test_words_of_a_column_in_every_arrow_layout():
    rng = random.Random(4)
    alphabet = [*"abcXYZ  ,.-'\n0é€İK", "\u212a", "ß", "ﬁ", "Ǆ"]
    for _ in range(300):
        texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 12))) for _ in range(rng.randint(0, 6))]
        for column in (
            pa.array(texts, pa.string()),
            pa.array(texts, pa.large_string()),
            pa.chunked_array([pa.array(texts[:2], pa.string()), pa.array(texts[2:], pa.string())]),
            pa.array(["zz", *texts], pa.string())[1:],  # an offset into the buffers
            texts,
        ):
            table = Words.of(column)
            assert [table.tokens(i) for i in range(len(texts))] == [words(t) for t in texts]
    assert Words.of(pa.array(["a", None, "b"])).counts().tolist() == [1, 0, 1]


def test_table_measures_are_the_per_trace_definitions():
    texts = _traces(random.Random(0))
    answers = [
        " ".join(random.Random(i).choices(["a", "bird", "finch", "x", "red"], k=i % 4))
        for i in range(len(texts))
    ]
    thinks, replies = Words.of(texts + answers).split(len(texts))
    tokens, answer_tokens = [words(t) for t in texts], [words(a) for a in answers]
    assert thinks.counts().tolist() == [len(t) for t in tokens]
    assert replies.counts().tolist() == [len(a) for a in answer_tokens]
    assert _same(thinks.repeated_shares(4), [_repeated(t) for t in tokens])
    markers = [marker.split() for marker in REFLECTION_MARKERS]
    assert thinks.occurrences(markers).tolist() == [_reflections(t) for t in tokens]
    assert _same(
        thinks.shared_shares(replies), [_overlap(t, a) for t, a in zip(tokens, answer_tokens, strict=True)]
    )
    assert thinks.first_words(5) == [" ".join(t[:5]) if len(t) >= 5 else None for t in tokens]


def test_table_measures_in_chunks_and_with_a_huge_vocabulary(monkeypatch):
    texts = _traces(random.Random(1))
    tokens = [words(t) for t in texts]
    monkeypatch.setattr(trace_words, "_SORT_CELLS", 7)  # texts sorted a few at a time
    monkeypatch.setattr(trace_words, "_PRESENCE_CELLS", 5)
    thinks, answers = Words.of(texts + texts[::-1]).split(len(texts))
    assert _same(thinks.repeated_shares(4), [_repeated(t) for t in tokens])
    assert _same(
        thinks.shared_shares(answers), [_overlap(t, a) for t, a in zip(tokens, tokens[::-1], strict=True)]
    )
    huge = " ".join(_letters(i) for i in range(70_000))  # 70,000**4 codes overflow 64 bits: made dense
    texts = [huge + " " + huge[:5000], "a b c d a b c d", ""]
    assert _same(Words.of(texts).repeated_shares(4), [_repeated(words(t)) for t in texts])


def _reference(tokens: list[str]) -> np.ndarray:
    signature = MinHash(num_perm=MINHASH_PERMUTATIONS, hashfunc=int)  # datasketch's affine32, seed 1
    signature.update_batch(shingle_hashes(tokens).tolist())
    return signature.hashvalues


def test_table_signatures_are_datasketch_minhashes_of_each_trace(monkeypatch):
    texts = _traces(random.Random(0))
    expected = np.stack([_reference(words(text)) for text in texts])[:, : LSH_BANDS * LSH_ROWS]
    assert np.array_equal(Words.of(texts).signatures(_SCHEME), expected)
    monkeypatch.setattr(trace_words, "_SHINGLE_CHUNK", 7)  # traces split over many chunks
    assert np.array_equal(Words.of(texts).signatures(_SCHEME), expected)
    assert (expected != _SCHEME.empty).any(axis=1).sum() == sum(bool(words(t)) for t in texts)


def test_near_duplicates_are_what_datasketchs_lsh_index_returns():
    lsh = MinHashLSH(NEAR_DUPLICATE_JACCARD, MINHASH_PERMUTATIONS)
    assert (lsh.b, lsh.r) == (LSH_BANDS, LSH_ROWS)
    rng = random.Random(2)
    vocabulary = [_letters(i) for i in range(3000)]
    base = [rng.choices(vocabulary, k=200) for _ in range(30)]
    texts = []
    for _ in range(300):  # copies of a few traces with 0 to 40 words changed: near the threshold too
        tokens = list(rng.choice(base))
        for _ in range(rng.choice([0, 2, 5, 10, 20, 40])):
            tokens[rng.randrange(len(tokens))] = rng.choice(vocabulary)
        texts.append(" ".join(tokens))
    expected = []
    for key, text in enumerate(texts):
        signature = MinHash(num_perm=MINHASH_PERMUTATIONS, hashfunc=int)
        signature.update_batch(shingle_hashes(words(text)).tolist())
        expected.append(bool(lsh.query(signature)))
        lsh.insert(key, signature)
    found = earlier_duplicates(_SCHEME.band_keys(Words.of(texts).signatures(_SCHEME)))
    assert 0 < sum(expected) < len(texts) and found.tolist() == expected


def test_tables_of_one_release_give_the_report_of_the_whole(monkeypatch):
    """The sample, near-duplicates across tables, openings: the same whatever the tables' cuts."""
    from release.trace_quality import TraceQuality

    rng = random.Random(3)
    texts = _traces(rng) * 2
    rows = [
        {
            "image_id": hashlib.sha256(str(i).encode()).hexdigest(),
            "wnid": "n01531178",
            "think": t,
            "answer": t[:9],
        }
        for i, t in enumerate(texts)
    ]
    results = []
    for size in (len(rows), 7, 1):
        quality = TraceQuality(["glm"])
        for start in range(0, len(rows), size):
            quality.add("glm", pa.Table.from_pylist(rows[start : start + size]))
        results.append(quality.result({})["glm"])
    assert results[0] == results[1] == results[2]
    assert results[0]["near_duplicate_trace_share"] > 0


@pytest.mark.parametrize("seed", [5, 6])
def test_earlier_duplicates_look_only_back(seed):
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 4, (40, LSH_BANDS)).astype(np.uint64)
    expected = [any((keys[:i, b] == keys[i, b]).any() for b in range(LSH_BANDS)) for i in range(len(keys))]
    assert earlier_duplicates(keys).tolist() == expected
