"""The release's language check (generation.verdicts.language) on the labelled sample, and what a release does
with traces that are not English and with forced answers: rejected with their reason and language,
kept with a forced_answer column (or rejected with --forced-answers reject), counted per annotator in
stats and the card. Real files, the real fastText model."""

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from generation.records import RECORD_COLUMN_DEFAULTS, RECORD_SCHEMA, file_sha256
from generation.run_check import check_run
from generation.runs import chunk_files
from generation.verdicts.language import WINDOW_CHARS, language_verdict, plainly_english, windows
from generation.verdicts.quality import record_verdict
from imagenet_think_cli import main as cli
from release.build import BuildOptions, build_release
from release.stats import compute_stats
from tests.fixtures.language_sample import CHINESE, ENGLISH, KEEP, OTHER, SAMPLE
from tests.fixtures.synthetic import make_record, synthetic_text, write_manifest_tree, write_run

SHORT_ENGLISH = [
    "A house sparrow.",
    "house sparrow",
    "Golden retriever",
    "Matterhorn",
    "Amanita muscaria",
    "Passer domesticus",
    "Porcelain vase",
    "Kitchen utensil: spatula",
    "Dog",
]
SHORT_OTHER = [("Un moineau domestique.", "fr"), ("Кухонная лопатка.", "ru"), ("家麻雀", "ja")]


@pytest.mark.parametrize(
    ("kind", "language", "text"), SAMPLE, ids=[f"{k}-{lang}-{i}" for i, (k, lang, _) in enumerate(SAMPLE)]
)
def test_the_labelled_sample(kind, language, text):
    verdict = language_verdict(text)
    if kind in KEEP:  # English, and English with a few CJK characters (a quoted name, a sign)
        assert verdict is None
        return
    assert verdict is not None
    if kind == "other":
        assert verdict.language == language and verdict.share == 1
    else:  # Chinese throughout, or English that drifts into Chinese part-way
        assert verdict.language == "zh"
        assert verdict.share == 1 if kind == "chinese" else 0 < verdict.share < 1
    assert verdict.probability >= 0.5


def test_short_answers():
    for answer in SHORT_ENGLISH:
        assert language_verdict(answer) is None, answer
    for answer, language in SHORT_OTHER:
        assert language_verdict(answer).language == language


def test_a_passage_in_chinese_is_caught_wherever_it_starts():
    """A sentence or two of Chinese (120 characters) in the middle of English, at every offset."""
    english = ENGLISH[0] + " " + ENGLISH[1]
    caught = [
        language_verdict(english[:start] + CHINESE[1][:120] + english[start:]) is not None
        for start in range(0, len(english), 37)
    ]
    assert all(caught)


def test_english_prose_is_decided_without_the_identifier_and_other_text_is_not():
    """Step 1 decides English prose at once; anything with another script or too few English words
    is read window by window."""
    rng = random.Random(0)
    assert all(plainly_english(text) for text in ENGLISH)
    assert all(plainly_english(synthetic_text(rng, n)) for n in (150, 1100))  # the benchmark's traces
    assert not any(
        plainly_english(text) for _, _, text in SAMPLE[len(ENGLISH) :]
    )  # CJK, Cyrillic, accents, nl, id
    dutch_with_the = OTHER[8][1] + " the end."  # one "the" is not English prose
    assert not plainly_english(dutch_with_the) and language_verdict(dutch_with_the).language == "nl"
    words = " ".join(synthetic_text(rng, 40).replace(" the ", " ").replace(" and ", " ") for _ in range(3))
    assert not plainly_english(words) and language_verdict(words) is None  # read by windows: still English
    parts = windows(words)  # whole words, at most WINDOW_CHARS characters, overlapping
    assert len(parts) > 1 and all(len(part) <= WINDOW_CHARS and part.strip() == part for part in parts)
    assert all(f" {part} " in f" {words} " for part in parts)


def test_record_verdicts():
    think, answer = ENGLISH[2], "A fly agaric."
    assert record_verdict(True, "stop", think, answer) is None
    reason, detail = record_verdict(True, "stop", think + " " + CHINESE[2], answer)
    assert reason == "not_english" and detail.startswith("think: zh in ") and "%" in detail
    reason, detail = record_verdict(True, "stop", think, "一只毒蝇伞，生长在苔藓中。")
    assert reason == "not_english" and detail.startswith("answer: zh in 1 of 1 window")
    # A forced answer: judged by its second pass; kept unless the build rejects forced answers.
    assert record_verdict(True, "length", think, answer, True, "stop") is None
    assert record_verdict(True, "length", think, answer, True, "length")[0] == "truncated"
    assert (
        record_verdict(True, "length", think, answer, True, "stop", reject_forced=True)[0] == "forced_answer"
    )
    assert record_verdict(True, "length", think, answer)[0] == "truncated"  # not forced: truncated as before


def _strip_new_columns(run_dir):
    """Rewrite a run's records as a toolkit before answer forcing wrote them (and their commits)."""
    for index in check_run(run_dir).done:
        records_path, _, commit_path = chunk_files(run_dir, index)
        table = pq.read_table(records_path)
        old = [
            name
            for name in table.column_names
            if name not in (*RECORD_COLUMN_DEFAULTS, "num_first_pass_tokens")
        ]
        pq.write_table(table.select(old), records_path, compression="zstd")
        commit = json.loads(commit_path.read_text())
        commit["records"].update(bytes=records_path.stat().st_size, sha256=file_sha256(records_path))
        commit_path.write_text(json.dumps(commit))


