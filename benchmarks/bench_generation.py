"""Generation throughput: the toolkit against a bare vLLM loop and transformers, in one run.

    .venv/bin/python -m benchmarks.bench_generation --images 64 --max-tokens 64   # from the repo root

The same images and question go through ``imagenet-think generate``, a bare ``LLM.chat`` loop on
the same engine (the toolkit's overhead, target under 10%) and transformers ``generate``; every
request generates exactly ``--max-tokens`` tokens (``ignore_eos``) so that tokens/s compare.
Then answer forcing, ``keep`` against ``force_answer`` in turns: with no request truncated (the
cost of the check alone, target within noise) and with every request truncated (seconds per
forced request of ``--force-tokens``, and the overhead at 1% and 5% truncated);
``--force-answer-only`` runs these alone. Defaults use the tiny GLM-4.1V on the CPU; pass
``--config`` with a real model config on a GPU. Figures: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from common.model_refs import resolve_model
from generation.annotator import Annotator
from generation.config import load_model_config
from generation.generate import generate
from generation.images import load_rgb
from generation.runs import plan_run
from generation.verdicts.policy import prepare_verdicts
from tests.fixtures.synthetic import write_manifest_tree

REPO = Path(__file__).resolve().parent.parent


def bare_vllm(annotator: Annotator, chunks) -> tuple[float, int]:
    conversations = [[annotator._messages(load_rgb(t.absolute_path)) for t in c.tasks] for c in chunks]
    start = time.perf_counter()
    tokens = 0
    for batch in conversations:
        outputs = annotator._chat(batch)
        tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
    return time.perf_counter() - start, tokens


def _empty_caches(annotator: Annotator) -> None:
    annotator.llm.reset_prefix_cache()
    annotator.llm.reset_mm_cache()


def transformers_generate(config, chunks, max_tokens: int, batch_size: int) -> tuple[float, int]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = resolve_model(config.model)
    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).to(device).eval()
    tasks = [t for c in chunks for t in c.tasks]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": config.question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(tasks), batch_size):
        images = [load_rgb(t.absolute_path) for t in tasks[i : i + batch_size]]
        inputs = processor(images=images, text=[prompt] * len(images), return_tensors="pt", padding=True).to(
            device
        )
        with torch.inference_mode():
            out = model.generate(
                **inputs, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False
            )
        tokens += (out.shape[1] - inputs["input_ids"].shape[1]) * len(images)
    return time.perf_counter() - start, tokens


@contextlib.contextmanager
def forcing(annotator: Annotator, on: bool):
    """The annotator with answer forcing on or off (``on_truncation`` force_answer or keep), same engine."""
    saved = annotator.force_text
    annotator.force_text = saved if on else None
    try:
        yield
    finally:
        annotator.force_text = saved


def force_answer_costs(args, manifest: Path, folder: Path) -> None:
    base = load_model_config(
        args.config,
        [
            f"chunk_size={args.chunk_size}",
            "on_truncation=force_answer",
            f"force_answer_max_tokens={args.force_tokens}",
            "sampling.ignore_eos=true",
            f"sampling.max_tokens={args.max_tokens}",
        ],
    )
    scenarios = {
        "none truncated": {"min_tokens": args.max_tokens // 2, "stop": [" ", "a", "e", "i", "n", "o", "t"]},
        "all truncated": {},
    }
    print(
        f"answer forcing: {args.images} images, max_tokens {args.max_tokens}, force_answer_max_tokens {args.force_tokens}"
    )
    for name, extra in scenarios.items():
        config = dataclasses.replace(base, sampling={**base.sampling, **extra})
        annotator = Annotator(config)
        generate(config, manifest, folder / f"warm-{name}", limit=config.chunk_size, annotator=annotator)
        best = {False: float("inf"), True: float("inf")}
        summaries = {}
        for repeat in range(args.repeats):
            for on in (False, True):
                run = folder / f"{name}-{on}-{repeat}"
                with forcing(annotator, on):
                    _empty_caches(annotator)
                    start = time.perf_counter()
                    summaries[on] = generate(config, manifest, run, limit=args.images, annotator=annotator)
                    best[on] = min(best[on], time.perf_counter() - start)
        forced = summaries[True].forced
        second = summaries[True].session_output_tokens - summaries[False].session_output_tokens
        print(
            f"  {name}: keep {best[False]:6.2f} s, force_answer {best[True]:6.2f} s "
            f"({best[True] / best[False] - 1:+.1%}); truncated {summaries[True].truncated} of {args.images}, "
            f"forced {forced}, second-pass tokens {second:,}"
        )
        if forced:
            per_request = (best[True] - best[False]) / forced
            per_image = best[False] / args.images
            print(
                f"    second pass: {per_request * 1000:,.1f} ms per forced request ({per_request / per_image:.2f}x "
                f"an image's first pass); a run with 1% / 5% truncated: "
                f"{0.01 * per_request / per_image:+.1%} / {0.05 * per_request / per_image:+.1%}"
            )
        del annotator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "generation" / "tiny_glm.yaml"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--hf-batch", type=int, default=8)
    parser.add_argument("--force-tokens", type=int, default=32, help="force_answer_max_tokens")
    parser.add_argument("--repeats", type=int, default=2, help="answer forcing: runs of each, best counts")
    parser.add_argument("--force-answer-only", action="store_true", help="measure answer forcing only")
    args = parser.parse_args()
    if args.force_answer_only:
        with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
            classes = max(1, args.images // 8)
            manifest, _ = write_manifest_tree(Path(tmp), classes, -(-args.images // classes))
            force_answer_costs(args, manifest, Path(tmp))
        return
    overrides = [
        f"sampling.max_tokens={args.max_tokens}",
        "sampling.ignore_eos=true",
        f"chunk_size={args.chunk_size}",
    ]
    config = load_model_config(args.config, overrides)
    with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
        classes = max(1, args.images // 8)
        manifest, _ = write_manifest_tree(Path(tmp), classes, -(-args.images // classes))
        chunks = plan_run(manifest, config.chunk_size, limit=args.images).chunks
        annotator = Annotator(config)
        bare_vllm(annotator, chunks[:1])  # warm-up: first-request compilation
        prepare_verdicts()  # generate loads these while its first chunk generates (prepare_commits)
        # The same prompts and images run twice: each run starts with empty prefix and image caches,
        # or the second would reuse the first's work.
        _empty_caches(annotator)
        start = time.perf_counter()
        summary = generate(config, manifest, Path(tmp) / "run", limit=args.images, annotator=annotator)
        toolkit = (time.perf_counter() - start, summary.session_output_tokens)
        _empty_caches(annotator)
        bare = bare_vllm(annotator, chunks)
        del annotator
        hf = transformers_generate(config, chunks, args.max_tokens, args.hf_batch)
    rate = {
        name: tokens / seconds
        for name, (seconds, tokens) in {"toolkit": toolkit, "bare": bare, "hf": hf}.items()
    }
    print(
        f"model {config.model}, {args.images} images, {args.max_tokens} output tokens each, device {'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    for name, label in (
        ("toolkit", "imagenet-think generate"),
        ("bare", "bare LLM.chat loop"),
        ("hf", f"transformers generate (batch {args.hf_batch})"),
    ):
        seconds, tokens = {"toolkit": toolkit, "bare": bare, "hf": hf}[name]
        print(f"{label:<34} {tokens:>7,} tokens in {seconds:6.1f} s = {rate[name]:9,.1f} output tokens/s")
    print(f"toolkit overhead vs bare vLLM: {1 - rate['toolkit'] / rate['bare']:+.1%} (target < 10%)")
    print(f"vLLM (toolkit) / transformers: {rate['toolkit'] / rate['hf']:.2f}x")
    with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
        classes = max(1, args.images // 8)
        manifest, _ = write_manifest_tree(Path(tmp), classes, -(-args.images // classes))
        force_answer_costs(args, manifest, Path(tmp))


if __name__ == "__main__":
    main()
