"""``imagenet-think audit``: near-duplicate images of a manifest, within it and against a reference.

Writes ``duplicates.parquet`` (:data:`DUPLICATES_SCHEMA`), ``audit.json`` (the counts), ``audit.md``
and ``distances.png`` into ``--out``; with ``--release``, the counts say which pairs sit within one
split and which cross two. What each file holds, and the rules the build applies: docs/release.md,
"The near-duplicate audit and threshold". The hashes and the threshold are
:mod:`generation.near_duplicates`'; images without a hash in the manifest are hashed from their
files (:mod:`release.leakage`).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from generation.near_duplicates import DEFAULT_THRESHOLD, MAX_THRESHOLD, cross_pairs, groups, near_pairs
from generation.records import read_manifest, write_bytes_atomic, write_parquet_atomic
from imagenet_think_errors import UsageError
from release.folder import read_marker
from release.leakage import Hashes, manifest_hashes, reference_hashes

EXAMPLE = "imagenet-think audit --manifest manifest.parquet --out audit/ --reference /data/imagenet1k/val"
RULES = (
    "rules (near-duplicates, the default threshold, what the files hold, what build does): docs/release.md"
)
DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("image_id_a", pa.string(), nullable=False),
        pa.field("image_id_b", pa.string(), nullable=False),
        pa.field("distance", pa.int8(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
    ]
)


def release_splits(release: Path) -> dict[str, str]:
    """image_id -> split of every image in a release's configs (file names ``<split>-*.parquet``)."""
    marker = read_marker(release)
    splits: dict[str, str] = {}
    for config in marker["configs"]:
        if config == "rejected":
            continue
        for path in sorted((release / config).glob("*.parquet")):
            split = path.name.split("-")[0]
            for image_id in pq.read_table(path, columns=["image_id"])["image_id"].to_pylist():
                splits[image_id] = split
    return splits


def audit(
    manifest: str | Path,
    out: str | Path,
    threshold: int = DEFAULT_THRESHOLD,
    reference: str | Path | None = None,
    release: str | Path | None = None,
    workers: int | None = None,
) -> dict:
    """Find the near-duplicate pairs of ``manifest`` (and its overlaps with ``reference``); write
    ``out``'s files and return the counts (``audit.json``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: name a folder for the audit's files")
    table, root = read_manifest(manifest)
    hashes = manifest_hashes(table, root, workers)
    splits = release_splits(Path(release)) if release else None
    near = near_pairs(hashes.values, threshold, hashes.known)
    rows = _pair_rows(hashes.ids, hashes.ids, near, "near")
    found = groups(len(hashes.ids), near)
    report = {
        "manifest": str(manifest),
        "threshold_bits": threshold,
        "images": len(hashes.ids),
        "hashed_from_files": hashes.from_files,
        "images_not_hashed": hashes.unreadable,
        "near": _near_counts(near, found, table["wnid"].to_pylist()),
    }
    if splits is not None:
        report["near"]["splits"] = _split_counts(hashes, near, found, splits)
    if reference:
        others = reference_hashes(reference, workers)
        overlaps = cross_pairs(hashes.values, others.values, threshold, hashes.known, others.known)
        rows += _pair_rows(hashes.ids, others.ids, overlaps, "reference")
        report["reference"] = _reference_counts(reference, hashes, others, overlaps, splits)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=DUPLICATES_SCHEMA), out / "duplicates.parquet")
    write_bytes_atomic((json.dumps(report, indent=2) + "\n").encode(), out / "audit.json")
    write_bytes_atomic(_chart(report), out / "distances.png")
    write_bytes_atomic(audit_markdown(report).encode(), out / "audit.md")
    return report


def _near_counts(near, found: list[np.ndarray], wnids: list[str]) -> dict:
    """audit.json's ``near``: the pairs within the manifest, their groups, and pairs across classes."""
    return {
        "pairs": len(near),
        "groups": len(found),
        "images_in_groups": int(sum(len(members) for members in found)),
        "largest_group": int(max((len(members) for members in found), default=0)),
        "pairs_across_classes": int(sum(wnids[a] != wnids[b] for a, b in zip(near.a, near.b, strict=True))),
        "distances": _histogram(near.distance),
    }


def _reference_counts(
    reference: str | Path, hashes: Hashes, others: Hashes, overlaps, splits: dict[str, str] | None
) -> dict:
    """audit.json's ``reference``: the manifest's overlaps with the reference (by split, with a release)."""
    counts = {
        "path": str(reference),
        "images": len(others.ids),
        "not_images": others.unreadable,
        "pairs": len(overlaps),
        "images_overlapping": len(set(overlaps.a.tolist())),
        "distances": _histogram(overlaps.distance),
    }
    if splits is not None:
        counts["by_split"] = dict(
            sorted(
                Counter(splits.get(hashes.ids[a], "not released") for a in set(overlaps.a.tolist())).items()
            )
        )
    return counts


