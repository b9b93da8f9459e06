"""``imagenet-think sample``: inclusion checks, image normalization, the sampling rule, sources, CLI,
and its integrity: odd entries are rejects, dropped classes are recorded, an empty result is an error."""

import argparse
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import imagenet_think_cli
from generation.images import ImageRejected, check_image, load_rgb
from generation.records import read_manifest
from generation.sample import SampleOptions, SamplingRule, add_arguments, rejects_path, run, sample_images
from imagenet_think_errors import InputError, MissingInputError, UsageError
from tests.fixtures.image_trees import (
    BLUE,
    RED,
    TREE_WNIDS,
    UNKNOWN_WNID,
    png_declaring,
    write_odd_entries,
    write_sampling_tree,
)

CHECK_ALL = SamplingRule(min_per_class=1, max_per_class=None, budget=None)
A, B, C = TREE_WNIDS


def sample(source, rule=CHECK_ALL, **options):
    return sample_images(SampleOptions(source, workers=1, **asdict(rule), **options), progress=False)


def reasons_by_path(result):
    return {reject.image_path: reject.reason for reject in result.rejects}


def per_class(result):
    return Counter(entry.wnid for entry in result.entries)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_sampling_tree(tmp_path_factory.mktemp("tree"), unknown_class=True)


@pytest.fixture(scope="module")
def sampled(tree):
    return sample(tree.root)


def test_each_bad_file_is_rejected_with_its_reason(tree, sampled):
    expected = {file.path: file.reason for file in tree.bad()} | dict.fromkeys(
        tree.unknown_folders, "unknown_class"
    )
    assert tree.unknown_folders == (UNKNOWN_WNID,)
    assert reasons_by_path(sampled) == expected
    assert {reject.stage for reject in sampled.rejects} == {"sample"}


def test_every_good_image_is_kept_with_its_upright_size(tree, sampled):
    kept = {entry.image_path: (entry.width, entry.height) for entry in sampled.entries}
    assert kept == {file.path: file.size for file in tree.good()}
    assert {tree.by_kind(kind).path for kind in ("cmyk", "gray16", "palette", "exif6", "gray")} <= kept.keys()
    assert [(e.wnid, e.image_id) for e in sampled.entries] == sorted(
        (e.wnid, e.image_id) for e in sampled.entries
    )


def test_plain_rgb_marks_what_a_release_stores_unchanged(tree, sampled):
    plain = {entry.image_path: entry.plain_rgb for entry in sampled.entries}
    assert all(plain[file.path] for file in tree.good() if file.kind == "good")  # RGB JPEGs
    assert not any(plain[tree.by_kind(kind).path] for kind in ("cmyk", "gray16", "palette", "exif6", "gray"))


def test_the_duplicate_names_the_first_copy_by_path(tree, sampled):
    copy = next(reject for reject in sampled.rejects if reject.reason == "duplicate")
    original = f"{A}/{A}_00000.JPEG"
    assert copy.image_path == tree.by_kind("duplicate").path
    assert copy.detail == f"same bytes as {original}"
    assert original in {entry.image_path for entry in sampled.entries}


def test_any_classes_keeps_folders_that_are_not_imagenet_classes(tree):
    result = sample(tree.root, any_classes=True)
    assert per_class(result)[UNKNOWN_WNID] == 2
    assert "unknown_class" not in reasons_by_path(result).values()


def test_manifest_size_is_what_load_rgb_gives(tree, sampled):
    for entry in sampled.entries:
        image = load_rgb(tree.root / entry.image_path)
        assert (image.mode, image.size) == ("RGB", (entry.width, entry.height))


def pixels(tree, kind):
    return np.asarray(load_rgb(tree.root / tree.by_kind(kind).path)).astype(int)


def test_load_rgb_converts_cmyk(tree):
    assert np.abs(pixels(tree, "cmyk") - RED).max() <= 8


def test_load_rgb_scales_16_bit_to_8_bit(tree):
    assert np.unique(pixels(tree, "gray16")).tolist() == [128]


