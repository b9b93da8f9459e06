"""``imagenet-think generate --engine ray``: the same chunks, on a Ray cluster, by a pool of annotators.

Ray Data holds the pending chunks; ``map_batches`` sends them to an actor pool with one
:class:`~generation.annotator.Annotator` (one vLLM engine) per actor: one per GPU or
tensor-parallel group, or ``--num-engines``. Each actor commits its chunks itself with
:func:`generation.runs.commit_result` (the run protocol both loops share), so a Ray run
resumes, and mixes with local runs, exactly like the local loop of :mod:`generation.generate`; an
actor claims each chunk before annotating it (:mod:`generation.claims`), so a pool shares a run folder
with other workers. On a multi-node cluster start Ray on every node (``ray start --head`` /
``ray start --address=HEAD:6379``) and pass ``--ray-address auto``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from common.vllm_cpu import CPU_ENV_DEFAULTS
from generation.annotator import Annotator
from generation.claims import ChunkClaims
from generation.config import VLMConfig
from generation.runs import Chunk, ImageTask, commit_result, prepare_commits

# Settings the driver passes on to the actors' processes (an actor on a CPU sets the CPU
# defaults it is not given itself, in its Annotator).
FORWARDED_ENV = (
    *CPU_ENV_DEFAULTS,
    "HF_HUB_OFFLINE",
    "IMAGENET_THINK_CACHE",
    "HF_HOME",
)


class ChunkWorker:
    """A Ray Data actor: one engine, many chunks."""

    def __init__(self, config_json: str, run_dir: str):
        self.annotator = Annotator(VLMConfig(**json.loads(config_json)))
        prepare_commits()  # while the first chunk generates (after the engine's processes have started)
        self.run_dir = Path(run_dir)
        # Held for the actor's life; a claim it leaves (a killed actor) goes stale.
        self.claims = ChunkClaims(self.run_dir).__enter__()

    def __call__(self, batch: dict) -> dict:
        images, tokens = [], []
        for index, tasks_json in zip(batch["chunk"], batch["tasks"], strict=True):
            if not self.claims.take(int(index)):  # another worker's chunk (generation.claims)
                images.append(0)
                tokens.append(0)
                continue
            tasks = [ImageTask(**task) for task in json.loads(tasks_json)]
            result = self.annotator.annotate(tasks)
            commit_result(self.run_dir, Chunk(int(index), tasks), result)
            self.claims.release(int(index))
            images.append(len(tasks))
            tokens.append(result.output_tokens)
        return {"chunk": batch["chunk"], "images": images, "tokens": tokens}


def run_with_ray(
    config: VLMConfig,
    pending: list[Chunk],
    run_dir: Path,
    address: str | None = None,
    num_engines: int | None = None,
) -> tuple[int, int]:
    """Annotate ``pending`` chunks with a pool of engines; returns (images, output tokens) done."""
    import ray

    env = {key: os.environ[key] for key in FORWARDED_ENV if key in os.environ}
    ray.init(
        address=address, ignore_reinit_error=True, include_dashboard=False, runtime_env={"env_vars": env}
    )
    gpus = int(ray.cluster_resources().get("GPU", 0))
    gpus_per_engine = int(config.engine.get("tensor_parallel_size", 1)) if gpus else 0
    engines = num_engines or max(gpus // max(gpus_per_engine, 1), 1)  # one engine per tensor-parallel group
    items = [{"chunk": c.index, "tasks": json.dumps([asdict(t) for t in c.tasks])} for c in pending]
    results = ray.data.from_items(items).map_batches(
        ChunkWorker,
        fn_constructor_kwargs={"config_json": json.dumps(asdict(config)), "run_dir": str(run_dir.resolve())},
        batch_size=1,
        concurrency=engines,
        num_gpus=gpus_per_engine,
        num_cpus=1,
    )
    images = tokens = 0
    with tqdm(
        total=sum(len(c.tasks) for c in pending), unit="img", desc=f"{config.annotator} (ray x{engines})"
    ) as progress:
        for row in results.iter_rows():
            images, tokens = images + int(row["images"]), tokens + int(row["tokens"])
            progress.update(int(row["images"]))
    return images, tokens
