"""``imagenet-think audit`` and the build's near-duplicate rules (release.audit, release.leakage), on real
photos with planted copies: a photo resized and re-encoded into another class folder."""

import json
import random
from dataclasses import asdict

import pyarrow.parquet as pq
import pytest

import imagenet_think_cli
from generation.records import read_manifest, write_manifest
from generation.sample import SampleOptions, SamplingRule, sample_images
from imagenet_think_errors import MissingInputError, UsageError
from release.audit import audit
from release.build import BuildOptions, build_release
from tests.fixtures.photos import write_planted_tree
from tests.fixtures.synthetic import make_record, write_run

RULE = SamplingRule(min_per_class=1, max_per_class=None, budget=None)
FRACTIONS = {"validation_fraction": 0.2, "test_fraction": 0.2}  # many pairs could straddle splits


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    tree = write_planted_tree(folder / "tree", planted=12, reference_copies=6, reference_others=5)
    result = sample_images(SampleOptions(tree.root, min_side=128, workers=1, **asdict(RULE)), progress=False)
    manifest = folder / "manifest.parquet"
    write_manifest(result.entries, manifest, tree.root)
    rng = random.Random(0)
    write_run(folder / "runs" / "glm", [make_record(entry, "glm", rng) for entry in result.entries])
    return tree, manifest, folder


def pair_set(pairs):
    return {tuple(sorted(pair)) for pair in pairs}


def found_pairs(out, kind):
    table = pq.read_table(out / "duplicates.parquet").to_pylist()
    return [(row["image_id_a"], row["image_id_b"]) for row in table if row["kind"] == kind]


