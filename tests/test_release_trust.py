"""What a release's readers trust: the release as built (checksums in release.json), a hand-edited
card, write failures of the build, and what a published release names."""

import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from imagenet_think_cli import main as cli
from imagenet_think_errors import RefusedError, UsageError
from release.build import BuildOptions, build_release
from release.folder import MARKER, listed_files
from tests.fixtures.small_release import small_inputs

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def inputs(tmp_path):
    return small_inputs(tmp_path)


@pytest.fixture
def release(inputs, tmp_path):
    out = tmp_path / "imagenet_think"
    build_release(
        BuildOptions(inputs["runs"], inputs["manifest"], out, max_shard_bytes=2000, rows_per_group=2)
    )
    return out


def _readers(out: Path) -> list:
    """Every reader of a release folder, as a call that reads it."""
    from training.data import load_split

    return [
        lambda: cli(["stats", str(out)]),
        lambda: cli(["push", str(out), "--repo-id", "org/x", "--dry-run"]),
        lambda: load_split(str(out), "glm", "train"),
    ]


def test_release_json_lists_each_file_with_the_sha256_of_its_bytes(release):
    marker = json.loads((release / MARKER).read_text())
    on_disk = sorted(
        p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file() and p.name != MARKER
    )
    assert sorted(marker["files"]) == on_disk and len(on_disk) > 6  # several shards per config
    for name, entry in marker["files"].items():
        data = (release / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name


def test_every_reader_refuses_a_shard_missing_truncated_changed_or_a_stray_copy(release, capsys):
    shard = sorted((release / "glm").glob("train-*.parquet"))[0]
    original = shard.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF  # same size, other bytes: only the sha256 tells
    stray = shard.with_name("train-00000-of-00001 (copy).parquet")
    faults = {
        "is missing": lambda: shard.unlink(),
        "is truncated": lambda: shard.write_bytes(original[: len(original) // 2]),
        "was changed since the build": lambda: shard.write_bytes(bytes(flipped)),
        "is not a file of the release": lambda: stray.write_bytes(original),
    }
    for problem, fault in faults.items():
        fault()
        named = stray if "not a file" in problem else shard
        for read in _readers(release):
            with pytest.raises(RefusedError, match=problem) as refused:
                read()
            assert str(named) in str(refused.value) and "\n" not in str(refused.value)
        stray.unlink(missing_ok=True)
        shard.write_bytes(original)
    capsys.readouterr()
    assert cli(["stats", str(release)]) == 0  # restored: read again
    # From the command line: one line naming the file, exit 1.
    shard.write_bytes(bytes(flipped))
    printed = subprocess.run(
        [sys.executable, "-m", "imagenet_think_cli", "stats", str(release)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert printed.returncode == 1 and printed.stderr.count("\n") == 1, printed.stderr
    assert str(shard) in printed.stderr and "Traceback" not in printed.stderr


def test_evaluation_reads_the_references_as_built(release):
    from eval.predict import load_references

    assert len(load_references(str(release), "train")) > 0
    shard = sorted((release / "both").glob("train-*.parquet"))[0]
    flipped = bytearray(shard.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    with pytest.raises(RefusedError, match="was changed since the build") as refused:
        load_references(str(release), "train")
    assert str(shard) in str(refused.value)


def test_a_release_without_checksums_is_refused_by_readers_and_rebuilt(inputs, release):
    marker = json.loads((release / MARKER).read_text())  # as release.json was before checksums
    marker["files"] = {name: entry["bytes"] for name, entry in marker["files"].items()}
    marker["format_version"] = 1
    (release / MARKER).write_text(json.dumps(marker))
    with pytest.raises(RefusedError, match="lists no checksums"):
        cli(["stats", str(release)])
    build_release(BuildOptions(inputs["runs"], inputs["manifest"], release))  # a rebuild replaces it
    assert cli(["stats", str(release)]) == 0


def test_a_rebuild_over_a_hand_edited_card_is_refused_without_force_and_keeps_the_edit(
    inputs, release, capsys
):
    card = release / "README.md"
    edited = card.read_text() + "\nMy notes about this release.\n"
    card.write_text(edited)
    args = ["build", "--shards", *map(str, inputs["runs"]), "--manifest", str(inputs["manifest"])]
    with pytest.raises(RefusedError, match="edited since the build") as refused:
        cli([*args, "--out", str(release)])
    assert "--force" in str(refused.value) and card.read_text() == edited
    assert cli([*args, "--out", str(release), "--force"]) == 0
    kept = release.parent / "imagenet_think.README.edited.md"
    assert kept.read_text() == edited and "My notes" not in card.read_text()
    assert f"kept as {kept}" in capsys.readouterr().out
    assert cli([*args, "--out", str(release)]) == 0  # the card is the build's again: no refusal
    shutil.rmtree(release)


# A file-size limit (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a write past it fails with EFBIG) and,
# where user namespaces allow it, a small tmpfs (ENOSPC): the CLI in a child process.
LIMITED = """
import resource, sys
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from imagenet_think_cli import main
sys.argv = ["imagenet-think", *sys.argv[2:]]
sys.exit(main())
"""


def _cli_with_file_limit(limit: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LIMITED, str(limit), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "imagenet-think" in line or "Traceback" in line]


def test_a_build_past_a_file_size_limit_is_one_line_and_leaves_no_staging(inputs, tmp_path):
    out = tmp_path / "imagenet_think"
    build_release(BuildOptions(inputs["runs"][:1], inputs["manifest"], out))
    marker = (out / MARKER).read_bytes()
    args = ["build", "--shards", *map(str, inputs["runs"]), "--manifest", str(inputs["manifest"])]
    child = _cli_with_file_limit(200_000, *args, "--out", str(out))  # room for the record cache, not a shard
    assert child.returncode == 1, child.stderr[-3000:]
    assert _error_lines(child.stderr) == [
        f"imagenet-think build: error: cannot write {tmp_path}/.imagenet_think.imagenet-think-staging/"
        "glm/.train-00000.partial.parquet: File too large; free space (or raise the file-size limit), then "
        "build again; the previous release is unchanged"
    ]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left
    assert (out / MARKER).read_bytes() == marker and cli(["stats", str(out)]) == 0
    # The record cache (in TMPDIR) past the limit is named as such, not as an unreadable record file.
    child = _cli_with_file_limit(5_000, *args, "--out", str(out))
    assert child.returncode == 1 and "Traceback" not in child.stderr
    [line] = _error_lines(child.stderr)
    assert "cannot write the build's record cache" in line and "File too large; free space there" in line


def _can_mount_tmpfs() -> bool:
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not shutil.which("unshare") or not _can_mount_tmpfs(), reason="no user namespaces to mount a tmpfs"
)
def test_a_build_on_a_full_disk_is_one_line_and_keeps_the_previous_release(inputs, tmp_path):
    first = tmp_path / "first"
    build_release(BuildOptions(inputs["runs"][:1], inputs["manifest"], first))  # glm only: about 0.45 MB
    disk = tmp_path / "disk"
    disk.mkdir()
    args = ["build", "--shards", *map(str, inputs["runs"]), "--manifest", str(inputs["manifest"])]
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {disk} && cp -r {first} {disk}/rel && "
        f"{sys.executable} -c '{LIMITED}' 0 {' '.join(args)} --out {disk}/rel; echo status=$?; "
        f"ls -A {disk}; {sys.executable} -m imagenet_think_cli stats {disk}/rel > /dev/null && echo stats=ok"
    )
    child = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    [line] = _error_lines(child.stderr)
    assert line.startswith(f"imagenet-think build: error: cannot write {disk}/.rel.imagenet-think-staging/")
    assert ": No space left on device; free space" in line
    assert child.stdout.split() == ["status=1", "rel", "stats=ok"]  # no staging left; the release reads


def test_published_files_name_inputs_relative_to_the_release_or_by_fingerprint(inputs, tmp_path):
    bench = tmp_path / "bench"  # a --reference collection holding one of the release's images
    bench.mkdir()
    shutil.copy(tmp_path / "images" / inputs["entries"][0].image_path, bench)
    for out, runs, manifest in (
        (tmp_path / "imagenet_think", ["runs/glm", "runs/kimi"], "manifest.parquet"),  # inputs beside it
        (tmp_path / "elsewhere" / "imagenet_think", ["glm", "kimi"], "manifest.parquet"),  # outside
    ):
        build_release(BuildOptions(inputs["runs"], inputs["manifest"], out, reference=tmp_path / "bench"))
        assert json.loads((out / "stats.json").read_text())["near_duplicates"]["reference"]["path"] == "bench"
        for name in ("README.md", MARKER, "stats.json"):
            text = (out / name).read_text()
            assert str(tmp_path) not in text and "/tmp/" not in text, name
        for name in (MARKER, "stats.json"):
            published = json.loads((out / name).read_text())["inputs"]
            assert [run["path"] for run in published["runs"]] == runs
            assert published["manifest"]["path"] == manifest and len(published["manifest"]["sha256"]) == 64
        assert f"| `glm` | `{runs[0]}` |" in (out / "README.md").read_text()
        details = [
            d
            for p in (out / "rejected").glob("*.parquet")
            for d in pq.read_table(p)["reject_detail"].to_pylist()
        ]
        assert len(details) == 2 and all("of the reference collection bench" in d for d in details)
        assert not any(str(tmp_path) in d for d in details)


def _card(out: Path) -> tuple[dict, str]:
    from huggingface_hub import RepoCard

    card = RepoCard.load(out / "README.md")
    return card.data.to_dict(), card.text


def test_the_card_declares_imagenets_terms_and_gates_access_or_the_licence_given(
    inputs, release, tmp_path, capsys
):
    from huggingface_hub import HfApi

    from release.push import gated, resumable, upload_arguments

    metadata, text = _card(release)
    assert metadata["license"] == "other" and metadata["license_name"] == "imagenet"
    assert metadata["license_link"] == "https://image-net.org/download.php"
    assert "non-commercial research and educational" in metadata["extra_gated_prompt"]
    assert "checkbox" in metadata["extra_gated_fields"].values()
    assert {"Name", "Affiliation", "Country"} <= set(metadata["extra_gated_fields"])
    assert "[ImageNet terms of access](https://image-net.org/download.php)" in text
    assert "[`synthetic/glm`](https://huggingface.co/synthetic/glm)" in text  # the annotators' own licences
    assert "CC BY 4.0" not in text
    assert cli(["push", str(release), "--repo-id", "org/x", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "access: gated" in printed and "upload: in resumable batches" in printed
    # What the push would call, checked against the installed huggingface_hub.
    files = [path for path, _ in listed_files(release)]
    assert sorted(files) == sorted([MARKER, *json.loads((release / MARKER).read_text())["files"]])
    assert all(f"  {path}\n" in printed for path in files)  # the dry run lists them
    arguments = upload_arguments(release, "org/x", files, None)
    inspect.signature(HfApi.upload_folder).bind(HfApi(), **arguments)
    inspect.signature(HfApi.update_repo_settings).bind(HfApi(), "org/x", gated="auto", repo_type="dataset")
    assert arguments["allow_patterns"] == files and arguments["repo_type"] == "dataset"
    assert resumable() and gated(release)
    # A user's own images under another licence: the card says so, and nothing is gated.
    own = tmp_path / "own"
    build_release(BuildOptions(inputs["runs"], inputs["manifest"], own, license="cc-by-4.0"))
    metadata, text = _card(own)
    assert metadata["license"] == "cc-by-4.0" and "extra_gated_fields" not in metadata and not gated(own)
    assert "declared its images to be under `cc-by-4.0`" in text
    for wrong in ("other", "CC BY 4.0"):
        with pytest.raises(UsageError, match="--license"):
            build_release(BuildOptions(inputs["runs"], inputs["manifest"], tmp_path / "never", license=wrong))
    assert not (tmp_path / "never").exists()