def test_load_rgb_composites_palette_transparency_on_white(tree):
    image = pixels(tree, "palette")
    assert image[:, :128].tolist() == np.full((240, 128, 3), 255).tolist()
    assert np.all(image[:, 128:] == RED)


def test_load_rgb_applies_exif_orientation(tree):
    image = pixels(tree, "exif6")  # stored with red on top; orientation 6 turns it clockwise
    assert image.shape == (320, 240, 3)
    assert np.abs(image[160, 200] - RED).max() <= 8
    assert np.abs(image[160, 40] - BLUE).max() <= 8


def test_load_rgb_makes_greyscale_rgb(tree):
    image = pixels(tree, "gray")
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])


def test_check_image_rejects_bombs_before_decoding():
    with pytest.raises(ImageRejected) as over_pil_limit:
        check_image(png_declaring(100_000, 100_000))
    assert over_pil_limit.value.reason == "decompression_bomb"
    with pytest.raises(ImageRejected) as over_our_limit:
        check_image(png_declaring(400, 400), max_pixels=300 * 300)  # its pixel data is missing: never decoded
    assert over_our_limit.value.reason == "decompression_bomb"


def test_check_image_min_side_is_configurable(tree):
    data = (tree.root / tree.by_kind("small").path).read_bytes()  # 300x200
    assert check_image(data, min_side=200)[:2] == (300, 200)
    with pytest.raises(ImageRejected, match="too_small"):
        check_image(data, min_side=201)


def test_same_seed_same_sample_whatever_the_workers(tmp_path):
    tree = write_sampling_tree(tmp_path, 8)
    rule = SamplingRule(min_per_class=1, max_per_class=3, budget=None, seed=5)
    one = sample(tree.root, rule)
    assert one == sample(tree.root, rule)
    two = sample_images(SampleOptions(tree.root, workers=2, **asdict(rule)), progress=False)
    assert (two.entries, two.rejects) == (one.entries, one.rejects)
    other_seed = sample(tree.root, SamplingRule(min_per_class=1, max_per_class=3, budget=None, seed=6))
    assert other_seed.entries != one.entries
    assert per_class(other_seed) == per_class(one) == dict.fromkeys(TREE_WNIDS, 3)


def test_quotas_water_fill_the_budget():
    rule = SamplingRule(min_per_class=1, max_per_class=8, budget=12)
    assert rule.quotas({A: 2, B: 5, C: 9}) == {A: 2, B: 5, C: 5}
    assert sorted(SamplingRule(1, None, 10).quotas({A: 9, B: 9, C: 9}).values()) == [3, 3, 4]
    assert SamplingRule(1, 4, None).quotas({A: 2, B: 9}) == {A: 2, B: 4}
    assert SamplingRule(1, 4, 100).quotas({A: 2, B: 9}) == {A: 2, B: 4}


def test_classes_under_the_minimum_are_dropped_and_the_budget_shared(tmp_path):
    tree = write_sampling_tree(tmp_path, {A: 2, B: 5, C: 9}, odd_files=False)
    result = sample(tree.root, SamplingRule(min_per_class=3, max_per_class=8, budget=12))
    assert per_class(result) == {B: 5, C: 7}
    assert result.dropped_classes == {A: 2}
    dropped = [reject for reject in result.rejects if reject.reason == "class_too_small"]
    assert sorted(reject.image_path for reject in dropped) == [f"{A}/{A}_{i:05d}.JPEG" for i in range(2)]
    assert {reject.detail for reject in dropped} == {
        f"class {A} has 2 files, fewer than --min-per-class 3; not checked"
    }


def test_a_class_short_of_good_images_is_dropped_after_checking_and_its_budget_shared(tmp_path):
    tree = write_sampling_tree(tmp_path, {A: 2, B: 6}, odd_files=False)
    (tree.root / A / f"{A}_empty.JPEG").write_bytes(b"")
    result = sample(tree.root, SamplingRule(min_per_class=3, max_per_class=None, budget=6))
    assert per_class(result) == {B: 6}
    assert result.dropped_classes == {A: 2}
    assert sorted(reasons_by_path(result).values()) == ["class_too_small", "class_too_small", "empty_file"]


