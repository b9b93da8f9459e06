"""The run protocol among users' environments: a full disk during a chunk commit, one run given
twice or copied, and several workers sharing one run folder."""

import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from generation.runs import check_run, chunk_files
from tests.fixtures.synthetic import make_record, write_manifest_tree, write_run

REPO = Path(__file__).resolve().parent.parent

# Commit chunk 2 again in a child process under a file-size limit, reported as the CLI reports errors.
COMMIT_UNDER_LIMIT = """
import resource, sys
import pyarrow.parquet as pq
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
