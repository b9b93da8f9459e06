"""Generation on the real vLLM CPU engine with a tiny local model: sample -> generate -> build -> load,
per-request rejects, SIGKILL at random moments then resume, and the Ray engine."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from image_trees import write_image_tree

from generation.config import load_model_config
from generation.generate import completed_chunks, generate
from generation.records import RECORD_GLOB, REJECT_GLOB, iter_rows, read_manifest, shard_files
from imagenet_think_cli import main as cli
from release.build import build_release

REPO = Path(__file__).resolve().parent.parent
TINY_GLM = REPO / "configs" / "generation" / "tiny_glm.yaml"


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """An image tree with good, odd and bad files, sampled into a manifest by the CLI."""
    root = tmp_path_factory.mktemp("generate")
    tree = write_image_tree(root / "tree", good_per_class=2)
    manifest = root / "manifest.parquet"
    assert (
        cli(["sample", "--source", str(root / "tree"), "--out", str(manifest), "--min-per-class", "1"]) == 0
    )
    return {"root": root, "tree": tree, "manifest": manifest}


def _records(run_dir):
    return list(iter_rows(shard_files(run_dir, RECORD_GLOB)))


def _rejects(run_dir):
    return list(iter_rows(shard_files(run_dir, REJECT_GLOB)))


def test_sample_generate_build_load(sampled, tmp_path):
    tree, manifest = sampled["tree"], sampled["manifest"]
    good = {Path(f.path).stem for f in tree.files if not f.reason}
    table, _ = read_manifest(manifest)
    assert (
        set(table["image_id"].to_pylist()) == good
    )  # every good (incl. odd-mode) image sampled, bad ones not
    config = load_model_config(TINY_GLM)
    summary = generate(config, manifest, tmp_path / "run")
    records = _records(tmp_path / "run")
    assert {r["image_id"] for r in records} == good and len(records) == len(good)
    assert summary.records == len(good) and summary.rejects == 0
    for record in records:
        assert record["annotator"] == "glm" and record["model_id"] == "tiny:glm4v"
        assert record["num_output_tokens"] > 0 and record["finish_reason"] in {"stop", "length"}
        assert record["question"] == config.question
    out = tmp_path / "imagenet_think"
    built = build_release(
        [tmp_path / "run"], manifest, out, annotators=("glm",), validation_fraction=0, test_fraction=0
    )
    assert "both" not in built.rows  # one annotator: no joint config
    loaded = {name: load_dataset(str(out), name, split="train").num_rows for name in built.rows}
    assert loaded == {name: splits["train"] for name, splits in built.rows.items()}
    assert sum(loaded.values()) == len(
        good
    )  # each record is in `glm` or, rejected with its reason, in `rejected`


def test_failed_requests_become_rejects(sampled, tmp_path):
    manifest = sampled["manifest"]
    table, root = read_manifest(manifest)
    # A copy of the tree in which one sampled image has since become unreadable.
    copy = tmp_path / "tree"
    shutil.copytree(root, copy)
    broken = table["image_path"][0].as_py()
    (copy / broken).write_bytes(b"not an image any more")
    config = load_model_config(TINY_GLM, ["engine.max_model_len=40"])  # the image prompt no longer fits
    generate(config, manifest, tmp_path / "run", limit=3, image_root=copy)
    rejects = {r["image_id"]: r["reason"] for r in _rejects(tmp_path / "run")}
    assert rejects[Path(broken).stem] == "unreadable_image"
    assert Counter(rejects.values()) == {"unreadable_image": 1, "prompt_too_long": 2}
    assert not _records(tmp_path / "run")


def test_an_engine_that_cannot_go_on_stops_the_run_uncommitted(sampled, tmp_path):
    """Failures injected at vLLM's boundary: a dead engine, and one failing every request."""
    from vllm.v1.engine.exceptions import EngineDeadError

    from generation.engine import Annotator

    config = load_model_config(TINY_GLM)
    annotator = Annotator(config)
    for error, expected in ((EngineDeadError(), EngineDeadError), (RuntimeError("boom"), RuntimeError)):

        def broken(*args, error=error, **kwargs):
            raise error

        annotator.llm.chat = broken
        run = tmp_path / type(error).__name__
        with pytest.raises(expected):
            generate(config, sampled["manifest"], run, limit=3, annotator=annotator)
        assert not completed_chunks(run) and not _rejects(run)  # nothing committed: a resume redoes it