def test_a_budget_below_the_minimum_is_an_error(tmp_path):
    tree = write_sampling_tree(tmp_path, 4, odd_files=False)
    with pytest.raises(UsageError, match="budget"):
        sample(tree.root, SamplingRule(min_per_class=3, max_per_class=None, budget=8))


@pytest.mark.parametrize("seed", range(4))
def test_classes_refill_what_duplicates_took(tree, seed):
    result = sample(tree.root, SamplingRule(min_per_class=1, max_per_class=4, budget=None, seed=seed))
    assert per_class(result) == dict.fromkeys(TREE_WNIDS, 4)
    assert len({entry.sha256 for entry in result.entries}) == len(result.entries)


def test_split_folders_are_read_and_merged(tmp_path):
    write_sampling_tree(tmp_path, 2, split="train", odd_files=False)
    write_sampling_tree(tmp_path, 1, split="val", odd_files=False, first_index=100)
    result = sample(tmp_path)
    assert per_class(result) == dict.fromkeys(TREE_WNIDS, 3)
    assert {entry.image_path.split("/")[0] for entry in result.entries} == {"train", "val"}
    assert f"val/{A}/{A}_00100.JPEG" in {entry.image_path for entry in result.entries}


def test_list_file_source(tmp_path):
    write_sampling_tree(tmp_path / "images", 3, odd_files=False)
    lines = [
        "# path [wnid]",
        f"images/{A}/{A}_00000.JPEG",
        f"images/{A}/{A}_00001.JPEG {A}",
        f"images/{B}/{B}_00000.JPEG\t{B}",
        "",
        f"images/{C}/{C}_00000.JPEG {UNKNOWN_WNID}",
        f"images/{C}/missing.JPEG",
        f"images/{A}/{A}_00001.JPEG {B}",
    ]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    result = sample(tmp_path / "list.txt")
    assert sorted(entry.image_path for entry in result.entries) == [
        f"images/{A}/{A}_00000.JPEG",
        f"images/{A}/{A}_00001.JPEG",
        f"images/{B}/{B}_00000.JPEG",
    ]
    assert reasons_by_path(result) == {
        f"images/{C}/{C}_00000.JPEG": "unknown_class",
        f"images/{C}/missing.JPEG": "missing_file",
        f"images/{C}": "class_too_small",  # its only file is missing: the class row names its folder
    }
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "b.txt").write_text(f"{B}/{B}_00002.JPEG\n")
    rooted = sample(tmp_path / "lists" / "b.txt", image_root=tmp_path / "images")
    assert [entry.image_path for entry in rooted.entries] == [f"{B}/{B}_00002.JPEG"]


def test_cli_writes_manifest_rejects_and_summary(tree, tmp_path, capsys):
    out = tmp_path / "run" / "manifest.parquet"
    argv = ["sample", "--source", str(tree.root), "--out", str(out), "--min-per-class", "1", "--workers", "1"]
    assert imagenet_think_cli.main(argv) == 0
    manifest, root = read_manifest(out)
    assert root == tree.root.resolve()
    assert sorted(manifest.column("image_path").to_pylist()) == sorted(file.path for file in tree.good())
    rejects = pq.read_table(rejects_path(out))
    assert rejects_path(out).name == "manifest.rejects.parquet"
    assert sorted(rejects.column("reason").to_pylist()) == sorted(
        [file.reason for file in tree.bad()] + ["unknown_class"]
    )
    printed = capsys.readouterr().out
    assert f"kept {len(tree.good())} images of 3 classes" in printed
    assert "truncated" in printed and str(out) in printed


