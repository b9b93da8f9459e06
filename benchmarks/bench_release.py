"""Release build throughput and memory against datasets' bare ParquetWriter.

    .venv/bin/python -m benchmarks.bench_release --images 5000   # from the repo root

Writes ``--images`` synthetic JPEGs with two annotators' records, then times the baseline
(``datasets.arrow_writer.ParquetWriter`` writing the rows of glm, kimi and both, same features, no
checks) against ``imagenet-think build`` (everything a build does; its rate counts the same rows).
``--unjudged`` writes records without stored verdicts, which the build then judges itself. It
prints both rates and their ratio (target: build >= 0.7 of the baseline), then the build's peak
memory at ``--images`` and twice as many (target: flat): peak RSS, which counts the page cache of
the memory-mapped records, and peak anonymous memory (sampled every 20 ms, with the process that
counts the trace report beside the build: ``release.background``). Each runs ``--repeats``
times, builds in fresh processes; the fastest run and the highest peak count.
Figures: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common.classes import imagenet21k_classes
from generation.images import file_phash
from generation.records import ManifestEntry, iter_rows, write_manifest
from tests.fixtures.synthetic import make_record, synthetic_text, write_run

REPO = Path(__file__).resolve().parent.parent
DISTINCT_IMAGES = 64


def write_inputs(folder: Path, images: int, seed: int = 0, verdicts: bool = True) -> Path:
    """Image tree (24 per class), manifest and two annotators' run folders (records with the verdicts
    generate stores, or without: ``verdicts=False``); returns the manifest."""
    rng = np.random.default_rng(seed)
    sources = []
    for i in range(DISTINCT_IMAGES):
        path = folder / f"source-{i}.JPEG"
        Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(path, quality=90)
        sources.append(path)
    hashes = [file_phash(path) for path in sources]  # as sample stores them (copies: near-duplicates)
    wnids = imagenet21k_classes().wnids
    entries = []
    for i in range(images):
        wnid = wnids[i // 24]
        relative = f"{wnid}/{wnid}_{i}.JPEG"
        (folder / "images" / wnid).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[i % DISTINCT_IMAGES], folder / "images" / relative)
        phash = hashes[i % DISTINCT_IMAGES]
        entries.append(ManifestEntry(f"{wnid}_{i}", wnid, relative, 160, 120, str(i), True, phash))
    manifest = write_manifest(entries, folder / "manifest.parquet", folder / "images")
    text_rng = random.Random(seed)
    for annotator in ("glm", "kimi"):
        records = []
        for entry in entries:
            think, answer = synthetic_text(text_rng, 1100), synthetic_text(text_rng, 150)
            records.append(make_record(entry, annotator, text_rng, think=think, answer=answer))
        write_run(folder / "runs" / annotator, records, per_shard=500, verdicts=verdicts)
    return manifest


def run_baseline(folder: Path) -> tuple[int, float]:
    """Bare ParquetWriter, row by row, over the same rows the release holds: each annotator's records
    with their image bytes (configs glm and kimi), then both joined per image (config both)."""
    from datasets.arrow_writer import ParquetWriter

    from release.schema import JOINT, SINGLE, ImageNetThinkConfig, config_features

    classes = imagenet21k_classes()
    start = time.perf_counter()
    records = {
        annotator: {
            r["image_id"]: r
            for r in iter_rows(sorted((folder / "runs" / annotator).glob("records-*.parquet")))
        }
        for annotator in ("glm", "kimi")
    }

    def image_columns(record: dict) -> dict:
        path = folder / "images" / record["image_path"]
        return {
            "image": {"bytes": path.read_bytes(), "path": record["image_path"]},
            "label": classes.index(record["wnid"]),
            "class_name": classes.name(record["wnid"]),
        }

    rows = 0
    for name in ("glm", "kimi", "both"):
        kind, annotators = (JOINT, ("glm", "kimi")) if name == "both" else (SINGLE, (name,))
        features = config_features(ImageNetThinkConfig(name=name, kind=kind, annotators=annotators))
        writer = ParquetWriter(
            path=str(folder / f"baseline-{name}.parquet"), features=features, writer_batch_size=100
        )
        for image_id, first in records[annotators[0]].items():
            if kind == SINGLE:
                example = {column: first[column] for column in features if column in first}
            else:
                example = {column: first[column] for column in ("image_id", "wnid", "question")}
                for annotator in annotators:
                    record = records[annotator][image_id]
                    example.update({f"{annotator}_{c}": record[c] for c in ("think", "answer", "model_id")})
            example.update(image_columns(first))
            # The label verdict columns hold what the build computes; the baseline writes constants.
            example.update(
                {c: "none" if c.endswith("label_verdict") else 0.0 for c in features if "label_" in c}
            )
            writer.write(example)
            rows += 1
        writer.finalize()
    return rows, time.perf_counter() - start


def build_once(folder: Path) -> dict:
    """One build in this process; returns rows written, seconds and peak memory."""
    from release.build import BuildOptions, build_release

    peak_anon = [0]
    done = threading.Event()

    def sample_anonymous_memory():
        while not done.wait(0.02):
            peak_anon[0] = max(peak_anon[0], _status_kib("RssAnon") + _children_kib("RssAnon"))

    sampler = threading.Thread(target=sample_anonymous_memory, daemon=True)
    sampler.start()
    start = time.perf_counter()
    summary = build_release(
        BuildOptions(
            [folder / "runs" / "glm", folder / "runs" / "kimi"], folder / "manifest.parquet", folder / "out"
        )
    )
    seconds = time.perf_counter() - start
    done.set()
    rows = sum(sum(summary.rows[name].values()) for name in ("glm", "kimi", "both"))
    return {
        "rows": rows,
        "seconds": seconds,
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
        "peak_anon_mib": peak_anon[0] / 1024,
    }


def _status_kib(field: str, process: str = "self") -> int:
    try:
        lines = Path(f"/proc/{process}/status").read_text().splitlines()
    except OSError:  # a child that just ended
        return 0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _children_kib(field: str) -> int:
    """``field`` summed over this process's children (the trace report's process, while it runs)."""
    children = []
    for task in Path("/proc/self/task").iterdir():
        try:
            children += (task / "children").read_text().split()
        except OSError:  # a thread that just ended
            continue
    return sum(_status_kib(field, pid) for pid in children)


def build_in_fresh_process(folder: Path) -> dict:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_release", "--build-only", str(folder.resolve())],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--images", type=int, default=5000, help="images (records per annotator) at the first size"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the fastest counts")
    parser.add_argument(
        "--unjudged",
        action="store_true",
        help="records without stored verdicts (an older toolkit's runs, or rules changed since): the "
        "build judges every record's quality and label itself",
    )
    parser.add_argument("--build-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        print(json.dumps(build_once(Path(args.build_only))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        results = {}
        for images in (args.images, 2 * args.images):
            folder = Path(tmp) / str(images)
            folder.mkdir()
            write_inputs(folder, images, verdicts=not args.unjudged)
            if images == args.images:
                baseline_rows, baseline_seconds = min(
                    (run_baseline(folder) for _ in range(args.repeats)), key=lambda run: run[1]
                )
            runs = [build_in_fresh_process(folder) for _ in range(args.repeats)]
            results[images] = {
                "rows": runs[0]["rows"],
                "seconds": min(run["seconds"] for run in runs),
                "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
                "peak_anon_mib": max(run["peak_anon_mib"] for run in runs),
            }
            shutil.rmtree(folder)
    first, second = results[args.images], results[2 * args.images]
    baseline_rate = baseline_rows / baseline_seconds
    build_rate = first["rows"] / first["seconds"]
    stored = "without stored verdicts: the build judges them all" if args.unjudged else "with their verdicts"
    print(
        f"records: {2 * args.images:,} ({args.images:,} images x 2 annotators, {stored}); best of {args.repeats} runs"
    )
    print(
        f"baseline  datasets ParquetWriter.write, glm+kimi+both rows: {baseline_rows:,} rows in {baseline_seconds:.1f} s = {baseline_rate:,.0f} rows/s"
    )
    print(
        f"build     imagenet-think build, glm+kimi+both rows (+ verified, rejected): {first['rows']:,} rows in {first['seconds']:.1f} s = {build_rate:,.0f} rows/s"
    )
    print(f"ratio     build / baseline rows/s = {build_rate / baseline_rate:.2f} (target >= 0.7)")
    for images, result in results.items():
        print(
            f"memory    {images:>6,} images: peak RSS {result['peak_rss_mib']:,.0f} MiB, peak anonymous {result['peak_anon_mib']:,.0f} MiB"
        )
    print(
        f"ratio     peak anonymous memory at 2x / 1x = {second['peak_anon_mib'] / first['peak_anon_mib']:.2f} (target: flat, ~1.0)"
    )


if __name__ == "__main__":
    main()
