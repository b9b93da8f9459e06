"""The release build's seams: the user mistakes it must refuse, and a build killed at any moment."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from imagenet_think_cli import main as cli
from imagenet_think_errors import MissingInputError, RefusedError
from release.build import BuildOptions, build_release
from release.folder import MARKER
from tests.fixtures.small_release import small_inputs, write_runs
from tests.fixtures.synthetic import write_manifest_tree

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def inputs(tmp_path):
    return small_inputs(tmp_path)


def _ids(out: Path) -> dict[str, list[str]]:
    """Each config's image ids, every split, as load_dataset reads them."""
    marker = json.loads((out / MARKER).read_text())
    return {
        config: sorted(
            image_id
            for split in splits
            for image_id in load_dataset(str(out), config, split=split)["image_id"]
        )
        for config, splits in marker["configs"].items()
    }


def test_a_run_from_another_manifest_with_the_same_image_ids_is_refused(inputs, tmp_path):
    other = tmp_path / "other"
    other_manifest, other_entries = write_manifest_tree(other, classes=3, per_class=5, seed=99)
    assert [e.image_id for e in other_entries] == [e.image_id for e in inputs["entries"]]  # same names ...
    assert [e.sha256 for e in other_entries] != [e.sha256 for e in inputs["entries"]]  # ... other pictures
    out = tmp_path / "out"
    with pytest.raises(RefusedError, match="another manifest") as refused:
        build_release(BuildOptions(inputs["runs"], other_manifest, out))
    assert str(inputs["runs"][0]) in str(refused.value) and "--allow-other-manifest" in str(refused.value)
    # Allowed on purpose, every record is still checked against the image it claims.
    with pytest.raises(RefusedError, match="another picture") as refused:
        build_release(BuildOptions(inputs["runs"], other_manifest, out, allow_other_manifest=True))
    first = inputs["entries"][0].image_id  # the first record read: the first run's first chunk
    assert f"{inputs['runs'][0]} holds text generated for another picture" in str(refused.value)
    assert f"record {first} in records-c0000000.parquet" in str(refused.value)
    assert not out.exists()


def test_runs_from_two_manifests_are_refused(inputs, tmp_path):
    other = tmp_path / "other"
    other_manifest, other_entries = write_manifest_tree(other, classes=3, per_class=5, seed=99)
    mixed = [inputs["runs"][0], *write_runs(other, other_manifest, other_entries, annotators=("kimi",))]
    with pytest.raises(RefusedError, match="another manifest") as refused:
        build_release(BuildOptions(mixed, inputs["manifest"], tmp_path / "out"))
    assert str(mixed[1]) in str(refused.value)


