"""The trace-quality measures (release.trace_quality), each on hand-written traces with known values,
and their place in a built release: stats.json, the card and the chart."""

import json
import math
import random

import pyarrow as pa
import pytest

from release.build import BuildOptions, build_release
from release.trace_quality import REFLECTION_MARKERS, TraceQuality, distinct_n, quantiles, self_bleu
from release.trace_words import Words, words
from tests.fixtures.synthetic import make_record, write_manifest_tree, write_run

MARKERS = [marker.split() for marker in REFLECTION_MARKERS]


def reflections(think: str) -> int:
    return int(Words.of([think]).occurrences(MARKERS)[0])


def repeated(think: str) -> float:
    return float(Words.of([think]).repeated_shares(4)[0])


def overlap(think: str, answer: str) -> float:
    thinks, answers = Words.of([think, answer]).split(1)
    return float(thinks.shared_shares(answers)[0])


def of(texts: list[list[str]]) -> Words:
    return Words.of([" ".join(tokens) for tokens in texts])


GOLDFINCH = "n01531178"


def table(rows):
    """A per-annotator table of hand-written rows (dicts with think and answer, and optionally more)."""
    defaults = {
        "wnid": GOLDFINCH,
        "think_closed": True,
        "finish_reason": "stop",
        "forced_answer": False,
        "label_verdict": "none",
    }
    full = [
        {"image_id": f"img{i}", **defaults, **row} for i, row in enumerate(rows)
    ]  # a row may name its own
    return pa.Table.from_pylist(full)


def measure(rows, tokens=None):
    quality = TraceQuality(["glm"])
    quality.add("glm", table(rows))
    return quality.result({"glm": tokens or []})["glm"]


def test_words_are_lowercase_letter_runs():
    assert words("Wait, the bird's WING-tip (2x)") == ["wait", "the", "bird", "s", "wing", "tip", "x"]
    texts = ["Wait, the bird's WING-tip (2x)", "", "café au lait", "end", "İstanbul \u212aelvin", "ab", "cd"]
    table = Words.of(texts)  # "end" and "ab" / "cd" touch in the column's bytes: separate texts still
    assert [table.tokens(i) for i in range(len(texts))] == [words(text) for text in texts]
    assert words("İstanbul \u212aelvin") == ["i", "stanbul", "kelvin"]  # lower case makes ASCII of both


def test_lengths_are_quantiles_of_think_and_answer_words_and_tokens():
    thinks = ["one", "one two", "one two three", "a b c d", " ".join(["w"] * 100)]
    result = measure([{"think": t, "answer": "a goldfinch"} for t in thinks], tokens=[5, 9, 7, 30, 3])
    assert result["think_words"] == {"min": 1, "median": 3, "p95": 4, "p99": 4, "max": 100}
    assert result["answer_words"] == {"min": 2, "median": 2, "p95": 2, "p99": 2, "max": 2}
    assert result["tokens"] == {"min": 3, "median": 7, "p95": 9, "p99": 9, "max": 30}
    assert quantiles([]) == {"min": 0, "median": 0, "p95": 0, "p99": 0, "max": 0}


def test_truncated_forced_and_unclosed_shares():
    rows = [
        {"think": "a", "answer": "b", "finish_reason": "length", "forced_answer": True},
        {"think": "a", "answer": "b", "think_closed": False},
        {"think": "a", "answer": "b"},
        {"think": "a", "answer": "b"},
    ]
    result = measure(rows)
    assert (result["truncated_share"], result["forced_share"], result["unclosed_share"]) == (0.25, 0.25, 0.25)


def test_reflection_markers_are_whole_word_sequences():
    think = "Hmm, wait. Let me check the beak: actually it is red. On second thought, awaiting checks"
    assert reflections(think) == 5  # hmm, wait, let me check, actually, on second thought
    assert reflections("Wait, wait... let me check. Let me check again: double-check, double check") == 6
    assert reflections("let me. Check") == 1  # punctuation separates no words: "let me check"
    result = measure([{"think": think, "answer": "x"}, {"think": "A plain look at a bird", "answer": "x"}])
    total_words = len(words(think)) + 6
    assert result["reflections_per_1000_words"] == pytest.approx(1000 * 5 / total_words)
    assert result["reflection_share"] == 0.5


def test_repeated_4grams_and_template_collapse():
    assert repeated("a b c d a b c d") == pytest.approx(1 / 5)  # abcd bcda cdab dabc abcd
    assert repeated("a a a a a a") == pytest.approx(2 / 3)  # aaaa three times
    assert math.isnan(repeated("a b c"))
    opening = "Let me look at the"
    rows = [
        {"think": f"{opening} bird closely", "answer": "x"},
        {"think": f"{opening} feathers now", "answer": "x"},
        {"think": f"{opening} beak", "answer": "x"},
        {"think": "The image shows a finch on a branch", "answer": "x"},
    ]
    result = measure(rows)
    assert result["template_share"] == 0.75
    assert result["template_opening"] == "let me look at the"
    assert result["repeated_4gram_share"] == 0.0


