"""The user's environment, not the data: `eval score` run from another directory than its `eval
generate`, and a Hub that cannot be reached (SIGTERM during `generate` is in the kill-and-resume test of
tests/test_force_answer.py)."""

import json
import random
from pathlib import Path

import pytest

from generation.records import ManifestEntry, read_manifest
from imagenet_think_cli import main as cli
from imagenet_think_errors import MissingInputError
from tests.fixtures.small_release import two_annotator_release
from tests.fixtures.synthetic import make_record, write_run

REPO = Path(__file__).resolve().parent.parent
TINY_GLM = REPO / "configs" / "generation" / "tiny_glm.yaml"
EVAL_GENERATE = [
    "eval",
    "generate",
    "--model",
    str(REPO / "configs/models/tiny_baseline.yaml"),
    "--split",
    "test",
]
HUB_ID = "no-such-org/no-such-release"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A manifest of 2 classes x 4 images, glm and kimi runs of it, and their release."""
    return two_annotator_release(tmp_path_factory.mktemp("environment"), classes=2, seed=5)


def test_eval_score_from_another_directory_than_eval_generate(built, tmp_path, monkeypatch):
    """`--dataset` given relative (and shaped like a Hub id, org/name) is recorded absolutely, so
    `eval score` run elsewhere reads the same folder instead of asking the Hub."""
    monkeypatch.chdir(built.parent)
    relative = f"{built.name}/release"
    predictions = tmp_path / "pred"
    assert cli([*EVAL_GENERATE, "--dataset", relative, "--limit", "1", "--out", str(predictions)]) == 0
    assert json.loads((predictions / "eval.json").read_text())["dataset"] == str(built / "release")
    # A rerun from elsewhere, naming the same folder another way, resumes.
    monkeypatch.chdir(built)
    assert cli([*EVAL_GENERATE, "--dataset", "release", "--limit", "1", "--out", str(predictions)]) == 0

    monkeypatch.chdir(tmp_path)
    report = tmp_path / "report"
    fast = ["--metrics", "jaccard", "--bootstrap", "10", "--no-agreement"]
    assert cli(["eval", "score", "--predictions", str(predictions), "--out", str(report), *fast]) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert summary["images"]["expected"] == 1 and summary["dataset"] == str(built / "release")


def test_an_unreachable_hub_is_one_line(built, tmp_path):
    """Offline (as the tests run), a Hub id is refused in one line naming it, by `eval generate`
    and by `eval score` of predictions whose eval.json names it."""
    with pytest.raises(
        MissingInputError, match=rf"^release {HUB_ID}: .*the Hub cannot be reached"
    ) as refused:
        cli([*EVAL_GENERATE, "--dataset", HUB_ID, "--out", str(tmp_path / "pred")])
    assert "\n" not in str(refused.value)
    predictions = tmp_path / "elsewhere"
    (entry, *_) = [ManifestEntry(**row) for row in read_manifest(built / "manifest.parquet")[0].to_pylist()]
    write_run(
        predictions / "records",
        [make_record(entry, "model", random.Random(1))],
        manifest=built / "manifest.parquet",
    )
    (predictions / "eval.json").write_text(json.dumps({"dataset": HUB_ID, "split": "test", "limit": None}))
    with pytest.raises(MissingInputError, match=rf"^release {HUB_ID}: .*pass --dataset the release folder"):
        cli(["eval", "score", "--predictions", str(predictions), "--out", str(tmp_path / "report")])
