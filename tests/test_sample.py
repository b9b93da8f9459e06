"""``imagenet-think sample``: inclusion checks, image normalization, the sampling rule, sources, CLI."""

from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from image_trees import BLUE, RED, TREE_WNIDS, UNKNOWN_WNID, png_declaring, write_image_tree

import imagenet_think_cli
from generation.images import ImageRejected, check_image, load_rgb
from generation.records import read_manifest
from generation.sample import SamplingRule, rejects_path, sample_images

CHECK_ALL = SamplingRule(min_per_class=1, max_per_class=None, budget=None)
A, B, C = TREE_WNIDS


def sample(source, rule=CHECK_ALL, **options):
    return sample_images(source, rule=rule, workers=1, progress=False, **options)


def reasons_by_path(result):
    return {reject.image_path: reject.reason for reject in result.rejects}


def per_class(result):
    return Counter(entry.wnid for entry in result.entries)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_image_tree(tmp_path_factory.mktemp("tree"), unknown_class=True)


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
    tree = write_image_tree(tmp_path, 8)
    rule = SamplingRule(min_per_class=1, max_per_class=3, budget=None, seed=5)
    one = sample(tree.root, rule)
    assert one == sample(tree.root, rule)
    two = sample_images(tree.root, rule=rule, workers=2, progress=False)
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
    tree = write_image_tree(tmp_path, {A: 2, B: 5, C: 9}, odd_files=False)
    result = sample(tree.root, SamplingRule(min_per_class=3, max_per_class=8, budget=12))
    assert per_class(result) == {B: 5, C: 7}
    assert result.dropped_classes == {A: 0}


def test_a_class_short_of_good_images_is_dropped_after_checking_and_its_budget_shared(tmp_path):
    tree = write_image_tree(tmp_path, {A: 2, B: 6}, odd_files=False)
    (tree.root / A / f"{A}_empty.JPEG").write_bytes(b"")
    result = sample(tree.root, SamplingRule(min_per_class=3, max_per_class=None, budget=6))
    assert per_class(result) == {B: 6}
    assert result.dropped_classes == {A: 2}
    assert sorted(reasons_by_path(result).values()) == ["class_too_small", "class_too_small", "empty_file"]


def test_a_budget_below_the_minimum_is_an_error(tmp_path):
    tree = write_image_tree(tmp_path, 4, odd_files=False)
    with pytest.raises(ValueError, match="budget"):
        sample(tree.root, SamplingRule(min_per_class=3, max_per_class=None, budget=8))


@pytest.mark.parametrize("seed", range(4))
def test_classes_refill_what_duplicates_took(tree, seed):
    result = sample(tree.root, SamplingRule(min_per_class=1, max_per_class=4, budget=None, seed=seed))
    assert per_class(result) == dict.fromkeys(TREE_WNIDS, 4)
    assert len({entry.sha256 for entry in result.entries}) == len(result.entries)


def test_split_folders_are_read_and_merged(tmp_path):
    write_image_tree(tmp_path, 2, split="train", odd_files=False)
    write_image_tree(tmp_path, 1, split="val", odd_files=False, first_index=100)
    result = sample(tmp_path)
    assert per_class(result) == dict.fromkeys(TREE_WNIDS, 3)
    assert {entry.image_path.split("/")[0] for entry in result.entries} == {"train", "val"}
    assert f"val/{A}/{A}_00100.JPEG" in {entry.image_path for entry in result.entries}


def test_list_file_source(tmp_path):
    write_image_tree(tmp_path / "images", 3, odd_files=False)
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
    write_image_tree(tmp_path, 2, split="train", odd_files=False)
    write_image_tree(tmp_path, 1, split="val", odd_files=False, first_index=100)
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
    write_image_tree(tmp_path, 1, split="train", odd_files=False)
    write_image_tree(tmp_path, 1, split="val", odd_files=False, first_index=100)
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
    assert check_image(path.read_bytes()) == (
        300,
        300,
        False,
    )  # annotators see white where the bytes hold black
    assert load_rgb(path).getpixel((0, 0)) == (255, 255, 255)
