"""The first GPU measurements, on random-weight models of the real sizes built offline from their configs.

``python -m benchmarks.gpu_check --size real`` (what ``benchmarks/gpu_check.sh`` runs) needs only
torch, transformers and peft. Parts: ``sft``, LoRA steps of Qwen2.5-VL-3B as the 3B SFT recipe sets
them (step time, tokens/s, peak memory, MFU: 4 x parameters x tokens against the GPU's dense bf16
peak); ``grpo``, two GRPO steps as TRL takes them without vLLM (sampled completions, a think-format
reward, group-normalised advantages, token-level loss, ``beta`` 0); ``metrics``, BERTScore and
Sentence-BERT pairs/s at their real sizes. Weights are random (throughput does not depend on them)
and token ids synthetic, so nothing is read from the Hub; ``--size tiny`` runs the same code on the
CPU (the test suite does). The table to fill is in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from generation.reasoning import parse_reasoning

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # dense, SXM
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MERGE = 2  # Qwen2.5-VL merges 2x2 patches into one image token


@dataclass(frozen=True)
class Sizes:
    text: dict
    vision: dict
    image_grid: tuple[int, int]  # patches (height, width) of the image; tokens = h * w / MERGE**2
    sequence: int
    micro_batch: int
    lora_r: int
    prompts: int
    generations: int
    completion: int
    steps: int
    bert: dict
    minilm: dict
    pairs: int
    bert_layer: int


REAL = Sizes(  # Qwen/Qwen2.5-VL-3B-Instruct, roberta-large, all-MiniLM-L6-v2 (their config.json sizes)
    text={
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    },
    vision={
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 2048,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
    image_grid=(32, 64),
    sequence=2560,
    micro_batch=4,
    lora_r=32,
    prompts=2,
    generations=8,
    completion=256,
    steps=3,
    bert={
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "vocab_size": 50265,
        "max_position_embeddings": 514,
    },
    minilm={
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "vocab_size": 30522,
    },
    pairs=512,
    bert_layer=17,
)
TINY = Sizes(
    text={
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
    },
    vision={
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "fullatt_block_indexes": [1],
    },
    image_grid=(4, 4),
    sequence=48,
    micro_batch=2,
    lora_r=4,
    prompts=2,
    generations=2,
    completion=8,
    steps=2,
    bert={
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 1000,
        "max_position_embeddings": 514,
    },
    minilm={
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 1000,
    },
    pairs=8,
    bert_layer=2,
)
SIZES = {"real": REAL, "tiny": TINY}


def _device() -> tuple[str, torch.dtype]:
    return ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 1024**3 if device == "cuda" else None


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_tflops() -> float | None:
    """The dense bf16 peak of the GPU in use, where it is one of :data:`PEAK_BF16_TFLOPS`."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def build_vlm(sizes: Sizes, device: str, dtype: torch.dtype):
    """A random-weight Qwen2.5-VL of ``sizes`` with LoRA on its language model (the recipes' targets)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(text_config=sizes.text, vision_config=sizes.vision, tie_word_embeddings=True)
    config.image_token_id = config.text_config.vocab_size - 1
    config.vision_start_token_id = config.text_config.vocab_size - 2
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation="sdpa"
        )
    targets = r".*language_model.*\.(" + "|".join(LORA_TARGETS) + r")$"
    lora = LoraConfig(
        r=sizes.lora_r, lora_alpha=2 * sizes.lora_r, target_modules=targets, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, lora), config


def _image_inputs(sizes: Sizes, config, count: int, device: str, dtype: torch.dtype) -> dict:
    height, width = sizes.image_grid
    patch_values = 3 * config.vision_config.temporal_patch_size * config.vision_config.patch_size**2
    return {
        "pixel_values": torch.randn(count * height * width, patch_values, device=device, dtype=dtype),
        "image_grid_thw": torch.tensor([[1, height, width]] * count, device=device),
    }


def _prompt_ids(sizes: Sizes, config, length: int, count: int, device: str) -> torch.Tensor:
    """``count`` rows of ``length`` ids: a vision start, the image's tokens, then random text."""
    image_tokens = sizes.image_grid[0] * sizes.image_grid[1] // MERGE**2
    text = length - image_tokens - 1
    assert text > 0, "the sequence must be longer than the image"
    vocab = config.text_config.vocab_size - 2
    ids = torch.randint(0, vocab, (count, length), device=device)
    ids[:, 0] = config.vision_start_token_id
    ids[:, 1 : 1 + image_tokens] = config.image_token_id
    return ids