def test_diversity_distinct_n_and_self_bleu():
    texts = of([["a", "b", "a"], ["a", "c"]])
    assert distinct_n(texts, 1) == pytest.approx(3 / 5)  # a b c of a b a a c
    assert distinct_n(texts, 2) == 1.0  # ab ba ac: no 2-gram across the two texts
    same = words("the small bird has a red face and a yellow wing bar on each side")
    assert self_bleu(of([same, same, same])) == pytest.approx(1.0)
    other = words("quantum chromodynamics describes strong interactions between quarks and gluons today")
    assert self_bleu(of([same, other])) < 0.05
    result = measure([{"think": " ".join(same), "answer": "x"}, {"think": " ".join(same), "answer": "y"}])
    assert result["self_bleu"] == pytest.approx(1.0) and result["distinct_1"] == len(set(same)) / (
        2 * len(same)
    )
    assert result["sample"] == result["self_bleu_sample"] == 2


def test_self_bleu_is_nltks_sentence_bleu_of_each_text_against_the_others():
    import numpy as np
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smoothing = SmoothingFunction().method1
    rng = random.Random(0)
    for _ in range(40):  # small vocabularies: repeated n-grams, ties between texts, texts under 4 words
        vocabulary = "abcdefghijkl"[: rng.randint(2, 12)]
        texts = [
            [rng.choice(vocabulary) for _ in range(rng.randint(0, 30))] for _ in range(rng.randint(2, 7))
        ]
        usable = [text for text in texts if text]
        if len(usable) < 2:
            continue
        expected = np.mean(
            [
                sentence_bleu(usable[:i] + usable[i + 1 :], text, smoothing_function=smoothing)
                for i, text in enumerate(usable)
            ]
        )
        assert self_bleu(of(texts)) == pytest.approx(expected, abs=1e-12)


def test_consistency_answer_words_in_the_think_and_the_class_named_there():
    assert overlap("the bird is a goldfinch", "A goldfinch.") == 1.0
    assert overlap("the bird is a goldfinch", "a robin, a robin") == 0.5  # distinct answer words
    assert math.isnan(overlap("anything", "..."))
    rows = [
        {"think": "Yellow wings: a goldfinch.", "answer": "A goldfinch", "label_verdict": "exact"},
        {"think": "Some small yellow bird.", "answer": "A goldfinch", "label_verdict": "exact"},
        {"think": "A goldfinch perhaps.", "answer": "A robin", "label_verdict": "other_class"},  # not counted
    ]
    result = measure(rows)
    assert result["class_in_think_share"] == 0.5 and result["class_in_think_sample"] == 2
    assert result["answer_in_think"] == pytest.approx(
        (1.0 + 0.0 + 0.5) / 3
    )  # {a, goldfinch}: both, neither, a


def test_the_sample_is_the_traces_whose_image_ids_hash_lowest_whatever_their_order(monkeypatch):
    import hashlib

    from release import trace_quality

    monkeypatch.setattr(trace_quality, "SAMPLE", 3)
    rows = [  # thinks of 1, 2, 4, ... words: distinct-1 tells which three were sampled
        {"think": " ".join([word] * 2**i), "answer": "x", "image_id": f"img-{word}"}
        for i, word in enumerate("abcdefg")
    ]
    lowest = sorted(rows, key=lambda row: hashlib.sha256(row["image_id"].encode()).digest())[:3]
    expected = distinct_n(Words.of([row["think"] for row in lowest]), 1)
    for order in (rows, rows[::-1]):
        quality = TraceQuality(["glm"])
        for start in range(0, len(order), 2):
            quality.add("glm", table(order[start : start + 2]))
        result = quality.result({})["glm"]
        assert result["sample"] == 3 and result["distinct_1"] == expected


def test_near_duplicate_traces_within_an_annotator():
    rng = random.Random(1)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6)) for _ in range(400)]

    def trace():
        return " ".join(rng.choice(vocabulary) for _ in range(120))

    copied, a, b = trace(), trace(), trace()
    rows = [{"think": text, "answer": "x"} for text in (copied, a, copied, b)]  # the same text, two images
    assert measure(rows)["near_duplicate_trace_share"] == 0.25
    quality = TraceQuality(["glm", "kimi"])  # the same text by another annotator is no duplicate
    quality.add("glm", table([{"think": copied, "answer": "x"}]))
    quality.add("kimi", table([{"think": copied, "answer": "x"}]))
    assert quality.result({})["kimi"]["near_duplicate_trace_share"] == 0.0


def test_a_built_release_reports_them_in_stats_the_card_and_a_chart(tmp_path):
    manifest, entries = write_manifest_tree(tmp_path, 2, 6)
    rng = random.Random(0)
    thinks = [
        f"Hmm, wait. Image {i} shows a small bird with streaked brown feathers." for i in range(len(entries))
    ]
    records = [make_record(e, "glm", rng, think=t) for e, t in zip(entries, thinks, strict=True)]
    write_run(tmp_path / "glm", records)
    out = tmp_path / "imagenet_think"
    build_release(BuildOptions([tmp_path / "glm"], manifest, out, validation_fraction=0, test_fraction=0))
    stats = json.loads((out / "stats.json").read_text())
    glm = stats["trace_quality"]["glm"]
    assert glm["samples"] == len(entries)
    assert glm["reflection_share"] == 1.0
    assert glm["template_share"] == 1.0  # digits are no words: every trace opens "hmm wait image shows a"
    card = (out / "README.md").read_text()
    assert "Trace quality per annotator" in card and "| glm | " in card
    assert (out / "trace_quality.png").read_bytes()[:4] == b"\x89PNG"
    assert "trace_quality.png" in json.loads((out / "release.json").read_text())["files"]
