"""Near-duplicate images in a release: groups kept in one split, and overlaps with a reference collection.

Hashes come from the manifest's ``phash`` column; an image without one (a manifest written before
it) is hashed from its file here, the way ``sample`` hashes it (``generation.images.file_phash``).
The search and its threshold are :mod:`generation.near_duplicates`'. The build's rules (each group
in one split; reference overlaps rejected) are docs/release.md's, "Near-duplicate images". A
reference collection is a manifest (``.parquet``: its ``phash`` column, or its files) or a folder
whose files (recursively, hidden ones aside) are hashed; a file that is not an image is counted and
skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from generation.images import files_phash
from generation.near_duplicates import DEFAULT_THRESHOLD, Pairs, cross_pairs, groups, hash_values, near_pairs
from generation.records import read_manifest
from imagenet_think_errors import InputError, MissingInputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hashes:
    """A collection's image ids and their hashes (``known`` false where the image could not be hashed)."""

    ids: list[str]
    values: np.ndarray
    known: np.ndarray
    from_files: int = 0  # hashes computed here from image files (none in the manifest)

    @property
    def unreadable(self) -> int:
        return int((~self.known).sum())


def manifest_hashes(manifest: pa.Table, root: Path, workers: int | None = None) -> Hashes:
    """The hashes of a manifest's images (its ``phash`` column; the files of rows without one)."""
    hexes = manifest["phash"].to_pylist()
    missing = [row for row, value in enumerate(hexes) if not value]
    if missing:
        logger.warning(
            "%d of %d images of the manifest have no phash (a manifest written before the column): "
            "hashing them from their files under %s",
            len(missing),
            len(hexes),
            root,
        )
        paths = manifest["image_path"].to_pylist()
        for row, value in zip(
            missing, files_phash([root / paths[row] for row in missing], workers), strict=True
        ):
            hexes[row] = value
    values, known = hash_values(hexes)
    return Hashes(manifest["image_id"].to_pylist(), values, known, len(missing))


def reference_hashes(path: str | os.PathLike, workers: int | None = None) -> Hashes:
    """The hashes of a reference collection: a manifest file, or a folder of images (ids: the files'
    paths relative to it)."""
    path = Path(path)
    if path.is_file():
        manifest, root = read_manifest(path)
        return manifest_hashes(manifest, root, workers)
    if not path.is_dir():
        raise MissingInputError(
            f"--reference {path} does not exist: give a folder of images or a manifest (.parquet)"
        )
    files = sorted(
        file
        for file in path.rglob("*")
        if not any(part.startswith(".") for part in file.relative_to(path).parts) and file.is_file()
    )
    if not files:
        raise InputError(
            f"--reference {path} holds no file: give a folder of images or a manifest (.parquet)"
        )
    values, known = hash_values(files_phash(files, workers))
    if not known.any():
        raise InputError(f"--reference {path}: none of its {len(files)} files is an image PIL can read")
    return Hashes([file.relative_to(path).as_posix() for file in files], values, known, len(files))


def group_split(members: list[str], splits: dict[str, str], seed: int) -> str:
    """The split of a group: that of its member ranked first by ``sha256(f"{seed}:{image_id}")``."""
    first = min(members, key=lambda image_id: hashlib.sha256(f"{seed}:{image_id}".encode()).digest())
    return splits[first]


@dataclass
class Leakage:
    """What the build did about near-duplicates: the groups it kept in one split and the reference
    overlaps it rejected (``summary`` goes into ``stats.json`` and the card)."""

    threshold: int | None
    pairs: int = 0
    groups: int = 0
    images_in_groups: int = 0
    images_moved: int = 0
    moved_from: Counter = field(default_factory=Counter)  # split an image left -> images
    hashed_from_files: int = 0
    unhashed: int = 0
    reference: dict | None = None
    overlaps: dict[str, str] = field(default_factory=dict)  # image_id -> why it overlaps the reference

    def summary(self) -> dict:
        return {
            "threshold_bits": self.threshold,
            "pairs": self.pairs,
            "groups": self.groups,
            "images_in_groups": self.images_in_groups,
            "images_moved": self.images_moved,
            "moved_from": dict(sorted(self.moved_from.items())),
            "hashed_from_files": self.hashed_from_files,
            "images_not_hashed": self.unhashed,
            "reference": self.reference,
        }


def apply_leakage_rules(
    manifest: pa.Table,
    root: Path,
    splits: dict[str, str],
    threshold: int | None,
    seed: int,
    reference: str | None = None,
) -> Leakage:
    """Move every group of near-duplicates of ``manifest`` into one split (``splits`` is changed in
    place) and find the images that overlap ``reference``; ``threshold`` None does neither."""
    leakage = Leakage(threshold)
    if threshold is None:
        if reference:
            raise InputError("a --reference needs a near-duplicate threshold (not `none`)")
        return leakage
    hashes = manifest_hashes(manifest, root)
    leakage.hashed_from_files, leakage.unhashed = hashes.from_files, hashes.unreadable
    pairs = near_pairs(hashes.values, threshold, hashes.known)
    leakage.pairs = len(pairs)
    for members in groups(len(hashes.ids), pairs):
        ids = [hashes.ids[row] for row in members.tolist()]
        target = group_split(ids, splits, seed)
        leakage.groups += 1
        leakage.images_in_groups += len(ids)
        for image_id in ids:
            if splits[image_id] != target:
                leakage.moved_from[splits[image_id]] += 1
                leakage.images_moved += 1
                splits[image_id] = target
    if reference:
        leakage.overlaps, leakage.reference = reference_overlaps(hashes, reference, threshold)
    return leakage


def reference_overlaps(hashes: Hashes, reference: str, threshold: int) -> tuple[dict[str, str], dict]:
    """image_id -> detail for each image within ``threshold`` bits of an image of ``reference``, and
    the counts."""
    others = reference_hashes(reference)
    pairs = cross_pairs(hashes.values, others.values, threshold, hashes.known, others.known)
    overlaps: dict[str, str] = {}
    for a, b, distance in _triples(pairs):
        overlaps.setdefault(
            hashes.ids[a],
            f"{distance} bits from {others.ids[b]} of the reference collection {Path(reference).name}",
        )
    counts = {
        "path": str(reference),
        "images": len(others.ids),
        "not_images": others.unreadable,
        "pairs": len(pairs),
        "images_overlapping": len(overlaps),
    }
    return overlaps, counts


def _triples(pairs: Pairs):
    return zip(pairs.a.tolist(), pairs.b.tolist(), pairs.distance.tolist(), strict=True)


def leakage_lines(stats: dict) -> list[str]:
    """The card's lines on near-duplicates (from ``stats["near_duplicates"]``)."""
    found = stats.get("near_duplicates")
    if not found or found["threshold_bits"] is None:
        return []
    lines = [
        "",
        f"Near-duplicate images (perceptual hashes at most {found['threshold_bits']} bits apart, "
        f"default {DEFAULT_THRESHOLD}): {found['pairs']:,} pair(s) in {found['groups']:,} group(s) of "
        f"{found['images_in_groups']:,} images; each group is in one split ({found['images_moved']:,} "
        "image(s) moved to their group's split).",
    ]
    if found["reference"]:
        reference = found["reference"]
        lines.append(
            f"Images overlapping the reference collection `{reference['path']}` ({reference['images']:,} "
            f"images): {reference['images_overlapping']:,}, kept out (in `rejected`, reason `reference_overlap`)."
        )
    return lines
