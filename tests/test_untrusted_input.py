"""Data the toolkit did not write is untrusted: a release (someone's Hub dataset) and a manifest
(concatenated, edited by hand). Rows whose fields would become paths outside their folder, or
that name no class, or repeat an image, are refused in one line before a file is written, before
``run.json`` and before an engine starts (generation.row_checks)."""

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generation.records import ManifestEntry, read_manifest, write_manifest
from generation.row_checks import read_checked_manifest
from imagenet_think_cli import main as cli
from imagenet_think_errors import InputError, UsageError
from tests.fixtures.image_trees import TREE_WNIDS, write_sampling_tree
from tests.fixtures.small_release import two_annotator_release
from training.data import load_split

REPO = Path(__file__).resolve().parent.parent
TINY_GLM = REPO / "configs" / "generation" / "tiny_glm.yaml"
EVAL_GENERATE = ["eval", "generate", "--model", "configs/models/tiny_baseline.yaml", "--split", "test"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A manifest of 3 classes x 4 images, glm and kimi runs of it, and their release."""
    return two_annotator_release(tmp_path_factory.mktemp("untrusted"), classes=3, seed=3)


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if not path.is_dir()}


def planted(built: Path, folder: Path, change) -> Path:
    """A copy of the release whose ``both`` test rows are ``change(rows)``, as a publisher could
    write it (no release.json to vouch for it)."""
    shutil.copytree(built / "release", folder)
    (folder / "release.json").unlink()
    (shard,) = (folder / "both").glob("test-*.parquet")
    table = pq.read_table(shard)
    rows = table.to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    return folder


def set_field(row: int, **values):
    def change(rows):
        if row == 0 and "image" in values:
            values["image"] = {**rows[0]["image"], **values["image"]}
        rows[row].update(values)

    return change


@pytest.mark.parametrize(
    "change, refusal",
    [
        (
            set_field(0, image_id="../../../escaped"),
            r"image_id '\.\./\.\./\.\./escaped' is not a plain file name",
        ),
        # An id ending in "/" with an image path "x.bashrc" names the file ".bashrc" three folders up.
        (
            set_field(0, image_id="../../../", image={"path": "x.bashrc"}),
            r"image_id '\.\./\.\./\.\./' is not a plain file name",
        ),
        (
            set_field(0, wnid="../../.."),
            r"wnid '\.\./\.\./\.\.' is not one of the 10,450 ImageNet-21K-P classes",
        ),
        (set_field(0, image_id=""), "image_id '' is empty"),
        (set_field(0, image_id="a\\..\\b"), r"image_id 'a\\\\\.\.\\\\b' is not a plain file name"),
    ],
    ids=["dot-dot", "trailing-slash", "wnid", "empty", "backslash"],
)
def test_a_release_row_that_names_a_path_outside_out_is_refused_and_nothing_is_written_outside(
    built, tmp_path, change, refusal
):
    release = planted(built, tmp_path / "release", change)
    out = tmp_path / "a" / "b" / "out"  # ../../../ from out/images/<wnid> is tmp_path/a/b
    before = files_under(tmp_path)
    with pytest.raises(
        InputError, match=rf"release {release}, split test, row 0: {refusal}.*; this release cannot"
    ):
        cli([*EVAL_GENERATE, "--dataset", str(release), "--out", str(out)])
    assert {path for path in files_under(tmp_path) - before if not path.is_relative_to(out)} == set()
    assert not list(tmp_path.rglob(".bashrc")) and not list(tmp_path.rglob("escaped*"))
    assert not (out / "eval.json").exists() and not (out / "manifest.parquet").exists()


def test_release_image_bytes_are_decoded_before_they_are_written(built, tmp_path):
    script = b"#!/bin/sh\necho hello\n"
    release = planted(built, tmp_path / "release", set_field(1, image={"bytes": script, "path": "x.sh"}))
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"split test, row 1: its image cannot be decoded \(not_an_image"):
        cli([*EVAL_GENERATE, "--dataset", str(release), "--out", str(out)])
    assert all(path.read_bytes() != script for path in files_under(out))
    assert not list(out.rglob("*.sh"))


def test_a_release_split_that_repeats_an_image_is_refused_before_eval_json(built, tmp_path):
    def repeat(rows):
        rows[2]["image_id"] = rows[0]["image_id"]

    release = planted(built, tmp_path / "release", repeat)
    out = tmp_path / "out"
    image_id = pq.read_table(next((release / "both").glob("test-*.parquet")))["image_id"][0].as_py()
    with pytest.raises(
        InputError, match=rf"split test: image_id '{image_id}' is in rows 0 and 2; each image"
    ):
        cli([*EVAL_GENERATE, "--dataset", str(release), "--out", str(out)])
    assert not (out / "eval.json").exists() and not (out / "manifest.parquet").exists()


def test_a_link_in_the_predictions_folder_is_not_followed_out_of_it(built, tmp_path):
    wnid = pq.read_table(next((built / "release" / "both").glob("test-*.parquet")))["wnid"][0].as_py()
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "images").mkdir(parents=True)
    (out / "images" / wnid).symlink_to(elsewhere)
    with pytest.raises(
        InputError, match=rf"row 0: {wnid}/.* resolves to {elsewhere}/.*, outside .*remove that link"
    ):
        cli([*EVAL_GENERATE, "--dataset", str(built / "release"), "--out", str(out)])
    assert not list(elsewhere.iterdir())


# ------------------------------------------------------------------------------------------------
# Manifests: checked by generate, build and eval generate before run.json and before any engine


def edited_manifest(built: Path, path: Path, change) -> Path:
    table, root = read_manifest(built / "manifest.parquet")
    rows = table.to_pylist()
    change(rows)
    return write_manifest([ManifestEntry(**row) for row in rows], path, root)


def concatenated(rows):
    rows.extend([dict(row) for row in rows[:2]])  # the first two images again, as rows 12 and 13


def unknown_wnid(rows):
    for row in (3, 5):
        rows[row]["wnid"] = "n99999999"


def path_outside(rows):
    rows[4]["image_path"] = "../outside.JPEG"


MANIFEST_CASES = [
    (
        concatenated,
        r"image_id '(n\d+_1)' is in rows 0 and 12 \(2 rows repeat an image_id in all\); each image",
    ),
    (unknown_wnid, r": wnid 'n99999999' is not one of the 10,450 ImageNet-21K-P classes \(rows 3, 5\); "),
    (path_outside, r", row 4: image_path '\.\./outside\.JPEG' leaves its image root"),
]
MANIFEST_IDS = ["duplicate", "unknown-wnid", "path-outside"]


@pytest.mark.parametrize("change, refusal", MANIFEST_CASES, ids=MANIFEST_IDS)
def test_generate_refuses_a_bad_manifest_before_run_json_and_the_engine(built, tmp_path, change, refusal):
    manifest = edited_manifest(built, tmp_path / "manifest.parquet", change)
    out = tmp_path / "run"
    with pytest.raises(InputError, match=rf"^manifest {manifest}.*{refusal}") as refused:
        cli(["generate", "--config", str(TINY_GLM), "--manifest", str(manifest), "--out", str(out)])
    assert "\n" not in str(refused.value)
    assert not out.exists()  # no run.json: the check comes before the run folder is claimed


@pytest.mark.parametrize("change, refusal", MANIFEST_CASES, ids=MANIFEST_IDS)
def test_build_refuses_a_bad_manifest_in_the_same_line(built, tmp_path, change, refusal):
    manifest = edited_manifest(built, tmp_path / "manifest.parquet", change)
    out = tmp_path / "release"
    shards = [str(built / "glm"), str(built / "kimi")]
    with pytest.raises(InputError, match=rf"^manifest {manifest}.*{refusal}") as refused:
        cli(
            [
                "build",
                "--shards",
                *shards,
                "--manifest",
                str(manifest),
                "--out",
                str(out),
                "--allow-other-manifest",
            ]
        )
    assert "\n" not in str(refused.value)
    assert not out.exists()


def test_sample_refuses_a_listed_path_outside_the_image_root(tmp_path):
    """`sample` writes only manifests that generate accepts: a list file's `../` or absolute path
    outside the image root is refused naming the line (and, for absolute paths, the root that
    holds them all); with that root, absolute paths under it become relative."""
    a, b = TREE_WNIDS[:2]
    write_sampling_tree(tmp_path / "images", 2, odd_files=False)
    listed = tmp_path / "lists" / "list.txt"
    listed.parent.mkdir()
    out = tmp_path / "manifest.parquet"
    sample = ["sample", "--source", str(listed), "--out", str(out), "--min-per-class", "1", "--workers", "1"]
    listed.write_text(f"{a}/{a}_00000.JPEG\n../images/{a}/{a}_00001.JPEG\n")
    with pytest.raises(
        UsageError,
        match=rf"^line 2 of {listed}: '\.\./images/{a}/{a}_00001\.JPEG' is not under the image root {listed.parent}; list each path relative to the image root, or absolute under it$",
    ):
        cli(sample)
    listed.write_text(f"{tmp_path}/images/{a}/{a}_00000.JPEG\n{tmp_path}/images/{b}/{b}_00000.JPEG\n")
    with pytest.raises(
        UsageError,
        match=rf"^line 1 of {listed}: .* \(2 lines are not\); .*, or pass --image-root {tmp_path}$",
    ):
        cli(sample)
    assert not out.exists()
    assert cli([*sample, "--image-root", str(tmp_path)]) == 0
    table, root = read_checked_manifest(out)
    assert root == tmp_path and sorted(table["image_path"].to_pylist()) == [
        f"images/{a}/{a}_00000.JPEG",
        f"images/{b}/{b}_00000.JPEG",
    ]


def test_build_refuses_a_run_whose_annotator_would_name_a_folder_outside_the_release(built, tmp_path):
    """A run folder can come from elsewhere too: its annotator names a folder of the release."""
    run = tmp_path / "runs" / "glm"
    shutil.copytree(built / "glm", run)
    spec = json.loads((run / "run.json").read_text())
    spec["config"]["annotator"] = "../../../escaped"
    (run / "run.json").write_text(json.dumps(spec))
    out = tmp_path / "a" / "b" / "release"
    before = files_under(tmp_path)
    with pytest.raises(
        InputError, match=r"run\.json: annotator '\.\./\.\./\.\./escaped' must be an identifier"
    ):
        cli(["build", "--shards", str(run), "--manifest", str(built / "manifest.parquet"), "--out", str(out)])
    assert not out.exists() and not list(tmp_path.rglob("escaped")) and files_under(tmp_path) == before


def test_training_refuses_a_release_row_whose_class_is_unknown(built, tmp_path):
    """The GRPO label reward judges answers against the row's wnid: a release row naming no class
    is refused when the split loads, not after the first steps."""
    release = shutil.copytree(built / "release", tmp_path / "release")
    (release / "release.json").unlink()  # a publisher's release, with no marker to vouch for it
    (shard, *_) = sorted((release / "glm").glob("train-*.parquet"))
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[1]["wnid"] = "n99999999"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    refusal = (
        rf"^dataset_name {release}, glm train: wnid 'n99999999' is not one of .* \(row 1\); this release"
    )
    with pytest.raises(InputError, match=refusal):
        load_split(str(release), "glm", "train")
