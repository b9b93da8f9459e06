"""GRPO throughput of a recipe: optimizer steps/s and completions/s over N steps (generation included).

    .venv/bin/python -m benchmarks.bench_grpo --config configs/grpo/tiny.yaml --synthetic 64 --max_steps 12
    accelerate launch --config_file configs/accelerate/single_gpu.yaml -m benchmarks.bench_grpo \
        --config configs/grpo/qwen2_5_vl_3b_lora.yaml --dataset_name org/imagenet-think --max_steps 20

Every argument but ``--warmup`` and ``--synthetic`` goes to ``training/grpo.py``. The trainer is
built exactly as the recipe builds it, trains ``max_steps`` steps without saving or reporting, and
the steps after the first ``--warmup`` are timed; a step generates, scores and trains on its
completions, counted over all processes. Figures: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import TrainerCallback

from benchmarks.bench_training import synthetic_release
from training.grpo import build_trainer, parse_args


class StepTimer(TrainerCallback):
    """Wall time between the end of step ``warmup`` and the end of training."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.start: float | None = None
        self.end: float | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.end = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--synthetic", type=int, help="train on a synthetic release of this many images")
    bench, rest = parser.parse_known_args(argv)
    data_args, reward_args, training_args, model_args = parse_args(rest)
    if bench.synthetic:
        with training_args.main_process_first(desc="synthetic release"):
            data_args.dataset_name = str(synthetic_release(bench.synthetic))
        data_args.max_train_samples = None
    if training_args.max_steps <= bench.warmup:
        raise SystemExit(f"--max_steps ({training_args.max_steps}) must exceed --warmup ({bench.warmup})")
    training_args.save_strategy, training_args.eval_strategy, training_args.report_to = "no", "no", []
    training_args.logging_steps = 1
    trainer = build_trainer(data_args, reward_args, training_args, model_args)
    timer = StepTimer(bench.warmup)
    trainer.add_callback(timer)
    trainer.train()
    seconds = timer.end - timer.start
    steps = training_args.max_steps - bench.warmup
    world = trainer.accelerator.num_processes
    per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world
    timed = [log for log in trainer.state.log_history if "completions/mean_length" in log][bench.warmup :]
    tokens = sum(log["completions/mean_length"] for log in timed) * per_step
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    generation = f"vLLM {training_args.vllm_mode}" if training_args.use_vllm else "transformers"
    trainer.accelerator.print(
        f"{model_args.model_name_or_path} on {world} x {device}, {generation} generation, "
        f"{training_args.num_generations} x {training_args.max_completion_length} tokens per prompt: "
        f"{steps} steps in {seconds:.2f} s, {steps / seconds:.3f} steps/s, "
        f"{steps * per_step / seconds:.1f} completions/s, {tokens / seconds:.0f} completion tokens/s"
    )
    if torch.cuda.is_available():
        trainer.accelerator.print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    trainer.end()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
