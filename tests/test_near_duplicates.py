"""Perceptual hashes in the manifest and the near-duplicate search (generation.near_duplicates), on
real photos with planted resized and re-encoded copies."""

import io
import itertools
from dataclasses import asdict

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from generation import near_duplicates
from generation.images import check_image, file_phash
from generation.near_duplicates import (
    DEFAULT_THRESHOLD,
    cross_pairs,
    groups,
    hash_values,
    near_pairs,
    phash,
)
from generation.records import read_manifest, write_manifest
from generation.sample import SampleOptions, SamplingRule, sample_images
from imagenet_think_errors import UsageError
from tests.fixtures.photos import distinct_pictures, jpeg, resized_copy, write_planted_tree

PLANTED_RULE = SamplingRule(min_per_class=1, max_per_class=None, budget=None)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return write_planted_tree(tmp_path_factory.mktemp("planted") / "tree", planted=10)


@pytest.fixture(scope="module")
def manifest(planted, tmp_path_factory):
    result = sample_images(
        SampleOptions(planted.root, min_side=128, workers=1, **asdict(PLANTED_RULE)), progress=False
    )
    path = tmp_path_factory.mktemp("manifest") / "manifest.parquet"
    write_manifest(result.entries, path, planted.root)
    return path


def brute_force(values, threshold, others=None):
    """Every pair within ``threshold`` bits, by Python integers (the definition the search must meet)."""
    if others is None:
        candidates = itertools.combinations(range(len(values)), 2)
        others = values
    else:
        candidates = itertools.product(range(len(values)), range(len(others)))
    found = []
    for a, b in candidates:
        distance = bin(int(values[a]) ^ int(others[b])).count("1")
        if distance <= threshold:
            found.append((a, b, distance))
    return found


def as_tuples(pairs):
    return list(zip(pairs.a.tolist(), pairs.b.tolist(), pairs.distance.tolist(), strict=True))


def test_the_blocked_search_finds_exactly_the_pairs_within_the_threshold(monkeypatch):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**63, 300, dtype=np.uint64) | (rng.integers(0, 2, 300, dtype=np.uint64) << 63)
    for i in range(0, 300, 7):  # plant copies a few bits away, across block boundaries
        flips = rng.choice(64, size=int(rng.integers(0, 12)), replace=False)
        values[(i * 37) % 300] = values[i] ^ np.uint64(sum(1 << int(bit) for bit in flips))
    monkeypatch.setattr(near_duplicates, "QUERY_BLOCK", 16)  # many blocks, some partial
    monkeypatch.setattr(near_duplicates, "CANDIDATE_BLOCK", 50)
    found = as_tuples(near_pairs(values, 10))
    assert found == brute_force(values, 10)
    assert len(found) >= 30
    others = values[::3] ^ np.uint64(0b111)
    assert as_tuples(cross_pairs(values, others, 6)) == brute_force(values, 6, others)


def test_unknown_hashes_take_part_in_no_pair():
    values, known = hash_values(["00000000000000ff", "", "00000000000000fe", "ffffffffffffffff"])
    assert known.tolist() == [True, False, True, True]
    assert as_tuples(near_pairs(values, 3, known)) == [(0, 2, 1)]  # "" reads as 0: 8 bits from the first


def test_groups_are_the_connected_components():
    values, _ = hash_values(["0000000000000000", "0000000000000003", "000000000000000f", "ffff000000000000"])
    pairs = near_pairs(values, 2)
    assert as_tuples(pairs) == [(0, 1, 2), (1, 2, 2)]  # 0 and 2 are 4 bits apart, linked through 1
    assert [members.tolist() for members in groups(4, pairs)] == [[0, 1, 2]]


@pytest.mark.parametrize("threshold", [-1, 25])
def test_a_threshold_out_of_range_is_refused(threshold):
    with pytest.raises(UsageError, match="0 to 24 bits"):
        near_pairs(np.zeros(2, np.uint64), threshold)


def test_sample_stores_the_hash_of_the_picture_it_decoded(planted, manifest):
    table, root = read_manifest(manifest)
    hashes = table["phash"].to_pylist()
    assert len(hashes) == len(planted.image_ids)
    assert all(len(value) == 16 and int(value, 16) >= 0 for value in hashes)
    paths = table["image_path"].to_pylist()
    assert hashes == [file_phash(root / path) for path in paths]
    first = (root / paths[0]).read_bytes()
    assert check_image(first).phash == hashes[0]


def test_a_manifest_without_the_column_reads_with_no_hash_known(manifest, tmp_path):
    table = pq.read_table(manifest)
    old = tmp_path / "old.parquet"
    pq.write_table(table.drop_columns(["phash"]), old)
    read, _ = read_manifest(old)
    assert read["phash"].to_pylist() == [""] * table.num_rows
    assert read.drop_columns(["phash"]).equals(table.drop_columns(["phash"]))


def test_planted_copies_are_found_and_distinct_photos_are_not_paired(planted, manifest):
    table, _ = read_manifest(manifest)
    ids = table["image_id"].to_pylist()
    values, known = hash_values(table["phash"].to_pylist())
    found = {
        tuple(sorted((ids[a], ids[b]))) for a, b, _ in as_tuples(near_pairs(values, DEFAULT_THRESHOLD, known))
    }
    planted_pairs = {tuple(sorted(pair)) for pair in planted.planted}
    assert len(planted_pairs) == 10
    assert len(found & planted_pairs) / len(planted_pairs) >= 0.9
    assert found - planted_pairs == set()  # 105 distinct photos: 5,460 pairs, none within the threshold


def test_hashes_survive_resizing_and_re_encoding_but_not_mirroring():
    """The distances the default threshold was chosen from (docs/release.md), on a few photos."""
    for _, picture in distinct_pictures()[::10]:
        original = int(phash(picture), 16)
        copy = int(phash(Image.open(io.BytesIO(resized_copy(picture)))), 16)
        assert bin(original ^ copy).count("1") <= DEFAULT_THRESHOLD
        reencoded = int(phash(Image.open(io.BytesIO(jpeg(picture, 50)))), 16)
        assert bin(original ^ reencoded).count("1") <= DEFAULT_THRESHOLD
        mirrored = int(phash(ImageOps.mirror(picture)), 16)
        assert bin(original ^ mirrored).count("1") > DEFAULT_THRESHOLD