def test_a_misspelled_or_empty_run_folder_is_refused(inputs, tmp_path):
    glm, kimi = inputs["runs"]
    with pytest.raises(MissingInputError, match=f"did you mean {kimi}"):
        build_release(BuildOptions([glm, kimi.parent / "kimii"], inputs["manifest"], tmp_path / "out"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingInputError, match="holds no generation run"):
        build_release(BuildOptions([glm, empty], inputs["manifest"], tmp_path / "out"))
    with pytest.raises(MissingInputError, match="no --shards run holds"):
        build_release(BuildOptions([glm], inputs["manifest"], tmp_path / "out", annotators=("glm", "kimi")))
    assert not (tmp_path / "out").exists()


def test_a_replaced_or_damaged_shard_is_refused_naming_the_file(inputs, tmp_path):
    glm = inputs["runs"][0]
    first, second = sorted(glm.glob("records-*.parquet"))[:2]
    original = first.read_bytes()
    first.write_bytes(second.read_bytes())  # another chunk's file copied over it
    with pytest.raises(RefusedError, match=first.name):
        build_release(BuildOptions(inputs["runs"], inputs["manifest"], tmp_path / "out"))
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    first.write_bytes(bytes(damaged))
    with pytest.raises(RefusedError, match=first.name):
        build_release(BuildOptions(inputs["runs"], inputs["manifest"], tmp_path / "out"))


def test_missing_images_are_reported(inputs, tmp_path, capsys):
    glm = inputs["runs"][0]
    last = sorted(glm.glob("commit-*.json"))[-1]
    last.unlink()  # a chunk not (yet) committed: its files stay and do not count
    for path in glm.glob(last.name.replace("commit-", "*-").replace(".json", ".parquet")):
        path.unlink()
    out = tmp_path / "out"
    args = [
        "build",
        "--shards",
        *map(str, inputs["runs"]),
        "--manifest",
        str(inputs["manifest"]),
        "--out",
        str(out),
    ]
    assert cli(args) == 0
    printed = capsys.readouterr().out
    assert f"{glm} covers 5 fewer image(s)" in printed
    assert json.loads((out / "stats.json").read_text())["inputs"]["runs"][0]["images_missing"] == 5
    assert "| 5 |" in (out / "README.md").read_text()


def test_out_must_be_empty_absent_or_ours_and_a_rebuild_replaces_it_whole(inputs, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.md").write_text("my notes")
    (notes / "data.csv").write_text("1,2")
    with pytest.raises(RefusedError, match="not a release"):
        build_release(BuildOptions(inputs["runs"], inputs["manifest"], notes))
    assert (notes / "README.md").read_text() == "my notes" and (notes / "data.csv").is_file()

    out = tmp_path / "imagenet_think"
    build_release(BuildOptions(inputs["runs"], inputs["manifest"], out))
    assert {"glm", "kimi", "both"} <= set(json.loads((out / MARKER).read_text())["configs"])
    build_release(
        BuildOptions(inputs["runs"][:1], inputs["manifest"], out)
    )  # fewer annotators: no stale config survives
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["glm"]
    assert cli(["push", str(out), "--repo-id", "org/imagenet-think", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "glm/train-" in listed and "kimi/" not in listed and "both/" not in listed

    (out / "mine.txt").write_text("a file the user put there")
    with pytest.raises(RefusedError, match="mine.txt"):
        build_release(BuildOptions(inputs["runs"], inputs["manifest"], out))
    assert (out / "mine.txt").is_file()
    assert not any(p.name.startswith(".imagenet_think.") for p in tmp_path.iterdir())


def test_stats_and_push_refuse_what_is_not_a_release(inputs, tmp_path, capsys):
    folder = tmp_path / "not-a-release"
    folder.mkdir()
    for args in (["stats", str(folder)], ["stats", str(folder), "--annotators", "glm"]):
        with pytest.raises(MissingInputError, match="not a release"):
            cli(args)
    out = tmp_path / "imagenet_think"
    build_release(BuildOptions(inputs["runs"], inputs["manifest"], out))
    with pytest.raises(ValueError, match="no config kimii"):
        cli(["stats", str(out), "--annotators", "kimii"])
    with pytest.raises(ValueError, match="not a valid dataset repository id"):
        cli(["push", str(out), "--repo-id", "not a valid/repo id", "--dry-run"])
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    dry = subprocess.run(
        [sys.executable, "-m", "imagenet_think_cli", "push", str(out), "--repo-id", "org/x", "--dry-run"],
        env={**env, "HF_HOME": str(tmp_path / "hf")},
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert dry.returncode == 0 and "token: none found" in dry.stdout
    shard = next((out / "glm").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes() + b"x")  # edited after the build
    with pytest.raises(RefusedError, match=shard.name):
        cli(["push", str(out), "--repo-id", "org/x", "--dry-run"])


# SIGKILL the build when it enters a function for the n-th time (a profile hook in the build's process).
KILL_POINTS = [
    ("write", 3),  # mid-way through the Parquet files
    ("_record_split", 4),  # some configs and splits finished
    ("render_card", 1),  # every Parquet file and stats.json written
    ("_write_marker", 1),  # the card written
    ("swap_in", 1),  # the new release complete in staging, not yet swapped
]
# A fresh interpreter imports the build once, then forks one build per line "TARGET COUNT" it reads and
# prints how that build ended (forked from a process that has started no thread: safe).
FORKING_BUILDER = """
import os, signal, sys, traceback
from release.build import BuildOptions, build_release
runs, manifest, out = sys.argv[1:-2], sys.argv[-2], sys.argv[-1]
for line in sys.stdin:
    target, count = line.split()
    pid = os.fork()
    if pid == 0:
        seen = 0
        def hook(frame, event, arg):
            global seen
            if event == "call" and frame.f_code.co_name == target:
                seen += 1
                if seen == int(count):
                    os.kill(os.getpid(), signal.SIGKILL)
        sys.setprofile(hook)
        try:
            build_release(BuildOptions(runs, manifest, out, max_shard_bytes=2000, rows_per_group=2))
        except BaseException:
            traceback.print_exc()  # the build failed before its kill point: say why
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    print(f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}", flush=True)
"""


def test_a_build_killed_at_any_moment_leaves_the_previous_release(inputs, tmp_path):
    out = tmp_path / "imagenet_think"
    build_release(BuildOptions(inputs["runs"][:1], inputs["manifest"], out))  # the good release: glm only
    before, marker = _ids(out), (out / MARKER).read_bytes()
    builder = subprocess.Popen(
        [sys.executable, "-c", FORKING_BUILDER, *map(str, inputs["runs"]), str(inputs["manifest"]), str(out)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for target, count in KILL_POINTS:
            builder.stdin.write(f"{target} {count}\n")
            builder.stdin.flush()
            assert builder.stdout.readline() == f"signal {signal.SIGKILL.value}\n", target
            assert (out / MARKER).read_bytes() == marker, target
            assert _ids(out) == before, target
            assert (tmp_path / ".imagenet_think.imagenet-think-staging").is_dir(), (
                target
            )  # for the next build
    finally:
        builder.stdin.close()
        builder.wait(timeout=60)
    build_release(BuildOptions(inputs["runs"], inputs["manifest"], out))
    assert not (tmp_path / ".imagenet_think.imagenet-think-staging").exists()
    after = _ids(out)
    assert set(after) == {"glm", "kimi", "both"} and after["glm"] == before["glm"]
    assert datasets.load_dataset(str(out), "both", split="train").num_rows > 0
    assert all(pq.ParquetFile(p).metadata.num_rows for p in out.rglob("*.parquet"))
