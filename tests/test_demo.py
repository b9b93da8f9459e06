"""The demo pipeline end to end: every stage's output is checked, and what the demo is for: the
release shows every label verdict kind, the student learns the traces' language, GRPO moves a reward."""

import json

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from generation.records import iter_rows
from generation.run_check import check_run
from generation.verdicts.labels import KINDS
from imagenet_think_demo import LEXICAL, PHOTOS, closing_note, run_demo
from imagenet_think_errors import RefusedError


@pytest.mark.timeout(1800)  # the whole demo with GRPO: about 5 minutes on a quiet 2-core machine
def test_demo_pipeline(tmp_path):
    # No capsys here: vLLM, imported for the first time in this test, would bind its logging to
    # capsys's per-test stream and write to it, closed, in later tests.
    out = tmp_path / "demo"
    run_demo(out, with_grpo=True)

    rejects = pq.read_table(out / "manifest.rejects.parquet").to_pylist()
    assert [(r["reason"], r["image_id"]) for r in rejects] == [("truncated_file", f"{PHOTOS[0].wnid}_broken")]
    images = 2 * len(PHOTOS)
    for annotator in ("glm", "kimi"):
        records = list(iter_rows(check_run(out / "runs" / annotator).record_files))
        assert len(records) == images
        # structured outputs keep the stand-ins in format, within their token budget
        assert all(r["think_closed"] and r["answer"] and r["finish_reason"] == "stop" for r in records)

    release = out / "imagenet_think"
    assert "tiny random-weight stand-in models" in (release / "README.md").read_text()
    for config in ("glm", "kimi", "both"):
        splits = load_dataset(str(release), config)
        assert sum(ds.num_rows for ds in splits.values()) == images and set(splits) == {"train", "test"}
    stats = json.loads((release / "stats.json").read_text())
    verdicts = stats["label_verdicts_by_annotator"]
    assert set(verdicts) == {"glm", "kimi"}
    assert {kind for v in verdicts.values() for kind, share in v["share"].items() if share} == set(KINDS)
    verified = json.loads((release / "release.json").read_text())["configs"].get("verified", {})
    assert stats["verified_samples"] == sum(verified.values()) > 0  # the rows of the verified config

    assert (out / "student" / "model.safetensors").is_file()  # fully fine-tuned: no adapter to merge
    student, baseline = (
        json.loads((out / "eval" / f"{name}-report" / "summary.json").read_text())
        for name in ("student", "baseline")
    )
    assert student["model"] == "student" and student["split"] == "test"
    assert student["n_examples"] == baseline["n_examples"] == len(PHOTOS)  # one view per class tests
    for metric in LEXICAL:  # a clear margin: the intervals do not overlap
        learned, untrained = student["scores"]["full"][metric], baseline["scores"]["full"][metric]
        assert learned["avg_of_avg_ci"][0] > untrained["avg_of_avg_ci"][1] + 0.05, metric
    assert student["think_closed"] >= 0.9 > baseline["think_closed"]
    report = out / "eval" / "report"
    tables = (report / "tables.md").read_text()
    assert f"| student | 100.0% (8/8) | {student['think_closed']:.3f} |" in tables
    assert (report / "chart_semantic.png").is_file()

    history = json.loads((out / "student-grpo" / "trainer_state.json").read_text())["log_history"]
    rewards = {k for entry in history for k in entry if k.startswith("rewards/") and k.endswith("/mean")}
    assert {"rewards/label/mean", "rewards/think_format/mean", "rewards/length/mean"} <= rewards
    curves = {name: [entry[name] for entry in history if name in entry] for name in rewards}
    rising = [name for name, c in curves.items() if sum(c[-4:]) / 4 > sum(c[:4]) / 4 + 0.1]
    assert rising, curves
    assert (out / "grpo_rewards.png").read_bytes().startswith(b"\x89PNG")

    preview = (out / "preview.html").read_text()
    assert "<img" in preview and "label verdict: " in preview and "grpo_rewards.png" in preview
    note = closing_note(stats, out)
    assert note.startswith("What you saw:") and f"on {student['think_closed']:.0%} of its outputs" in note


def test_the_demo_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RefusedError, match="not a demo folder"):
        run_demo(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