def test_audit_finds_the_planted_copies_and_no_pair_of_distinct_photos(planted, tmp_path):
    tree, manifest, _ = planted
    report = audit(manifest, tmp_path / "audit")
    found = pair_set(found_pairs(tmp_path / "audit", "near"))
    expected = pair_set(tree.planted)
    assert len(found & expected) / len(expected) >= 0.9
    assert found - expected == set()
    assert report["near"]["pairs"] == len(found)
    assert report["near"]["groups"] == len(found)  # pairs only: the copies are of distinct photos
    assert report["near"]["pairs_across_classes"] == len(found)
    assert json.loads((tmp_path / "audit" / "audit.json").read_text()) == report
    assert (tmp_path / "audit" / "distances.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{len(found)} pair(s)" in (tmp_path / "audit" / "audit.md").read_text()


def test_reference_overlaps_are_found_in_a_folder_and_in_a_manifest(planted, tmp_path):
    tree, manifest, folder = planted
    report = audit(manifest, tmp_path / "folder", reference=tree.reference)
    overlaps = found_pairs(tmp_path / "folder", "reference")
    assert set(overlaps) == set(tree.reference_overlaps)  # (sampled image, the reference file's path)
    assert report["reference"]["images"] == len(tree.reference_overlaps) + 5
    assert report["reference"]["images_overlapping"] == len(tree.reference_overlaps)
    (tree.reference / "notes.txt").write_text("not an image")
    reference = sample_images(
        SampleOptions(tree.reference, min_side=128, workers=1, any_classes=True, **asdict(RULE)),
        progress=False,
    )
    reference_manifest = folder / "reference.parquet"
    write_manifest(reference.entries, reference_manifest, tree.reference)
    report = audit(manifest, tmp_path / "manifest", reference=reference_manifest)
    by_id = {entry.image_id: entry.image_path for entry in reference.entries}
    overlaps = [(a, by_id[b]) for a, b in found_pairs(tmp_path / "manifest", "reference")]
    assert set(overlaps) == set(tree.reference_overlaps)
    (tree.reference / "notes.txt").unlink()


def test_after_the_build_no_planted_pair_spans_two_splits(planted, tmp_path):
    tree, manifest, folder = planted
    runs = [folder / "runs" / "glm"]

    def splits_of(out):
        return {
            image_id: path.name.split("-")[0]
            for path in (out / "glm").glob("*.parquet")
            for image_id in pq.read_table(path, columns=["image_id"])["image_id"].to_pylist()
        }

    def spanning(splits):
        return [pair for pair in tree.planted if splits[pair[0]] != splits[pair[1]]]

    build_release(BuildOptions(runs, manifest, tmp_path / "off", near_duplicate_threshold=None, **FRACTIONS))
    assert spanning(splits_of(tmp_path / "off"))  # without the rule some pairs straddle splits
    summary = build_release(BuildOptions(runs, manifest, tmp_path / "on", **FRACTIONS))
    splits = splits_of(tmp_path / "on")
    assert spanning(splits) == []
    assert set(splits) == set(tree.image_ids)  # nobody lost
    stats = json.loads((tmp_path / "on" / "stats.json").read_text())["near_duplicates"]
    assert stats["groups"] == stats["pairs"] >= 11
    assert (
        stats["images_moved"]
        == len(spanning(splits_of(tmp_path / "off")))
        == summary.near_duplicates["images_moved"]
    )
    assert (
        json.loads((tmp_path / "on" / "release.json").read_text())["near_duplicates"]["threshold_bits"] == 10
    )
    assert "image(s) moved to their group's split" in (tmp_path / "on" / "README.md").read_text()
    report = audit(manifest, tmp_path / "audit", release=tmp_path / "on")
    assert report["near"]["splits"]["pairs_across_splits"] == 0
    assert report["near"]["splits"]["pairs_within_a_split"] == report["near"]["pairs"]
    off = audit(manifest, tmp_path / "audit-off", release=tmp_path / "off")["near"]["splits"]
    assert off["pairs_across_splits"] == len(spanning(splits_of(tmp_path / "off")))


def test_the_build_rejects_images_that_overlap_the_reference(planted, tmp_path):
    tree, manifest, folder = planted
    out = tmp_path / "release"
    summary = build_release(BuildOptions([folder / "runs" / "glm"], manifest, out, reference=tree.reference))
    overlapping = {image_id for image_id, _ in tree.reference_overlaps}
    released = {
        image_id
        for path in (out / "glm").glob("*.parquet")
        for image_id in pq.read_table(path, columns=["image_id"])["image_id"].to_pylist()
    }
    assert released == set(tree.image_ids) - overlapping
    rejected = pq.read_table(next((out / "rejected").glob("*.parquet"))).to_pylist()
    assert {row["image_id"] for row in rejected if row["reject_reason"] == "reference_overlap"} == overlapping
    assert all("bits from val/" in row["reject_detail"] for row in rejected)
    assert summary.rejected_by_reason["reference_overlap"] == len(overlapping)
    assert summary.near_duplicates["reference"]["images_overlapping"] == len(overlapping)


def test_a_manifest_without_hashes_is_hashed_from_its_files(planted, tmp_path):
    tree, manifest, _ = planted
    old = tmp_path / "old.parquet"
    table = pq.read_table(manifest)
    pq.write_table(table.drop_columns(["phash"]).replace_schema_metadata(table.schema.metadata), old)
    assert read_manifest(old)[0]["phash"].to_pylist() == [""] * table.num_rows
    report = audit(old, tmp_path / "old-audit")
    assert report["hashed_from_files"] == table.num_rows
    assert pair_set(found_pairs(tmp_path / "old-audit", "near")) == pair_set(
        found_pairs(_audited(manifest, tmp_path / "new-audit"), "near")
    )


def _audited(manifest, out):
    audit(manifest, out)
    return out


def test_cli_audit_and_its_refusals(planted, tmp_path, capsys):
    tree, manifest, _ = planted
    out = tmp_path / "cli"
    assert imagenet_think_cli.main(["audit", "--manifest", str(manifest), "--out", str(out)]) == 0
    assert "pair(s) in" in capsys.readouterr().out
    assert (out / "duplicates.parquet").is_file()
    with pytest.raises(MissingInputError, match="--reference .* does not exist"):
        audit(manifest, out, reference=tmp_path / "nowhere")
    with pytest.raises(UsageError, match="0 to 24 bits"):
        imagenet_think_cli.main(
            ["audit", "--manifest", str(manifest), "--out", str(out), "--threshold", "40"]
        )