def sft_steps(sizes: Sizes) -> dict:
    device, dtype = _device()
    model, config = build_vlm(sizes, device, dtype)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    parameters = sum(p.numel() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    ids = _prompt_ids(sizes, config, sizes.sequence, sizes.micro_batch, device)
    labels = ids.clone()
    labels[ids == config.image_token_id] = -100
    batch = {
        "input_ids": ids,
        "labels": labels,
        **_image_inputs(sizes, config, sizes.micro_batch, device, dtype),
    }
    times = []
    _reset_peak(device)
    for _ in range(sizes.steps + 1):  # the first step warms up (kernels, allocator)
        _sync(device)
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - start)
    step = sum(times[1:]) / len(times[1:])
    tokens = sizes.micro_batch * sizes.sequence
    peak = peak_tflops()
    flops = 4 * parameters * tokens  # forward + activation gradients; frozen weights get none
    result = {
        "parameters": parameters,
        "trainable": sum(p.numel() for p in trainable),
        "tokens_per_step": tokens,
        "step_s": step,
        "tokens_per_s": tokens / step,
        "peak_gib": _peak_gib(device),
        "mfu": flops / step / (peak * 1e12) if peak else None,
        "loss": float(loss.detach()),
    }
    del model, optimizer
    return result


def _think_reward(texts: list[str]) -> list[float]:
    return [1.0 if parse_reasoning(text, "think_tags").closed else 0.0 for text in texts]


