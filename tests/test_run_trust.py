"""The run protocol among users' environments: a full disk during a chunk commit, one run given
twice or copied, and several workers sharing one run folder."""

import dataclasses
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from generation.claims import CLAIM_STALE_SECONDS, ChunkClaims, claim_file
from generation.config import VLMConfig, unpinned_remote_code
from generation.run_check import check_run
from generation.runs import chunk_files
from release.build import BuildOptions, build_release
from tests.fixtures.synthetic import make_record, write_manifest_tree, write_run

REPO = Path(__file__).resolve().parent.parent

# Commit chunk 2 again in a child process under a file-size limit, reported as the CLI reports errors.
COMMIT_UNDER_LIMIT = """
import resource, sys
import pyarrow.parquet as pq
import shutil
from generation.runs import commit_chunk
from imagenet_think_errors import run_reporting
run, saved, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
records, rejects = pq.read_table(saved + "/records.parquet"), pq.read_table(saved + "/rejects.parquet")
ids = sorted(records["image_id"].to_pylist() + rejects["image_id"].to_pylist())
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(run_reporting("imagenet-think generate", lambda: commit_chunk(run, 2, records, rejects, ids)))
"""


def test_a_chunk_commit_past_a_file_size_limit_is_one_line_and_the_run_resumes(tmp_path):
    manifest, entries = write_manifest_tree(tmp_path, classes=3, per_class=5)
    rng = random.Random(0)
    run = tmp_path / "run"
    write_run(run, [make_record(e, "glm", rng) for e in entries], per_shard=5, manifest=manifest)
    saved = tmp_path / "chunk2"
    saved.mkdir()
    records, rejects, commit = chunk_files(run, 2)
    records.rename(saved / "records.parquet")
    rejects.rename(saved / "rejects.parquet")
    commit.unlink()  # chunk 2 still to commit
    size = (saved / "records.parquet").stat().st_size
    child = subprocess.run(
        [sys.executable, "-c", COMMIT_UNDER_LIMIT, str(run), str(saved), str(size - 1)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.returncode == 1 and child.stderr.count("\n") == 1, child.stderr[-3000:]
    assert child.stderr == (
        f"imagenet-think generate: error: cannot write {records}: File too large; chunk 2 is not committed "
        "(committed chunks are kept); free space (or raise the file-size limit), then rerun the same command "
        "to resume\n"
    )
    state = check_run(run)
    assert sorted(state.done) == [0, 1] and not records.exists() and not list(run.glob(".tmp-*"))
    unlimited = subprocess.run(
        [sys.executable, "-c", COMMIT_UNDER_LIMIT, str(run), str(saved), str(10**9)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert unlimited.returncode == 0, unlimited.stderr[-3000:]
    assert sorted(check_run(run).done) == [0, 1, 2]
    assert pq.read_table(records).equals(pq.read_table(saved / "records.parquet"))


def _two_runs(tmp_path):
    manifest, entries = write_manifest_tree(tmp_path, classes=3, per_class=5)
    rng = random.Random(0)
    runs = []
    for annotator in ("glm", "kimi"):
        folder = tmp_path / "runs" / annotator
        write_run(folder, [make_record(e, annotator, rng) for e in entries], per_shard=5, manifest=manifest)
        runs.append(folder)
    return manifest, entries, runs


def test_a_run_folder_given_relative_and_absolute_counts_once(tmp_path, monkeypatch):
    manifest, entries, (glm, kimi) = _two_runs(tmp_path)
    monkeypatch.chdir(tmp_path)
    summary = build_release(
        BuildOptions([Path("runs/glm"), glm, kimi, Path("runs/../runs/kimi")], manifest, tmp_path / "out")
    )
    assert summary.rejected_by_reason == {} and "rejected" not in summary.rows
    assert [run["annotator"] for run in summary.provenance["runs"]] == ["glm", "kimi"]
    assert summary.rows["glm"] == summary.rows["kimi"] and sum(summary.rows["glm"].values()) == 15


def test_a_copied_run_folder_counts_once_and_the_warning_names_which_wins(tmp_path, caplog):
    manifest, entries, (glm, kimi) = _two_runs(tmp_path)
    copy = tmp_path / "backup" / "glm"
    shutil.copytree(glm, copy)  # the same run, copied before its last chunk was committed
    chunk_files(glm, 2)[2].unlink()
    with caplog.at_level("WARNING", logger="release"):
        summary = build_release(BuildOptions([glm, copy, kimi], manifest, tmp_path / "out"))
    assert summary.rejected_by_reason == {} and "rejected" not in summary.rows
    assert sum(summary.rows["glm"].values()) == 15  # the copy's 15 images, not the original's 10
    [warning] = [r.getMessage() for r in caplog.records if "hold the same run" in r.getMessage()]
    assert warning.startswith(f"{copy} and {glm} hold the same run")
    assert f"using {copy} (15 images done), ignoring {glm} (10)" in warning
    # Two runs of one config written into two folders are two runs (each its own run_id): both count.
    other = tmp_path / "again" / "glm"
    write_run(
        other, [make_record(e, "glm", random.Random(1)) for e in entries], per_shard=5, manifest=manifest
    )
    summary = build_release(BuildOptions([copy, other], manifest, tmp_path / "out"))
    assert summary.rejected_by_reason == {"duplicate_record": 15}


HOLD_A_CLAIM = """
import sys
from generation.claims import ChunkClaims
claims = ChunkClaims(sys.argv[1]).__enter__()
assert claims.take(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
print("claimed", flush=True)
sys.stdin.read()
"""


def test_a_claim_is_taken_once_and_a_stale_one_is_taken_over(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_CLAIM, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert holder.stdout.readline() == "claimed\n"
    with ChunkClaims(run) as claims, caplog.at_level("WARNING", logger="generation"):
        assert claims.take(0) and not claims.take(0)  # once, even by the same worker
        held = json.loads(claim_file(run, 0).read_text())
        assert held["host"] == socket.gethostname() and held["pid"] == os.getpid()
        assert not claims.take(1)  # a live worker's
        holder.kill()
        holder.wait()
        assert claims.take(1)  # its worker is gone
        assert f"process {holder.pid} on {socket.gethostname()}, which is gone" in caplog.text
        elsewhere = claim_file(run, 2)
        elsewhere.write_text(json.dumps({"host": "another-node", "pid": 1, "token": "x"}))
        assert not claims.take(2)  # another host's, refreshed lately
        old = time.time() - CLAIM_STALE_SECONDS - 60
        os.utime(elsewhere, (old, old))
        assert claims.take(2) and "not refreshed for" in caplog.text
        torn = claim_file(run, 3)
        torn.write_text("")  # its writer killed between creating and writing it
        assert not claims.take(3)
        os.utime(torn, (old, old))
        assert claims.take(3)
        chunk_files(run, 4)[2].write_text("{}")  # chunk 4 committed by another worker since the plan
        assert not claims.take(4) and not claim_file(run, 4).exists()
        claims.release(0)
        assert not claim_file(run, 0).exists()
    assert not list(run.glob("claim-*"))  # the rest released on closing


# A worker of `generate` with a stand-in for the engine (writes synthetic records, logs its chunks):
# two of them share one --out, started together.
WORKER = """
import random, sys, time
from pathlib import Path
from generation.config import VLMConfig, validate_model_config
from generation.generate import generate
from generation.records import ManifestEntry
from generation.runs import ChunkResult
from tests.fixtures.synthetic import make_record
manifest, out, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
class StandIn:
    def annotate(self, tasks):
        time.sleep(0.3)
        with open(out.parent / f"{name}.log", "a") as log:
            log.write("".join(task.image_id + "\\n" for task in tasks))
        return ChunkResult([
            make_record(ManifestEntry(t.image_id, t.wnid, t.image_path, 1, 1, t.sha256, True), "glm",
                        random.Random(t.image_id), manifest_sha256=t.manifest_sha256)
            for t in tasks
        ], [])
config = VLMConfig(annotator="glm", model="synthetic/glm", chunk_size=1)
validate_model_config(config)  # imports what generate needs before the start line
(out.parent / f"{name}.ready").touch()
while not all((out.parent / f"{w}.ready").exists() for w in ("a", "b")):
    time.sleep(0.05)
generate(config, manifest, out, annotator=StandIn())
"""


def test_two_workers_on_one_run_folder_split_its_chunks(tmp_path):
    manifest, entries = write_manifest_tree(tmp_path, classes=3, per_class=5)
    out = tmp_path / "run"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(manifest), str(out), name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for name in ("a", "b")
    ]
    for worker in workers:
        assert worker.wait(timeout=600) == 0, worker.stderr.read()[-3000:]
    done = {name: (tmp_path / f"{name}.log").read_text().split() for name in ("a", "b")}
    assert done["a"] and done["b"]  # both worked ...
    assert not set(done["a"]) & set(done["b"])  # ... on different chunks ...
    assert sorted(done["a"] + done["b"]) == sorted(e.image_id for e in entries)  # ... each once
    state = check_run(out)
    assert state.images_done == state.images_expected == 15 and not state.not_counted
    assert not list(out.glob("claim-*"))


def test_unpinned_remote_code_of_a_hub_model_warns_when_its_engine_starts(tmp_path, caplog):
    from generation.annotator import Annotator

    hub = VLMConfig(annotator="x", model="some-org/remote-code-model", trust_remote_code=True)
    assert "no revision is pinned" in unpinned_remote_code(hub)
    assert unpinned_remote_code(dataclasses.replace(hub, revision="0" * 40)) is None  # pinned
    assert unpinned_remote_code(dataclasses.replace(hub, trust_remote_code=False)) is None
    assert (
        unpinned_remote_code(dataclasses.replace(hub, model=str(tmp_path))) is None
    )  # a local folder's code
    assert unpinned_remote_code(dataclasses.replace(hub, model="tiny:glm4v")) is None
    with caplog.at_level("WARNING", logger="generation"), pytest.raises(Exception):  # noqa: B017 - offline
        Annotator(hub)  # the engine cannot fetch the model offline: the warning came first
    assert "trust_remote_code is true for some-org/remote-code-model and no revision is pinned" in caplog.text


def _records_by_image(run: Path) -> dict[str, tuple]:
    from generation.records import iter_rows

    fields = ("image_id", "output", "think", "answer", "finish_reason", "num_output_tokens")
    return {r["image_id"]: tuple(r[f] for f in fields) for r in iter_rows(check_run(run).record_files)}


def test_a_ray_pool_writes_what_the_local_loop_writes_and_leaves_a_chunk_another_worker_holds(tmp_path):
    """The Ray pool (one engine per actor) on a run folder where another worker holds chunk 0: it
    annotates chunk 1 only, and its records are the local loop's, field for field (greedy decoding)."""
    ray = pytest.importorskip("ray")
    from generation.config import load_model_config
    from generation.generate import generate

    manifest, _ = write_manifest_tree(tmp_path, classes=2, per_class=3)
    config = load_model_config(REPO / "configs" / "generation" / "tiny_glm.yaml", ["chunk_size=3"])
    generate(config, manifest, tmp_path / "local")  # both chunks, in this process
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(  # another worker, annotating chunk 0
        [sys.executable, "-c", HOLD_A_CLAIM, str(out), "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline() == "claimed\n"
        try:
            summary = generate(config, manifest, out, engine="ray")
        finally:
            ray.shutdown()
        assert sorted(check_run(out).done) == [1] and summary.images_missing == 3
        assert [p.name for p in out.glob("claim-*")] == [claim_file(out, 0).name]  # the other worker's
    finally:
        holder.kill()
        holder.wait()
    remote, local = _records_by_image(out), _records_by_image(tmp_path / "local")
    assert len(remote) == 3 and len(local) == 6
    assert remote == {image_id: local[image_id] for image_id in remote}
