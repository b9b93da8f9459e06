"""Generation throughput: the toolkit against a bare vLLM loop and transformers, in one run.

    .venv/bin/python -m benchmarks.bench_generation --images 64 --max-tokens 64   # from the repo root

The same images and question go through, in this process:

1. ``imagenet-think generate`` (image loading, parsing, records, atomic shards);
2. a bare ``LLM.chat`` loop over the same prepared conversations, chunk by chunk, on the
   same engine: the toolkit's overhead is 1 - (1) / (2) throughput (target: under 10%);
3. transformers ``generate`` in batches of ``--hf-batch`` (vLLM should be well ahead).

Every request generates exactly ``--max-tokens`` tokens (``ignore_eos``), so output tokens/s
compare. Defaults use the tiny local GLM-4.1V on the CPU; pass ``--config`` with a real model
config on a GPU machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from generation.annotator import Annotator
from generation.config import load_model_config
from generation.generate import generate
from generation.images import load_rgb
from generation.models import resolve_model
from generation.runs import plan_run
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "generation" / "tiny_glm.yaml"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--hf-batch", type=int, default=8)
    args = parser.parse_args()
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
        bare_vllm(annotator, chunks[:1])  # warm-up: first-request compilation and caches
        start = time.perf_counter()
        summary = generate(config, manifest, Path(tmp) / "run", limit=args.images, annotator=annotator)
        toolkit = (time.perf_counter() - start, summary.session_output_tokens)
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


if __name__ == "__main__":
    main()