def test_files_sharing_a_stem_get_path_ids(tmp_path):
    write_sampling_tree(tmp_path, 2, split="train", odd_files=False)
    write_sampling_tree(tmp_path, 1, split="val", odd_files=False, first_index=100)
    (tmp_path / "val" / A / f"{A}_00100.JPEG").rename(tmp_path / "val" / A / f"{A}_00000.JPEG")  # as in train
    result = sample(tmp_path)
    ids = {entry.image_path: entry.image_id for entry in result.entries}
    assert len(ids) == 9 and len(set(ids.values())) == 9
    assert ids[f"val/{A}/{A}_00000.JPEG"] == f"val__{A}__{A}_00000.JPEG"
    assert ids[f"train/{A}/{A}_00000.JPEG"] == f"train__{A}__{A}_00000.JPEG"
    assert ids[f"train/{A}/{A}_00001.JPEG"] == f"{A}_00001"  # a stem no other file has stays the id


def test_image_ids_that_still_clash_are_an_error():
    from generation.sample import image_ids

    with pytest.raises(ValueError, match="share an image_id"):
        image_ids(["x/a__b.jpg.png", "a/b.jpg", "c/b.jpg"])  # stem "a__b.jpg" = path id of a/b.jpg


def test_a_tree_source_under_the_image_root_lists_only_itself(tmp_path):
    write_sampling_tree(tmp_path, 1, split="train", odd_files=False)
    write_sampling_tree(tmp_path, 1, split="val", odd_files=False, first_index=100)
    result = sample(tmp_path / "train", image_root=tmp_path)
    assert sorted(entry.image_path for entry in result.entries) == [
        f"train/{w}/{w}_00000.JPEG" for w in TREE_WNIDS
    ]
    with pytest.raises(ValueError, match="not under the image root"):
        sample(tmp_path / "train", image_root=tmp_path / "val")


def test_an_rgb_png_with_a_transparent_colour_is_not_stored_as_is(tmp_path):
    from PIL import Image

    path = tmp_path / "keyed.png"
    image = Image.new("RGB", (300, 300), (0, 0, 0))
    image.paste(RED, (150, 0, 300, 300))
    image.save(path, transparency=(0, 0, 0))
    assert check_image(path.read_bytes())[:3] == (
        300,
        300,
        False,
    )  # annotators see white where the bytes hold black
    assert load_rgb(path).getpixel((0, 0)) == (255, 255, 255)


# Integrity: a stage produces exactly what its inputs say, or refuses with the input and the fix.


