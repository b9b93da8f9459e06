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