def _pair_rows(ids_a: list[str], ids_b: list[str], pairs, kind: str) -> list[dict]:
    return [
        {"image_id_a": ids_a[a], "image_id_b": ids_b[b], "distance": d, "kind": kind}
        for a, b, d in zip(pairs.a.tolist(), pairs.b.tolist(), pairs.distance.tolist(), strict=True)
    ]


def _histogram(distances: np.ndarray) -> dict[str, int]:
    return {str(d): int(n) for d, n in zip(*np.unique(distances, return_counts=True), strict=True)}


def _split_counts(hashes: Hashes, near, found: list[np.ndarray], splits: dict[str, str]) -> dict:
    """Pairs and groups within one split or across splits (images not in the release aside)."""
    kinds: Counter = Counter()
    for a, b in zip(near.a.tolist(), near.b.tolist(), strict=True):
        pair = sorted({splits.get(hashes.ids[a], "not released"), splits.get(hashes.ids[b], "not released")})
        kinds["/".join(pair)] += 1
    released = [
        {splits[hashes.ids[row]] for row in members if hashes.ids[row] in splits} for members in found
    ]
    return {
        "pairs_by_splits": dict(sorted(kinds.items())),
        "pairs_within_a_split": sum(
            n for key, n in kinds.items() if "/" not in key and key != "not released"
        ),
        "pairs_across_splits": sum(
            n for key, n in kinds.items() if "/" in key and "not released" not in key.split("/")
        ),
        "groups_across_splits": sum(len(group) > 1 for group in released),
    }


def audit_markdown(report: dict) -> str:
    near = report["near"]
    lines = [
        "# Near-duplicate audit",
        "",
        f"Manifest `{report['manifest']}`: {report['images']:,} images; perceptual hashes at most "
        f"{report['threshold_bits']} bits apart are near-duplicates.",
        "",
        f"- {near['pairs']:,} pair(s) in {near['groups']:,} group(s) of {near['images_in_groups']:,} images "
        f"(largest {near['largest_group']}); {near['pairs_across_classes']:,} pair(s) across classes.",
    ]
    if "splits" in near:
        splits = near["splits"]
        lines.append(
            f"- In the release: {splits['pairs_within_a_split']:,} pair(s) within one split, "
            f"{splits['pairs_across_splits']:,} across splits ({splits['groups_across_splits']:,} group(s))."
        )
    if "reference" in report:
        reference = report["reference"]
        lines.append(
            f"- Against `{reference['path']}` ({reference['images']:,} files, {reference['not_images']:,} not "
            f"images): {reference['pairs']:,} pair(s), {reference['images_overlapping']:,} image(s) of the "
            "manifest overlap it."
        )
    if report["images_not_hashed"]:
        lines.append(f"- {report['images_not_hashed']:,} image(s) could not be read and were not compared.")
    lines += ["", "![distances of the pairs found](distances.png)", ""]
    return "\n".join(lines)


def _chart(report: dict) -> bytes:
    """A bar chart of the pairs found by distance in bits, near and reference pairs side by side."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threshold = report["threshold_bits"]
    bits = np.arange(threshold + 1)
    figure, axes = plt.subplots(figsize=(6, 3.2))
    series = [("near", report["near"]["distances"])]
    if "reference" in report:
        series.append(("reference", report["reference"]["distances"]))
    width = 0.8 / len(series)
    for index, (kind, counts) in enumerate(series):
        heights = [counts.get(str(bit), 0) for bit in bits]
        axes.bar(bits + index * width, heights, width=width, label=kind)
    axes.set_xlabel("Hamming distance between perceptual hashes (bits)")
    axes.set_ylabel("pairs")
    axes.set_title(f"Near-duplicate pairs (threshold {threshold} bits)")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="the image manifest of `imagenet-think sample`")
    parser.add_argument(
        "--out", required=True, help="a folder for duplicates.parquet, audit.json, audit.md and distances.png"
    )
    parser.add_argument(
        "--threshold",
        type=int,
        default=DEFAULT_THRESHOLD,
        help=f"bits (0-{MAX_THRESHOLD}) within which two hashes are near-duplicates (default %(default)s; "
        "docs/release.md says how it was chosen)",
    )
    parser.add_argument(
        "--reference", help="a folder of images, or a manifest, to check the manifest's images against"
    )
    parser.add_argument(
        "--release", help="a release built from the manifest: count pairs within and across splits"
    )
    parser.add_argument(
        "--workers", type=int, help="processes hashing images without a hash (default: the cores)"
    )


def run(args: argparse.Namespace) -> int:
    report = audit(args.manifest, args.out, args.threshold, args.reference, args.release, args.workers)
    print(audit_markdown(report).split("\n\n![")[0])
    print(f"\nwritten to {args.out}: duplicates.parquet, audit.json, audit.md, distances.png")
    return 0