def _generate_command(manifest, out, config=TINY_GLM):
    return [
        sys.executable,
        "-m",
        "imagenet_think_cli",
        "generate",
        "--config",
        str(config),
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--set",
        "chunk_size=1",
    ]


def test_sigkill_at_random_moments_then_resume(sampled, tmp_path):
    manifest, out = sampled["manifest"], tmp_path / "run"
    expected = set(read_manifest(manifest)[0]["image_id"].to_pylist())
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for _ in range(3):
        before = len(completed_chunks(out)) if out.exists() else 0
        process = subprocess.Popen(
            _generate_command(manifest, out),
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if out.exists() and len(completed_chunks(out)) > before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))  # somewhere inside the next chunk, or while writing it
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = subprocess.run(
        _generate_command(manifest, out), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert final.returncode == 0, final.stderr[-2000:]
    records = _records(out)
    ids = [r["image_id"] for r in records] + [r["image_id"] for r in _rejects(out)]
    assert Counter(ids).most_common(1)[0][1] == 1, "an image was annotated twice"
    assert set(ids) == expected
    assert not list(out.glob(".tmp-*"))
    for shard in out.glob("*.parquet"):
        pq.read_table(shard)  # no torn shard


def test_ray_engine_matches_default_engine(sampled, tmp_path):
    ray = pytest.importorskip("ray")
    config = load_model_config(TINY_GLM, ["chunk_size=3"])
    generate(config, sampled["manifest"], tmp_path / "local", limit=5)
    try:
        generate(config, sampled["manifest"], tmp_path / "ray", limit=5, engine="ray")
    finally:
        ray.shutdown()
    fields = ("image_id", "output", "think", "answer", "finish_reason", "num_output_tokens")
    local = sorted(tuple(r[f] for f in fields) for r in _records(tmp_path / "local"))
    remote = sorted(tuple(r[f] for f in fields) for r in _records(tmp_path / "ray"))
    assert local == remote and len(local) == 5
    assert completed_chunks(tmp_path / "ray") == {0, 1}


def test_slurm_arrays_with_a_step_shard_by_position(monkeypatch):
    from generation.generate import default_sharding

    for name, value in {
        "SLURM_ARRAY_TASK_COUNT": "4",
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_STEP": "2",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "6")  # --array=0-6:2 runs 0, 2, 4, 6
    assert default_sharding() == (4, 3)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    with pytest.raises(ValueError, match="submit the array as a range"):
        default_sharding()


def test_only_torn_temporary_files_are_removed(tmp_path):
    from generation.records import remove_temporary_files, temporary_prefix

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host = temporary_prefix().split("@")[1]
    live = tmp_path / f"{temporary_prefix()}a.parquet"  # this process is writing it
    torn = tmp_path / f".tmp-{gone.stdout.strip()}@{host}@b.parquet"  # its writer has exited
    elsewhere = tmp_path / ".tmp-1@another-host@c.parquet"  # cannot be checked: kept until stale
    stale = tmp_path / ".tmp-2@another-host@d.parquet"
    for path in (live, torn, elsewhere, stale):
        path.write_bytes(b"partial")
    os.utime(stale, (time.time() - 2 * 24 * 3600,) * 2)
    assert remove_temporary_files(tmp_path) == 2
    assert sorted(tmp_path.iterdir()) == sorted([live, elsewhere])


def test_a_resume_accepts_the_same_config_written_in_another_key_order(tmp_path):
    import dataclasses

    from generation.generate import claim_run_dir, plan_chunks

    config = load_model_config(TINY_GLM)
    manifest = tmp_path / "m.parquet"
    write_image_tree(tmp_path / "tree", good_per_class=1, odd_files=False)
    assert (
        cli(["sample", "--source", str(tmp_path / "tree"), "--out", str(manifest), "--min-per-class", "1"])
        == 0
    )
    _, fingerprint = plan_chunks(manifest, 8)
    claim_run_dir(tmp_path / "run", config, manifest, fingerprint)
    reordered = dataclasses.replace(config, sampling=dict(reversed(list(config.sampling.items()))))
    assert list(reordered.sampling) != list(config.sampling)
    claim_run_dir(tmp_path / "run", reordered, manifest, fingerprint)  # no "another config" error
    changed = dataclasses.replace(config, sampling={**config.sampling, "temperature": 0.123})
    with pytest.raises(RuntimeError, match="another config"):
        claim_run_dir(tmp_path / "run", changed, manifest, fingerprint)