@pytest.fixture(scope="module", params=[True, False], ids=["glm verdicts stored", "glm judged by the build"])
def inputs(tmp_path_factory, request):
    """glm records with forced answers (one cut again), Chinese and drifting traces, with the verdicts
    generate stores or without (the build judges them); an older kimi run."""
    root = tmp_path_factory.mktemp("language")
    manifest, entries = write_manifest_tree(root, classes=3, per_class=6)
    rng = random.Random(4)
    english = [make_record(e, "glm", rng) for e in entries]
    forced = dict(finish_reason="length", forced_answer=True, second_pass_finish_reason="stop")
    changes = {
        0: forced,
        1: forced,
        2: {**forced, "second_pass_finish_reason": "length"},  # the second pass was cut too: truncated
        3: {"think": CHINESE[0]},
        4: {"think": ENGLISH[3] + " " + CHINESE[3]},  # drifts into Chinese
        5: {"answer": "这是一只躺在草地上的金毛寻回犬。"},
        6: {
            "think": ENGLISH[5][:120] + ' the sign reads "拉面" and' + ENGLISH[5][120:]
        },  # a quoted name: kept
    }
    glm = [
        make_record(e, "glm", rng, **changes[i]) if i in changes else r
        for i, (e, r) in enumerate(zip(entries, english, strict=True))
    ]
    write_run(root / "glm", glm, per_shard=5, verdicts=request.param)
    kimi = [make_record(e, "kimi", rng) for e in entries]
    kimi[7] = make_record(entries[7], "kimi", rng, think=CHINESE[4])
    write_run(root / "kimi", kimi, per_shard=5)
    _strip_new_columns(root / "kimi")  # an older run: no forced_answer, ... columns
    assert "forced_answer" not in pq.read_schema(chunk_files(root / "kimi", 0)[0]).names
    return {"root": root, "manifest": manifest, "entries": entries}


def test_a_release_keeps_forced_answers_and_rejects_traces_that_are_not_english(inputs):
    root, entries = inputs["root"], inputs["entries"]
    out = root / "release"
    assert (
        cli(
            [
                "build",
                "--shards",
                str(root / "glm"),
                str(root / "kimi"),
                "--manifest",
                str(inputs["manifest"]),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    glm = {row["image_id"]: row for split in load_dataset(str(out), "glm").values() for row in split}
    ids = [e.image_id for e in entries]
    assert (
        glm[ids[0]]["forced_answer"]
        and glm[ids[1]]["forced_answer"]
        and glm[ids[0]]["finish_reason"] == "length"
    )
    assert not glm[ids[8]]["forced_answer"] and ids[6] in glm  # English with a quoted name stays
    assert not {ids[2], ids[3], ids[4], ids[5]} & set(glm)
    kimi = {row["image_id"]: row for split in load_dataset(str(out), "kimi").values() for row in split}
    assert len(kimi) == len(entries) - 1 and not any(row["forced_answer"] for row in kimi.values())
    rejected = {(r["annotator"], r["image_id"]): r for r in load_dataset(str(out), "rejected", split="train")}
    assert {key: r["reject_reason"] for key, r in rejected.items()} == {
        ("glm", ids[2]): "truncated",
        ("glm", ids[3]): "not_english",
        ("glm", ids[4]): "not_english",
        ("glm", ids[5]): "not_english",
        ("kimi", ids[7]): "not_english",
    }
    assert rejected[("glm", ids[3])]["reject_detail"].startswith("think: zh in ")
    assert rejected[("glm", ids[5])]["reject_detail"].startswith("answer: zh in ")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["forced_answers_by_annotator"] == {"glm": 2, "kimi": 0}
    assert stats["rejected_by_annotator"] == {
        "glm": {"not_english": 3, "truncated": 1},
        "kimi": {"not_english": 1},
    }
    assert {
        **compute_stats(out, ("glm", "kimi")),
        "inputs": stats["inputs"],
    } == stats  # `stats` reads the same
    card = (out / "README.md").read_text()
    assert "| glm | 14 | 2 (14.3%) | 3 | 4 |" in card and "| kimi | 17 | 0 (0.0%) | 1 | 1 |" in card
    assert "| `not_english` | 4 |" in card and "kept in the configs above" in card


def test_forced_answers_reject_moves_them_to_rejected(inputs, tmp_path):
    root, ids = inputs["root"], [e.image_id for e in inputs["entries"]]
    built = build_release(
        BuildOptions(
            [root / "glm", root / "kimi"],
            inputs["manifest"],
            tmp_path / "out",
            forced_answer_records="reject",
        )
    )
    assert built.rejected_by_reason["forced_answer"] == 2
    rejected = load_dataset(str(tmp_path / "out"), "rejected", split="train")
    forced = [r for r in rejected if r["reject_reason"] == "forced_answer"]
    assert sorted(r["image_id"] for r in forced) == [ids[0], ids[1]] and all(
        r["forced_answer"] for r in forced
    )
    glm = load_dataset(str(tmp_path / "out"), "glm")
    assert not any(any(split["forced_answer"]) for split in glm.values())
    assert "built with `--forced-answer-records reject`" in (tmp_path / "out" / "README.md").read_text()
    assert (
        json.loads((tmp_path / "out" / "stats.json").read_text())["forced_answers_by_annotator"]["glm"] == 0
    )


def test_records_of_an_older_run_read_with_their_values(inputs):
    from release.rows import RecordStore

    store = RecordStore(
        [(inputs["root"] / "kimi", path) for path in check_run(inputs["root"] / "kimi").record_files]
    )
    assert store.table.schema == RECORD_SCHEMA
    assert not any(store.table["forced_answer"].to_pylist())
    assert store.table["num_first_pass_tokens"].to_pylist() == store.table["num_output_tokens"].to_pylist()
    assert set(store.table["second_pass_finish_reason"].to_pylist()) == {""}
    assert isinstance(store.table["num_second_pass_tokens"].type, type(pa.int32()))