def cli(*argv):
    """``imagenet-think sample ARGV`` through the subcommand's own parser and ``run``."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(["--workers", "1", *argv]))


def assert_nothing_written(out):
    assert not out.exists() and not rejects_path(out).exists()


def test_defaults_on_a_small_tree_are_an_error_naming_the_largest_class(tmp_path):
    tree = write_sampling_tree(tmp_path / "tree", {A: 3, B: 2, C: 1}, odd_files=False)
    out = tmp_path / "run" / "manifest.parquet"
    with pytest.raises(InputError) as error:
        cli("--source", str(tree.root), "--out", str(out))
    message = str(error.value)
    assert "no class of" in message and "reached --min-per-class 22" in message
    assert f"the largest of its 3 classes had 3 images ({A})" in message
    assert f"lower --min-per-class (to 3 to keep {A})" in message
    assert_nothing_written(out)


def test_an_empty_tree_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden").write_text("not an image")
    out = tmp_path / "manifest.parquet"
    with pytest.raises(MissingInputError, match=r"empty.* holds no images .*expected .*/<wnid>/<image>"):
        cli("--source", str(tmp_path / "empty"), "--out", str(out), "--min-per-class", "1")
    assert_nothing_written(out)


def test_loose_images_without_class_folders_are_an_error(tmp_path):
    tree = write_sampling_tree(tmp_path / "tree", 1, odd_files=False)
    loose = tmp_path / "loose"
    loose.mkdir()
    for file in tree.files:
        (loose / file.path.split("/")[-1]).write_bytes((tree.root / file.path).read_bytes())
    out = tmp_path / "manifest.parquet"
    with pytest.raises(MissingInputError) as error:
        cli("--source", str(loose), "--out", str(out), "--min-per-class", "1")
    assert str(error.value).startswith(f"no class folders under {loose}: expected {loose}/<wnid>/<image>")
    assert "holds 3 files outside class folders: move them into a folder per class" in str(error.value)
    assert_nothing_written(out)


def test_a_list_without_images_is_an_error(tmp_path):
    (tmp_path / "list.txt").write_text("# nothing yet\n\n")
    with pytest.raises(MissingInputError, match="lists no images"):
        sample(tmp_path / "list.txt")


def test_a_tree_of_unknown_classes_is_an_error_that_names_any_classes(tmp_path):
    write_sampling_tree(tmp_path, {UNKNOWN_WNID: 2}, odd_files=False)
    with pytest.raises(
        MissingInputError, match=f"--any-classes keeps.*Rejects: unknown_class 1 \\(e.g. {UNKNOWN_WNID}: "
    ):
        sample(tmp_path)
    assert len(sample(tmp_path, any_classes=True).entries) == 2


def test_a_class_whose_every_file_is_rejected_is_an_error_with_the_reasons(tmp_path):
    tree = write_sampling_tree(tmp_path, {A: 2}, odd_files=False)
    with pytest.raises(InputError, match=r"has a usable image.*--min-side.*Rejects: too_small 2 \(e.g. "):
        sample(tree.root, min_side=400)


def test_dropped_classes_are_in_the_rejects_and_the_summary(tmp_path, capsys):
    tree = write_sampling_tree(tmp_path / "tree", {A: 2, B: 5, C: 3}, odd_files=False)
    for name in ("tiny1.JPEG", "tiny2.JPEG"):  # C: 3 good + 2 bad: checked, then short of 4
        (tree.root / C / f"{C}_{name}").write_bytes(b"")
    (tree.root / "n01537544").mkdir()  # a class folder with no file at all
    for index in range(4):  # every file of n01534433 is rejected for its own reason
        (tree.root / "n01534433" / f"n01534433_{index}.JPEG").parent.mkdir(exist_ok=True)
        (tree.root / "n01534433" / f"n01534433_{index}.JPEG").write_text("text")
    out = tmp_path / "manifest.parquet"
    cli("--source", str(tree.root), "--out", str(out), "--min-per-class", "4", "--budget", "none")
    assert sorted(read_manifest(out)[0].column("wnid").to_pylist()) == [B] * 5
    rejects = pq.read_table(rejects_path(out)).to_pylist()
    too_small = {row["image_path"]: row for row in rejects if row["reason"] == "class_too_small"}
    assert sorted(too_small) == sorted(
        [f"{A}/{A}_00000.JPEG", f"{A}/{A}_00001.JPEG", *(f"{C}/{C}_{i:05d}.JPEG" for i in range(3))]
        + ["n01534433", "n01537544"]
    )
    assert too_small[f"{A}/{A}_00000.JPEG"]["detail"] == (
        f"class {A} has 2 files, fewer than --min-per-class 4; not checked"
    )
    assert too_small[f"{C}/{C}_00000.JPEG"]["detail"] == (
        f"class {C} can reach at most 3 good images (3 good, 2 rejected, 0 unchecked of 5 files), "
        "fewer than --min-per-class 4"
    )
    assert too_small["n01537544"]["image_id"] == "" and "has 0 files" in too_small["n01537544"]["detail"]
    assert "(0 good, 4 rejected, 0 unchecked of 4 files)" in too_small["n01534433"]["detail"]
    printed = capsys.readouterr().out
    assert (
        f"dropped 4 classes under --min-per-class 4 (images each could reach: {A} (2), {C} (3), "
        "n01534433 (0), n01537544 (0)); in the rejects as class_too_small"
    ) in printed


@pytest.mark.timeout(60)
def test_odd_entries_become_rejects_and_the_rest_is_kept(tmp_path, capsys):
    tree = write_sampling_tree(tmp_path / "tree", 2, odd_files=False)
    odd = write_odd_entries(tree.root, tmp_path / "elsewhere", A)
    out = tmp_path / "manifest.parquet"
    cli("--source", str(tree.root), "--out", str(out), "--min-per-class", "1", "--any-classes")
    manifest = read_manifest(out)[0].to_pylist()
    assert sorted(row["image_path"] for row in manifest) == sorted(
        [file.path for file in tree.files] + [file.path for file in odd.kept]
    )
    rejects = pq.read_table(rejects_path(out)).to_pylist()
    assert {row["image_path"]: row["reason"] for row in rejects} == odd.rejected
    detail = {row["image_path"]: row["detail"] for row in rejects}
    assert detail[f"{A}/{A}_fifo.JPEG"] == "a FIFO (named pipe), not a regular file; never opened"
    assert detail[f"{A}/{A}_socket.JPEG"] == "a socket, not a regular file; never opened"
    assert detail[f"{A}/{A}_bad\\xff.JPEG"] == f"the name b'{A}_bad\\xff.JPEG' is not valid UTF-8: rename it"
    assert detail[f"{A}/{A}_dangling.JPEG"].endswith("is a symlink to 'nowhere.JPEG', which does not exist")
    assert "kept 7 images of 3 classes" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_odd_entries_of_a_split_tree_and_without_any_classes(tmp_path):
    write_sampling_tree(tmp_path, 2, split="train", odd_files=False)
    odd = write_odd_entries(tmp_path / "train", tmp_path.with_name(tmp_path.name + "-elsewhere"), A)
    result = sample(tmp_path)  # train holds one file and more folders: a split, its file a reject
    assert reasons_by_path(result) == {f"train/{path}": reason for path, reason in odd.rejected.items()}
    assert len(result.entries) == 7


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_files_and_folders_are_rejects(tmp_path):
    tree = write_sampling_tree(tmp_path, 2, odd_files=False)
    locked_file = tree.root / A / f"{A}_00000.JPEG"
    locked_folder = tree.root / B
    locked_file.chmod(0)
    locked_folder.chmod(0)
    try:
        result = sample(tree.root)
    finally:
        locked_file.chmod(0o644)
        locked_folder.chmod(0o755)
    assert reasons_by_path(result) == {f"{A}/{A}_00000.JPEG": "unreadable", B: "unreadable"}
    assert per_class(result) == {A: 1, C: 2}


@pytest.mark.timeout(60)
def test_odd_paths_in_a_list_file_are_rejects_and_never_opened(tmp_path):
    images = tmp_path / "images"
    write_sampling_tree(images, 2, odd_files=False)
    odd = write_odd_entries(images, tmp_path / "elsewhere", A)
    lines = [
        f"images/{A}/{A}_00000.JPEG".encode(),
        f"images/{B}/{B}_00001.JPEG".encode(),
        f"images/{A}/{A}_fifo.JPEG".encode(),
        f"images/{A}/{A}_socket.JPEG".encode(),
        f"images/{A}/{A}_loop.JPEG".encode(),
        f"images/{A}/{A}_dangling.JPEG".encode(),
        f"images/{A}/{A}_more {A}".encode(),
        f"images/{A}/{A}_linked.JPEG".encode(),
        f"images/{A}/{A}_bad".encode() + b"\xff.JPEG",
        f"images/{C}/missing.JPEG".encode(),
    ]
    (tmp_path / "list.txt").write_bytes(b"\r\n".join(lines) + b"\r\n")
    result = sample(tmp_path / "list.txt")
    assert sorted(entry.image_path for entry in result.entries) == sorted(
        [f"images/{A}/{A}_00000.JPEG", f"images/{B}/{B}_00001.JPEG", f"images/{odd.kept[0].path}"]
    )
    assert reasons_by_path(result) == {
        f"images/{A}/{A}_fifo.JPEG": "special_file",
        f"images/{A}/{A}_socket.JPEG": "special_file",
        f"images/{A}/{A}_loop.JPEG": "symlink_loop",
        f"images/{A}/{A}_dangling.JPEG": "broken_link",
        f"images/{A}/{A}_more": "not_a_file",
        f"images/{A}/{A}_bad\\xff.JPEG": "undecodable_name",
        f"images/{C}/missing.JPEG": "missing_file",
        f"images/{C}": "class_too_small",
    }


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--min-per-class", "5", "--max-per-class", "3"], "--max-per-class 3 is below --min-per-class 5"),
        (["--max-per-class", "0"], "--max-per-class must be positive"),
        (["--max-per-class", "-2"], "--max-per-class must be positive"),
        (["--min-per-class", "-1"], "--min-per-class must be at least 1"),
        (["--min-per-class", "0", "--max-per-class", "none"], "--min-per-class must be at least 1"),
        (["--budget", "0"], "--budget must be a positive number of images, not 0"),
        (["--budget", "-5"], "--budget must be a positive number of images, not -5"),
        (["--min-side", "0"], "--min-side must be at least 1"),
        (["--max-pixels", "-1"], "--max-pixels must be positive"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_limits_that_make_no_sense_are_a_usage_error_before_any_work(tmp_path, argv, flag):
    out = tmp_path / "manifest.parquet"
    with pytest.raises(UsageError) as error:  # the source does not exist: nothing was looked at
        cli("--source", str(tmp_path / "no-such-tree"), "--out", str(out), *argv)
    assert flag in str(error.value)
    assert_nothing_written(out)


def test_a_budget_below_the_classes_minimum_is_a_usage_error_naming_the_fix(tmp_path):
    tree = write_sampling_tree(tmp_path, 4, odd_files=False)
    with pytest.raises(UsageError, match=r"--budget of 8 cannot give 3 classes .* \(to 9 at least\)"):
        sample(tree.root, SamplingRule(min_per_class=3, max_per_class=None, budget=8))


def test_a_missing_source_is_named(tmp_path):
    missing = tmp_path / "no-such-tree"
    out = tmp_path / "manifest.parquet"
    with pytest.raises(MissingInputError, match=f"--source {missing} does not exist"):
        cli("--source", str(missing), "--out", str(out), "--min-per-class", "1")
    assert_nothing_written(out)
    (tmp_path / "list.txt").write_text(f"{A}/{A}_00000.JPEG\n")
    with pytest.raises(MissingInputError, match=f"--image-root {missing} does not exist"):
        sample(tmp_path / "list.txt", image_root=missing)


@pytest.mark.timeout(60)
def test_a_source_that_is_not_a_folder_or_a_text_file_is_refused_unread(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match=r"fifo is a FIFO \(named pipe\), not a folder or a list file"):
        sample(tmp_path / "fifo")
    (tmp_path / "image.png").write_bytes(png_declaring(300, 300))
    with pytest.raises(InputError, match="is not a list file .*NUL bytes"):
        sample(tmp_path / "image.png")


def test_an_out_that_cannot_be_written_is_a_usage_error_before_any_work(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    missing = str(tmp_path / "no-such-tree")  # the source is never looked at
    with pytest.raises(UsageError, match=r"--out .*folder is a folder: name the manifest file"):
        cli("--source", missing, "--out", str(tmp_path / "folder"))
    with pytest.raises(UsageError, match=r"file is a file, not a folder"):
        cli("--source", missing, "--out", str(tmp_path / "file" / "run" / "manifest.parquet"))


def test_an_image_root_that_is_not_utf8_is_refused_before_listing(tmp_path):
    root = os.fsdecode(os.fsencode(tmp_path) + b"/root\xff")
    write_sampling_tree(root, 1, odd_files=False)
    with pytest.raises(InputError, match=r"root\\xff is not valid UTF-8"):
        sample(root)


def test_help_points_to_the_page_that_states_the_rules(capsys):
    with pytest.raises(SystemExit) as done:
        imagenet_think_cli.main(["sample", "--help"])
    assert done.value.code == 0
    assert "docs/sample.md" in capsys.readouterr().out
    page = " ".join((Path(__file__).parent.parent / "docs" / "sample.md").read_text().split())
    for rule in (
        "class_too_small",
        "water-filled",
        "a symlink loop",
        "never opened",
        "A result with no image is an error",
        "nothing is written then",
    ):
        assert rule in page
