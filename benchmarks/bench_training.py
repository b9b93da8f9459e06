"""Training throughput of an SFT recipe: samples/s and tokens/s over N optimizer steps.

    # from the repo root: the tiny recipe on the CPU, on a synthetic release built on the fly
    .venv/bin/python -m benchmarks.bench_training --config configs/sft/tiny.yaml --synthetic 64 --max_steps 30
    # a GPU recipe on a real release, under its launcher (-m: run as a module)
    accelerate launch --config_file configs/accelerate/zero2.yaml -m benchmarks.bench_training \\
        --config configs/sft/qwen2_5_vl_7b_lora.yaml --dataset_name org/imagenet-think --max_steps 50

Every argument but ``--warmup`` and ``--synthetic`` goes to ``training/sft.py``
(recipe, overrides). The run builds the trainer exactly as the script does,
trains ``max_steps`` steps without saving or reporting, and times the steps
after the first ``--warmup`` ones. Samples are counted over all processes;
tokens are the non-padding input tokens, image tokens included.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from release.build import BuildOptions, build_release
from tests.fixtures.synthetic import make_record, write_manifest_tree, write_run
from training.sft import build_trainer, parse_args


class StepTimer(TrainerCallback):
    """Wall time and input tokens between the end of step ``warmup`` and the end of training."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.start: tuple[float, int] | None = None
        self.end: tuple[float, int] | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = (time.perf_counter(), state.num_input_tokens_seen)

    def on_train_end(self, args, state, control, **kwargs):
        self.end = (time.perf_counter(), state.num_input_tokens_seen)


def synthetic_release(images: int) -> Path:
    """A release of ``images`` synthetic images with two annotators (built once per size, in the temp dir)."""
    out = Path(tempfile.gettempdir()) / f"imagenet-think-bench-{images}"
    if not (out / "imagenet_think" / "both").is_dir():
        manifest, entries = write_manifest_tree(out, classes=max(1, images // 16), per_class=min(images, 16))
        rng = random.Random(0)
        for annotator in ("glm", "kimi"):
            write_run(out / "runs" / annotator, [make_record(e, annotator, rng) for e in entries])
        build_release(
            BuildOptions([out / "runs" / "glm", out / "runs" / "kimi"], manifest, out / "imagenet_think")
        )
    return out / "imagenet_think"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--synthetic", type=int, help="train on a synthetic release of this many images")
    bench, rest = parser.parse_known_args(argv)
    data_args, training_args, model_args = parse_args(rest)
    if bench.synthetic:
        with training_args.main_process_first(desc="synthetic release"):
            data_args.dataset_name = str(synthetic_release(bench.synthetic))
    if training_args.max_steps <= bench.warmup:
        raise SystemExit(f"--max_steps ({training_args.max_steps}) must exceed --warmup ({bench.warmup})")
    training_args.save_strategy, training_args.eval_strategy, training_args.report_to = "no", "no", []
    training_args.include_num_input_tokens_seen = "non_padding"
    trainer = build_trainer(data_args, training_args, model_args)
    timer = StepTimer(bench.warmup)
    trainer.add_callback(timer)
    trainer.train()
    seconds = timer.end[0] - timer.start[0]
    steps = training_args.max_steps - bench.warmup
    world = trainer.accelerator.num_processes
    samples = (
        steps * training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world
    )
    tokens = timer.end[1] - timer.start[1]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    trainer.accelerator.print(
        f"{model_args.model_name_or_path} on {world} x {device}: {steps} steps in {seconds:.2f} s, "
        f"{seconds / steps:.3f} s/step, {samples / seconds:.2f} samples/s, {tokens / seconds:.0f} tokens/s"
    )
    if torch.cuda.is_available():
        trainer.accelerator.print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    trainer.end()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
