"""The near-duplicate audit's evidence and cost, and the trace-quality report's cost, at 250K images.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_audit --sizes 10000 25000 50000

Parts (``--parts``): ``threshold``, the Hamming distances between the suite's real photos
(``tests/fixtures/photos.py``) and copies of them, the evidence for the default threshold (its
table is in docs/release.md); ``search``, :func:`generation.near_duplicates.near_pairs` over
``--sizes`` random hashes with 1% planted copies, its peak memory, and the quadratic projection to
250,000; ``hash``, decoding and hashing an image file (what a manifest without ``phash`` costs);
``traces``, :class:`release.trace_quality.TraceQuality` over ``--traces`` synthetic traces in tables
of 100, projected linearly to 500,000 traces. Figures: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import time
import tracemalloc

import numpy as np
from PIL import Image, ImageOps

from generation.images import check_image, file_phash
from generation.near_duplicates import DEFAULT_THRESHOLD, near_pairs, phash
from tests.fixtures.photos import distinct_pictures, jpeg, photo_files

FULL = 250_000


def _reread(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def _crop(picture: Image.Image, share: float) -> Image.Image:
    dx, dy = round(picture.width * share), round(picture.height * share)
    return picture.crop((dx, dy, picture.width - dx, picture.height - dy))


COPIES = {
    "resized 0.75 + JPEG q75 (the planted copy)": lambda p: _reread(
        jpeg(p.resize((p.width * 3 // 4, p.height * 3 // 4), Image.BILINEAR), 75)
    ),
    "resized 0.5 (Lanczos)": lambda p: p.resize((p.width // 2, p.height // 2), Image.LANCZOS),
    "JPEG q50": lambda p: _reread(jpeg(p, 50)),
    "JPEG q20": lambda p: _reread(jpeg(p, 20)),
    "brightness x1.2": lambda p: p.point(lambda v: min(255, int(v * 1.2))),
    "cropped 2% per side": lambda p: _crop(p, 0.02),
    "cropped 5% per side": lambda p: _crop(p, 0.05),
    "mirrored": ImageOps.mirror,
}


def _bits(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def threshold_evidence() -> None:
    pictures = [picture for _, picture in distinct_pictures()]
    hashes = [phash(picture) for picture in pictures]
    distinct = np.array([_bits(a, b) for a, b in itertools.combinations(hashes, 2)])
    print(f"## threshold: {len(pictures)} distinct pictures, {len(distinct):,} pairs")
    print(
        f"distinct pairs: min {distinct.min()}, 0.1% {np.percentile(distinct, 0.1):.0f}, "
        f"1% {np.percentile(distinct, 1):.0f}, median {np.median(distinct):.0f} bits"
    )
    print("| copy | max | 90th pct | median | found at <= 6 / 8 / 10 / 12 bits |")
    print("|---|---:|---:|---:|---|")
    for name, make in COPIES.items():
        d = np.array([_bits(h, phash(make(p))) for h, p in zip(hashes, pictures, strict=True)])
        found = " / ".join(f"{np.mean(d <= t):.0%}" for t in (6, 8, 10, 12))
        print(f"| {name} | {d.max()} | {np.percentile(d, 90):.0f} | {np.median(d):.0f} | {found} |")
    print(
        "| distinct pairs within 6 / 8 / 10 / 12 / 14 bits | "
        + " / ".join(str(int((distinct <= t).sum())) for t in (6, 8, 10, 12, 14))
        + " | | | |"
    )


def search_cost(sizes: list[int]) -> None:
    print(f"## search at threshold {DEFAULT_THRESHOLD} (wall and CPU seconds: the machine is shared)")
    print("| hashes | pairs compared | wall s | CPU s | pairs per CPU s | peak MiB | pairs found |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    wall = cpu = size = 0
    for size in sizes:
        values = rng.integers(0, 2**64, size, dtype=np.uint64, endpoint=False)
        for i in rng.choice(size - 1, size // 100, replace=False):
            values[i + 1] = values[i] ^ np.uint64(0b1011)  # planted 3 bits away
        tracemalloc.start()
        start, start_cpu = time.perf_counter(), time.process_time()
        pairs = near_pairs(values, DEFAULT_THRESHOLD)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        compared = size * (size - 1) // 2
        print(
            f"| {size:,} | {compared:.2e} | {wall:.1f} | {cpu:.1f} | {compared / cpu:.2e} | {peak:.0f} | {len(pairs):,} |"
        )
    scale = (FULL / size) ** 2
    print(
        f"projection to {FULL:,} hashes (quadratic from {size:,}): {cpu * scale / 60:.1f} CPU min, "
        f"{wall * scale / 60:.1f} min wall at this run's load"
    )


def hash_cost(repeats: int = 3) -> None:
    files = photo_files()
    datas = [path.read_bytes() for path in files]
    start = time.process_time()
    for _ in range(repeats):
        for path in files:
            file_phash(path)
    per_file = (time.process_time() - start) / (repeats * len(files))
    start = time.process_time()
    for _ in range(repeats):
        for data in datas:
            check_image(data, min_side=1)
    per_check = (time.process_time() - start) / (repeats * len(files))
    pictures = [Image.open(path).convert("RGB") for path in files]
    start = time.process_time()
    for _ in range(repeats):
        for picture in pictures:
            phash(picture)
    per_phash = (time.process_time() - start) / (repeats * len(files))
    pixels = np.mean([picture.size[0] * picture.size[1] for picture in pictures])
    print(f"## hashing ({len(files)} photos, {pixels / 1e6:.2f} Mpixel on average; CPU time)")
    print(
        f"file_phash: {per_file * 1000:.1f} CPU ms per file; check_image with its phash: {per_check * 1000:.1f} ms, "
        f"of which phash of the decoded picture (what sample adds): {per_phash * 1000:.1f} ms"
    )
    print(
        f"projection: hashing 250,000 ImageNet-21K-P files (about 0.2 Mpixel) from an old manifest, "
        f"at this rate per pixel on one core: {per_file * 0.2e6 / pixels * FULL / 60:.0f} min"
    )


def _synthetic_traces(traces: int, n_words: int) -> list:
    """``traces`` release rows of about ``n_words`` words of synthetic think text (an occasional
    "Wait, let me check."), a class each in turn, in tables of 100."""
    import pyarrow as pa

    from benchmarks.bench_metrics import sentence, vocabulary
    from common.classes import imagenet21k_classes

    words, cdf = vocabulary()
    rng = np.random.default_rng(0)
    wnids = imagenet21k_classes().wnids
    rows = []
    for i in range(traces):
        text = []
        while len(text) < n_words:
            text += sentence(rng, words, cdf).split()
            if rng.random() < 0.05:
                text += ["Wait,", "let", "me", "check."]
        wnid = wnids[i % len(wnids)]
        rows.append(
            {
                "image_id": f"{wnid}_{i}",
                "wnid": wnid,
                "think": " ".join(text),
                "answer": " ".join(text[:20]),
                "think_closed": True,
                "finish_reason": "stop",
                "forced_answer": False,
                "label_verdict": "exact",
            }
        )
    return [pa.Table.from_pylist(rows[i : i + 100]) for i in range(0, traces, 100)]


def trace_cost(traces: int, n_words: int) -> None:
    from common.classes import imagenet21k_classes
    from generation.verdicts.labels import label_hits
    from release.trace_quality import TraceQuality

    tables = _synthetic_traces(traces, n_words)
    # The class check's automaton, built once per process (TraceQuality starts it in a thread: a build
    # writes meanwhile), is left out of both figures (about 2 CPU s).
    label_hits(["warm-up"], [imagenet21k_classes().wnids[0]])
    quality = TraceQuality(["glm"])
    start, start_cpu = time.perf_counter(), time.process_time()
    for table in tables:
        quality.add("glm", table)
    added_wall, added_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    start_cpu = time.process_time()
    result = quality.result({"glm": [n_words] * traces})["glm"]
    result_cpu = time.process_time() - start_cpu
    held = TraceQuality(["glm"])  # again, for the memory it holds (tracemalloc slows Python down)
    tracemalloc.start()
    for table in tables:
        held.add("glm", table)
    kept = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    per_trace = added_cpu / traces
    sample_mib = sum(len(think) for think, _, _ in held._by["glm"].sampled.values()) / 2**20  # noqa: SLF001
    per_trace_kib = (kept - sample_mib) / traces * 1024
    print(
        f"## trace quality: {traces:,} traces of about {n_words} words (median {result['think_words']['median']:.0f})"
    )
    print(
        f"feeding: {added_wall:.1f} s wall, {added_cpu:.1f} CPU s ({per_trace * 1000:.2f} CPU ms per trace); "
        f"results (sample of {result['sample']}: distinct-n, class check on {result['class_in_think_sample']}, "
        f"Self-BLEU on {result['self_bleu_sample']}): {result_cpu:.1f} CPU s; memory held after feeding "
        f"{kept:.1f} MiB: the sample's texts {sample_mib:.1f} MiB, {per_trace_kib:.2f} KiB per trace besides"
    )
    print(
        f"projection to 500,000 traces (two annotators): {per_trace * 500_000 / 60:.0f} CPU min feeding + "
        f"{2 * result_cpu / 60:.1f} CPU min results; memory {per_trace_kib * 500_000 / 2**20:.2f} GiB "
        "(lengths and the MinHash LSH bands' keys)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 25_000, 50_000])
    parser.add_argument("--parts", nargs="+", default=["threshold", "search", "hash", "traces"])
    parser.add_argument("--traces", type=int, default=2000)
    parser.add_argument("--words", type=int, default=800)
    args = parser.parse_args()
    if "threshold" in args.parts:
        threshold_evidence()
    if "search" in args.parts:
        search_cost(args.sizes)
    if "hash" in args.parts:
        hash_cost()
    if "traces" in args.parts:
        trace_cost(args.traces, args.words)


if __name__ == "__main__":
    main()
