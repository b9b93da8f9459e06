"""The demo pipeline end to end on a reduced input: every stage's output is checked."""

import json

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from generation.records import iter_rows
from generation.runs import check_run
from imagenet_think_demo import PHOTOS, run_demo
from imagenet_think_errors import RefusedError

REDUCED = (PHOTOS[1], PHOTOS[3], PHOTOS[6])  # a PNG, a JPEG from scikit-image, a JPEG from scikit-learn


def test_demo_pipeline(tmp_path):
    # No capsys here: vLLM, imported for the first time in this test, would bind its logging to
    # capsys's per-test stream and write to it, closed, in later tests.
    out = tmp_path / "demo"
    run_demo(out, photos=REDUCED)

    rejects = pq.read_table(out / "manifest.rejects.parquet").to_pylist()
    assert [(r["reason"], r["image_id"]) for r in rejects] == [
        ("truncated_file", f"{REDUCED[0].wnid}_broken")
    ]
    images = 2 * len(REDUCED)
    for annotator in ("glm", "kimi"):
        records = list(iter_rows(check_run(out / "runs" / annotator).record_files))
        assert len(records) == images
        complete = [r for r in records if r["think_closed"] and r["answer"] and r["finish_reason"] == "stop"]
        assert len(complete) >= 0.9 * images  # structured outputs keep the stand-ins in format

    release = out / "imagenet_think"
    assert "tiny random-weight stand-in models" in (release / "README.md").read_text()
    for config in ("glm", "kimi", "both"):
        splits = load_dataset(str(release), config)
        assert sum(ds.num_rows for ds in splits.values()) == images and set(splits) == {"train", "test"}

    assert (out / "student" / "adapter_config.json").is_file()
    assert (out / "student-merged" / "config.json").is_file()
    for name in ("student", "baseline"):
        summary = json.loads((out / "eval" / f"{name}-report" / "summary.json").read_text())
        assert summary["n_examples"] == len(REDUCED) and summary["model"] == name
    report = out / "eval" / "report"
    assert "student" in (report / "tables.md").read_text() and (report / "chart_semantic.png").is_file()
    preview = (out / "preview.html").read_text()
    assert "<img" in preview and "label verdict: " in preview
    stats = json.loads((release / "stats.json").read_text())
    assert set(stats["label_verdicts_by_annotator"]) == {"glm", "kimi"}
    verified = json.loads((release / "release.json").read_text())["configs"].get("verified", {})
    assert stats["verified_samples"] == sum(verified.values())  # the rows of the verified config


def test_the_demo_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RefusedError, match="not a demo folder"):
        run_demo(tmp_path, photos=REDUCED)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_grpo_stage_trains_the_student_and_charts_each_reward(tmp_path):
    """`imagenet-think demo --with-grpo`'s stage, on a synthetic release and the tiny base model."""
    import random

    from imagenet_think_demo import grpo_stage
    from release.build import BuildOptions, build_release
    from tests.fixtures.synthetic import make_record, write_manifest_tree, write_run

    manifest, entries = write_manifest_tree(tmp_path, classes=2, per_class=4)
    rng = random.Random(0)
    for annotator in ("glm", "kimi"):
        write_run(tmp_path / "runs" / annotator, [make_record(e, annotator, rng) for e in entries])
    release = tmp_path / "imagenet_think"
    build_release(BuildOptions([tmp_path / "runs" / "glm", tmp_path / "runs" / "kimi"], manifest, release))
    chart = grpo_stage(tmp_path, release, "tiny:qwen2_vl")
    history = json.loads((tmp_path / "student-grpo" / "trainer_state.json").read_text())["log_history"]
    logged = {
        key for entry in history for key in entry if key.startswith("rewards/") and key.endswith("/mean")
    }
    assert {"rewards/label/mean", "rewards/think_format/mean"} <= logged
    assert (
        chart.read_bytes().startswith(b"\x89PNG")
        and (tmp_path / "student-grpo" / "adapter_config.json").is_file()
    )
