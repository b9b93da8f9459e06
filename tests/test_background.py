"""The trace report counted in a second process (release.background, release.think_words) is the one
counted in the caller's, and a failure there reaches the caller."""

import random

import pyarrow as pa
import pytest

from release.background import Background, BackgroundError
from release.think_words import ThinkWords, _InBackground


def _tables() -> list[tuple[str, pa.Table, list]]:
    rng = random.Random(0)
    vocabulary = "wait hmm the bird a finch red let me check actually on second thought".split()
    tables = []
    for index in range(6):
        annotator = ("glm", "kimi")[index % 2]
        rows = [
            {
                "image_id": f"{annotator}-{index}-{row}",
                "wnid": "n01531178",
                "think": " ".join(rng.choices(vocabulary, k=rng.randint(0, 80))).capitalize(),
                "answer": "A goldfinch." if row % 3 else "a red bird",
                "think_closed": row % 5 != 0,
                "finish_reason": "length" if row % 7 == 0 else "stop",
                "forced_answer": row % 4 == 0,
                "label_verdict": ("exact", "other_class", "hyponym")[row % 3],
                "label_score": 1.0,
            }
            for row in range(rng.randint(1, 40))
        ]
        blocks = [((annotator, index // 2), 0, len(rows), index >= 4)]
        tables.append((annotator, pa.Table.from_pylist(rows), blocks))
    return tables


def test_the_second_process_counts_what_the_callers_does():
    here, there = ThinkWords(), _InBackground()
    for annotator, table, blocks in _tables():
        here.add(annotator, table, blocks)
        there.add(annotator, table, blocks)
    tokens = {"glm": [3, 5], "kimi": [], "other": [1]}
    expected = here.result(tokens)
    assert there.result(tokens) == expected
    assert list(expected["trace_quality"]) == ["glm", "kimi", "other"]  # those of the tokens first
    assert expected["block_words"] and expected["leftover_words"] > 0


def test_a_failure_in_the_second_process_is_raised_by_the_next_answer_and_the_process_ends():
    background = Background(ThinkWords)
    background.call("add", "glm", pa.table({"image_id": ["a"], "answer": ["b"]}))  # no think
    background.call("add", "glm", _tables()[0][1])  # skipped after the failure
    with pytest.raises(BackgroundError, match="think"):
        background.ask("result", {})
    with pytest.raises(BackgroundError, match="think"):  # and again
        background.ask("result", {})
    process = background._process  # noqa: SLF001
    background.close()
    assert process.poll() is not None


def test_a_build_that_starts_the_report_early_writes_the_same_statistics(tmp_path, monkeypatch):
    import json

    from release import background, think_words
    from release.build import BuildOptions, build_release
    from tests.fixtures.small_release import small_inputs

    inputs = small_inputs(tmp_path)
    build_release(BuildOptions(inputs["runs"], inputs["manifest"], tmp_path / "here"))
    started = []
    monkeypatch.setattr(think_words, "EARLY_RECORD_BYTES", 1)  # these runs count as large
    monkeypatch.setattr(think_words, "Background", lambda *a: started.append(a) or background.Background(*a))
    build_release(BuildOptions(inputs["runs"], inputs["manifest"], tmp_path / "there"))
    assert len(started) == 1
    here, there = (json.loads((tmp_path / name / "stats.json").read_text()) for name in ("here", "there"))
    assert there == here and here["trace_quality"]["glm"]["samples"] == len(inputs["entries"])


def test_the_second_process_deletes_the_tables_left_when_the_caller_is_gone():
    background = Background(ThinkWords)
    folder = background._folder  # noqa: SLF001
    for annotator, table, blocks in _tables():
        background.call("add", annotator, table, blocks)
    background._connection.close()  # noqa: SLF001 - as when the caller is killed
    background._process.wait(timeout=60)  # noqa: SLF001
    assert not folder.exists()
