"""``imagenet-think generate``: annotate a manifest's images with a thinking VLM through vLLM, on one
node or many: the command and the local loop.

A worker takes its chunks (sharded by SLURM array variables, else ``RANK`` / ``WORLD_SIZE``, else
one worker; unsharded workers sharing a folder claim chunks, :mod:`generation.claims`), runs each
through an :class:`~generation.annotator.Annotator` and commits it. The config is checked before
anything is written (:func:`generation.config.validate_model_config`). ``--engine ray`` runs the
chunks on a Ray cluster instead (:mod:`generation.ray_pool`). The run protocol both loops share
is :mod:`generation.runs` (chunk plan, run folder, commits) and :mod:`generation.run_check` (what is
done, resume); the rules a user relies on are in docs/generate.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from generation.claims import ChunkClaims
from generation.config import VLMConfig, load_model_config, validate_model_config
from generation.run_check import RunSummary, check_run, prepare_resume, summarize
from generation.runs import Chunk, claim_run_dir, commit_result, plan_run, prepare_commits
from imagenet_think_errors import MissingInputError, UsageError

logger = logging.getLogger(__name__)

EXAMPLE = (
    "imagenet-think generate --config configs/generation/glm41v_thinking.yaml "
    "--manifest manifest.parquet --out runs/glm"
)
RULES = (
    "rules (the config check, the run protocol and resume, workers sharing a folder, answer forcing, "
    "what a manifest must hold): docs/generate.md"
)
ENGINES = ("vllm", "ray")


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
            raise UsageError(
                f"SLURM array task {os.environ['SLURM_ARRAY_TASK_ID']} is not one of {count} tasks from "
                f"{first} in steps of {step}: submit the array as a range (--array=0-{count - 1})"
            )
        return count, offset // step
    if os.environ.get("WORLD_SIZE") and os.environ.get("RANK"):
        return int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    return 1, 0


def generate(
    config: VLMConfig,
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

    The config and arguments are checked before ``run.json`` is written or an engine starts.
    ``annotator``: an :class:`~generation.annotator.Annotator` already built for ``config`` (reused
    rather than starting another engine).
    """
    validate_model_config(config)
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise UsageError(
            f"--shard-index {shard_index} is outside 0..{num_shards - 1} (--num-shards {num_shards})"
        )
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    if num_engines is not None and num_engines < 1:
        raise UsageError(f"--num-engines {num_engines}: give a number of engines >= 1")
    run_dir = Path(out)
    plan = plan_run(manifest, config.chunk_size, limit, image_root)
    if not plan.image_root.is_dir():
        named_by = "--image-root" if image_root else f"the image root that {plan.manifest} names"
        raise MissingInputError(
            f"image folder {plan.image_root} ({named_by}) not found; pass --image-root with the folder "
            "the manifest's image_path values are relative to"
        )
    claim_run_dir(run_dir, config, plan)
    state = check_run(run_dir)  # verifies every committed chunk: size and sha256
    mine = [c for c in plan.chunks if c.index % num_shards == shard_index]
    pending = prepare_resume(run_dir, mine, state)
    logger.info(
        "%s: %d image(s) in %d chunk(s) for shard %d/%d, %d done",
        config.annotator,
        plan.images,
        len(mine),
        shard_index,
        num_shards,
        len(mine) - len(pending),
    )
    start = time.perf_counter()
    images = tokens = 0
    if pending and engine == "ray":
        from generation.ray_pool import run_with_ray

        images, tokens = run_with_ray(config, pending, run_dir, address=ray_address, num_engines=num_engines)
    elif pending:
        images, tokens = _run_local(config, pending, run_dir, annotator)
    return summarize(run_dir, time.perf_counter() - start, images, tokens)


def _run_local(config: VLMConfig, pending: list[Chunk], run_dir: Path, annotator=None) -> tuple[int, int]:
    from generation.annotator import Annotator

    annotator = annotator or Annotator(config)
    prepare_commits()  # while the first chunk generates (after the engine's processes have started)
    images = tokens = 0
    start = time.perf_counter()
    with (
        ChunkClaims(run_dir) as claims,
        tqdm(total=sum(len(c.tasks) for c in pending), unit="img", desc=config.annotator) as progress,
    ):
        for chunk in pending:
            if not claims.take(chunk.index):  # another worker's chunk
                progress.update(len(chunk.tasks))
                continue
            result = annotator.annotate(chunk.tasks)
            commit_result(run_dir, chunk, result)
            claims.release(chunk.index)
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


@contextmanager
def resumable_on_sigterm(command: str) -> Iterator[None]:
    """While the body runs, SIGTERM (what SLURM sends on pre-emption) logs one line saying that the
    run resumes with ``command``, then exits 143 (128 + SIGTERM) through :class:`SystemExit`, so that
    cleanups run; committed chunks are kept, and a resume redoes only the others."""

    def stop(signum, frame):
        logger.warning(
            "stopped by SIGTERM (a pre-emption?): the committed chunks are kept; resume with `%s`", command
        )
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def rerun_command(args: argparse.Namespace, words: list[str], skip: tuple[str, ...] = ()) -> str:
    """The command line of ``words`` (``imagenet-think generate``) with every option of ``args``
    that was given (but those named in ``skip``), as a shell would take it."""
    for name, value in vars(args).items():
        if name in skip or value is None or value is False or value == []:
            continue
        option = "--" + name.replace("_", "-")
        words += [option, *(map(str, value) if isinstance(value, list) else [str(value)])]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    with resumable_on_sigterm(rerun_command(args, ["imagenet-think", "generate"])):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    config = load_model_config(args.config, args.set)
    if (args.num_shards is None) != (args.shard_index is None):
        raise UsageError("give --num-shards and --shard-index together")
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