def grpo_steps(sizes: Sizes, steps: int = 2) -> dict:
    device, dtype = _device()
    model, config = build_vlm(sizes, device, dtype)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    group = sizes.prompts * sizes.generations
    image_tokens = sizes.image_grid[0] * sizes.image_grid[1] // MERGE**2
    prompt_length = image_tokens + 1 + max(8, sizes.sequence // 40)
    generate_s, update_s, completion_tokens, rewards = [], [], 0, []
    _reset_peak(device)
    for _ in range(steps):
        prompts = _prompt_ids(sizes, config, prompt_length, sizes.prompts, device).repeat_interleave(
            sizes.generations, dim=0
        )
        images = _image_inputs(sizes, config, group, device, dtype)
        _sync(device)
        start = time.perf_counter()
        out = _sample(model, prompts, images, sizes.completion)
        _sync(device)
        generate_s.append(time.perf_counter() - start)
        completions = out[:, prompts.shape[1] :]
        completion_tokens += completions.numel()
        texts = [" ".join(map(str, row.tolist()[:8])) for row in completions]
        reward = torch.tensor(_think_reward(texts), device=device).view(sizes.prompts, sizes.generations)
        rewards.append(float(reward.mean()))
        advantages = ((reward - reward.mean(1, keepdim=True)) / (reward.std(1, keepdim=True) + 1e-4)).view(-1)
        start = time.perf_counter()
        _policy_update(model, optimizer, out, images, prompts.shape[1], advantages)
        _sync(device)
        update_s.append(time.perf_counter() - start)
    total = sum(generate_s) + sum(update_s)
    result = {
        "steps": steps,
        "completions_per_step": group,
        "completion_tokens": completion_tokens,
        "generate_s": sum(generate_s) / steps,
        "update_s": sum(update_s) / steps,
        "completion_tokens_per_s": completion_tokens / sum(generate_s),
        "step_s": total / steps,
        "peak_gib": _peak_gib(device),
        "mean_reward": sum(rewards) / len(rewards),
    }
    del model, optimizer
    return result


def _sample(model, prompts: torch.Tensor, images: dict, completion: int) -> torch.Tensor:
    """The prompts with ``completion`` sampled tokens each, as GRPO's generation step makes them."""
    model.eval()
    with torch.no_grad():
        return model.generate(
            input_ids=prompts,
            attention_mask=torch.ones_like(prompts),
            **images,
            do_sample=True,
            temperature=1.0,
            max_new_tokens=completion,
            min_new_tokens=completion,  # random weights: every completion runs to its budget
            pad_token_id=0,
        )


def _policy_update(
    model, optimizer, out: torch.Tensor, images: dict, prompt_length: int, advantages: torch.Tensor
) -> None:
    """One GRPO optimizer step on the sampled sequences ``out``: token-level loss, ``beta`` 0."""
    completions = out[:, prompt_length:]
    model.train()
    logits = model(input_ids=out, attention_mask=torch.ones_like(out), **images).logits
    logits = logits[:, prompt_length - 1 : -1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, completions.unsqueeze(-1)).squeeze(-1)
    ratio = torch.exp(logps - logps.detach())  # one update per generation batch: the ratio is 1
    loss = -(ratio * advantages.unsqueeze(1)).sum() / completions.numel()  # token-level (DAPO)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _encoder(kind: str, config: dict, device: str, dtype: torch.dtype):
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    config_class, model_class = (
        (RobertaConfig, RobertaModel) if kind == "roberta" else (BertConfig, BertModel)
    )
    with torch.device(device):
        return model_class(config_class(**config, attn_implementation="sdpa")).to(dtype).eval()


def _batches(total: int, size: int):
    for start in range(0, total, size):
        yield min(size, total - start)


def metric_throughput(sizes: Sizes, batch_size: int = 64) -> dict:
    """BERTScore and Sentence-BERT pairs/s: both texts of a pair encoded, then matched or compared."""
    device, dtype = _device()
    results = {}
    bert = _encoder("roberta", sizes.bert, device, dtype)
    length = min(512, sizes.bert["max_position_embeddings"] - 2)
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for count in _batches(sizes.pairs, batch_size):
            ids = torch.randint(3, sizes.bert["vocab_size"], (2 * count, length), device=device)
            hidden = bert(input_ids=ids, output_hidden_states=True).hidden_states[sizes.bert_layer]
            hidden = torch.nn.functional.normalize(hidden.float(), dim=-1)
            candidates, references = hidden[:count], hidden[count:]
            similarity = candidates @ references.transpose(1, 2)
            precision, recall = similarity.max(2).values.mean(1), similarity.max(1).values.mean(1)
            f1 = 2 * precision * recall / (precision + recall)
    _sync(device)
    results["bertscore_pairs_per_s"] = sizes.pairs / (time.perf_counter() - start)
    results["bertscore_check"] = float(f1.mean())
    del bert
    sbert = _encoder("bert", sizes.minilm, device, dtype)
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for count in _batches(sizes.pairs, batch_size):
            ids = torch.randint(3, sizes.minilm["vocab_size"], (2 * count, 256), device=device)
            embedding = torch.nn.functional.normalize(
                sbert(input_ids=ids).last_hidden_state.float().mean(1), dim=-1
            )
            cosine = (embedding[:count] * embedding[count:]).sum(-1)
    _sync(device)
    results["sbert_pairs_per_s"] = sizes.pairs / (time.perf_counter() - start)
    results["sbert_check"] = float(cosine.mean())
    return results


def table(report: dict) -> str:
    def fmt(value):
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return f"{value:,}"

    lines = [
        f"device: {report['device']}, size: {report['size']}",
        "",
        "| part | measure | figure |",
        "|---|---|---:|",
    ]
    for part in ("sft", "grpo", "metrics"):
        lines += [f"| {part} | {key} | {fmt(value)} |" for key, value in report[part].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="real")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument(
        "--parts", nargs="+", choices=("sft", "grpo", "metrics"), default=["sft", "grpo", "metrics"]
    )
    args = parser.parse_args(argv)
    sizes = SIZES[args.size]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report = {
        "device": device,
        "size": args.size,
        "torch": torch.__version__,
        "sft": {},
        "grpo": {},
        "metrics": {},
    }
    runs = {"sft": sft_steps, "grpo": grpo_steps, "metrics": metric_throughput}
    for part in args.parts:
        start = time.perf_counter()
        report[part] = runs[part](sizes)
        report[part]["wall_s"] = time.perf_counter() - start
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(report))
    finite = all(
        math.isfinite(value) for part in runs for value in report[part].values() if isinstance(value, float)
    )
    return 0 if finite else 1


if __name__ == "__main__":
    raise SystemExit(main())
