"""``imagenet-think preflight --config FILE [--gpu-memory GiB]``: the checks of :mod:`preflight` on a
generation or baseline config, or on a training recipe, printed as one table and one line per
problem with its fix; exit status 1 when a problem would crash the run (docs/generate.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from common.model_refs import resolve_model
from generation.config import load_model_config
from generation.prompts import load_question
from generation.reasoning import ANSWER_CLOSE, ANSWER_OPEN, STYLES
from imagenet_think_errors import InputError, MissingInputError
from preflight import memory
from preflight.checks import Report, check_markers, default_image, first_line, load_parts, render_prompt

EXAMPLE = "imagenet-think preflight --config configs/generation/kimi_vl_thinking.yaml --gpu-memory 80"
RULES = "what is checked: docs/generate.md (model configs) and docs/training.md (recipes)"
DEFAULT_GPU_GIB = 80.0
RECIPE_KEY = "model_name_or_path"  # a training recipe has it; a model config has `model:`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        help="a model config (configs/generation, configs/models) or a training recipe",
    )
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="override model-config values"
    )
    parser.add_argument(
        "--gpu-memory",
        type=float,
        default=DEFAULT_GPU_GIB,
        metavar="GiB",
        help="memory of one GPU (default 80)",
    )
    parser.add_argument(
        "--num-gpus", type=int, default=1, help="GPUs a full-parameter recipe shards over (ZeRO-3)"
    )
    parser.add_argument("--image", help="the image to render the prompt with (default: a 500x375 stand-in)")


def run(args: argparse.Namespace) -> int:
    if args.gpu_memory <= 0 or args.num_gpus < 1:
        raise InputError("--gpu-memory must be > 0 GiB and --num-gpus >= 1")
    path = Path(args.config)
    if not path.is_file():
        raise MissingInputError(
            f"config {path} not found; give a file of configs/generation, configs/models, configs/sft or configs/grpo"
        )
    image = _image(args.image)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise InputError(f"{path} is not valid YAML: {first_line(error)}") from None
    report = Report()
    if isinstance(spec, dict) and RECIPE_KEY in spec:
        if args.set:
            raise InputError("--set overrides model configs; a recipe's values are its own (edit a copy)")
        check_recipe(report, spec, image, args.gpu_memory, args.num_gpus)
    else:
        check_model_config(report, load_model_config(path, args.set), image, args.gpu_memory)
    print(table(report))
    for row in report.rows:
        if row.status != "ok":
            print(f"{row.status}: {row.check}: {row.detail}" + (f"; fix: {row.fix}" if row.fix else ""))
    return 1 if report.failed else 0


def _image(path: str | None):
    if path is None:
        return default_image()
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:
        raise InputError(f"--image {path}: not an image ({first_line(error)})") from None


def check_model_config(report: Report, config, image, gpu_gib: float) -> None:
    """A generation or baseline config: remote code, loading, the prompt's length, markers, memory."""
    if config.trust_remote_code and not config.revision:
        report.add(
            "remote code",
            "warn",
            "trust_remote_code with revision null: the code that runs is whatever the model repo holds that day",
            "pin `revision` to the commit sha you reviewed",
        )
    model_config, processor = load_parts(
        report, config.model, resolve_model(config.model), config.revision, config.trust_remote_code
    )
    if processor is None:
        return
    rendered = _render_generation_prompt(report, config, processor, image)
    if rendered is None:
        return
    prompt, image_tokens = rendered
    if image_tokens is None:
        report.add(
            "image",
            "warn",
            f"{config.model} has no transformers image processor (vLLM brings its own): the image's tokens "
            "are not in the count below",
            "leave room for them in engine.max_model_len (the config's comment says how many)",
        )
    max_model_len = _generation_length(report, config, image, prompt, image_tokens)
    style = STYLES[config.parse_style]
    if style.open:
        markers = [style.open, style.close] + (
            [ANSWER_OPEN, ANSWER_CLOSE] if config.parse_style == "glm" else []
        )
        skip = config.sampling.get("skip_special_tokens", True)
        check_markers(
            report,
            getattr(processor, "tokenizer", processor),
            markers,
            skip,
            "set sampling.skip_special_tokens: false",
        )
    _generation_memory(report, model_config, config, gpu_gib, max_model_len)


def _render_generation_prompt(report: Report, config, processor, image) -> tuple[int, int | None] | None:
    """The prompt's tokens and, of them, the image's (None when the processor has no image
    processor); None, reported, when the prompt does not render."""
    system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    messages = [
        *system,
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": config.question}]},
    ]
    try:
        _, prompt, image_tokens = render_prompt(
            processor, messages, image, config.engine.get("mm_processor_kwargs")
        )
    except Exception as error:  # a template or processor that cannot take it: the run's first request fails
        report.add(
            "prompt",
            "error",
            f"the prompt does not render ({first_line(error)})",
            "fix the chat template or mm_processor_kwargs",
        )
        return None
    return prompt, image_tokens


def _generation_length(report: Report, config, image, prompt: int, image_tokens: int | None) -> int:
    """Check that the prompt and the longest output fit engine.max_model_len; returns the sequence
    length the memory plan is for (max_model_len, else what the run needs)."""
    output = config.sampling.get("max_tokens") or 16
    if config.on_truncation == "force_answer":
        output += config.force_answer_max_tokens
    needed, limit = prompt + output, config.engine.get("max_model_len")
    counted = (
        "text only"
        if image_tokens is None
        else f"{image_tokens} of them the {image.width}x{image.height} image's"
    )
    detail = f"{prompt} prompt tokens ({counted}) + {output} output"
    if limit is not None and needed > limit:
        report.add(
            "length",
            "error",
            f"{detail} = {needed} > engine.max_model_len {limit}",
            f"raise engine.max_model_len to at least {needed}, or lower sampling.max_tokens",
        )
    else:
        report.add(
            "length", "ok", f"{detail} = {needed} <= engine.max_model_len {limit or 'the model default'}"
        )
    return limit or needed


def _generation_memory(report: Report, model_config, config, gpu_gib: float, max_model_len: int) -> None:
    engine = config.engine
    try:
        shape = memory.model_shape(model_config, config.trust_remote_code)
    except ValueError as error:
        report.add("memory", "warn", f"not estimated: {first_line(error)}")
        return
    dtype = engine.get("dtype") or getattr(model_config, "dtype", None)
    plan = memory.generation_plan(
        shape,
        gpu_gib,
        engine.get("gpu_memory_utilization", 0.9),
        memory.dtype_bytes(str(dtype)),
        engine.get("tensor_parallel_size", 1),
        max_model_len,
    )
    detail = (
        f"{gpu_gib:g} GiB GPU: weights {plan.weights_gib:.1f} GiB ({shape.parameters:,} parameters), "
        f"KV cache {max(plan.kv_budget_gib, 0):.1f} GiB = {plan.capacity_tokens:,} tokens "
        f"({plan.kv_bytes_per_token / 1024:.0f} KiB each): {plan.full_sequences} sequence(s) of "
        f"{max_model_len:,} tokens at once (max_num_seqs {engine.get('max_num_seqs', 'default')})"
    )
    if plan.full_sequences < 1:
        report.add(
            "memory",
            "error",
            detail,
            "a larger GPU, engine.tensor_parallel_size > 1, a lower max_model_len, or a higher gpu_memory_utilization",
        )
    else:
        report.add("memory", "ok", detail)


def check_recipe(report: Report, recipe: dict, image, gpu_gib: float, gpus: int) -> None:
    """A training recipe: its model's processor and prompt as training renders it, lengths, markers, memory."""
    from training.data import user_turn
    from training.formatting import THINK_FORMATS
    from training.model import cap_image, check_prompt_renders, load_processor

    model = recipe[RECIPE_KEY]
    model_config, _ = load_parts(report, model, resolve_model(model), recipe.get("model_revision"), False)
    if model_config is None:
        return
    try:
        processor = load_processor(
            resolve_model(model), recipe.get("max_pixels"), recipe.get("chat_template_path")
        )
        prompt = user_turn(load_question(), recipe.get("system_prompt"))
        capped = cap_image(image, processor.image_processor)
        text = check_prompt_renders(prompt, capped, processor)
    except InputError as error:
        report.add("prompt", "error", str(error))
        return
    batch = processor(text=[text], images=[capped], return_tensors="pt")
    prompt_tokens = int(batch["input_ids"].shape[-1])
    grpo = "num_generations" in recipe
    if grpo:
        completion = recipe.get("max_completion_length", 256)
        sequence, loss_tokens = prompt_tokens + completion, completion
        limit = recipe.get("vllm_max_model_length") if recipe.get("use_vllm") else None
        detail = f"prompt {prompt_tokens} + completion {completion} = {sequence} tokens"
        if limit is not None and sequence > limit:
            report.add(
                "length",
                "error",
                f"{detail} > vllm_max_model_length {limit}",
                f"raise vllm_max_model_length to at least {sequence}",
            )
        else:
            report.add("length", "ok", detail + (f" <= vllm_max_model_length {limit}" if limit else ""))
    else:
        sequence = loss_tokens = recipe.get("max_length") or 1024
        status = "error" if prompt_tokens >= sequence else "ok"
        report.add(
            "length",
            status,
            f"prompt {prompt_tokens} tokens of max_length {sequence}",
            "raise max_length" if status == "error" else "",
        )
    fmt = THINK_FORMATS.get(recipe.get("think_format", "r1"), THINK_FORMATS["r1"])
    markers = [marker for marker in ("<think>", "</think>", ANSWER_OPEN, ANSWER_CLOSE) if marker in fmt]
    check_markers(
        report,
        processor.tokenizer,
        markers,
        True,
        "TRL decodes completions without special tokens: use a think_format whose markers are plain text for this tokenizer",
    )
    _training_memory(report, model_config, recipe, gpu_gib, gpus, sequence, loss_tokens, grpo)


def _training_memory(report, model_config, recipe, gpu_gib, gpus, sequence, loss_tokens, grpo) -> None:
    try:
        shape = memory.model_shape(model_config)
    except ValueError as error:
        report.add("memory", "warn", f"not estimated: {first_line(error)}")
        return
    lora = None
    if recipe.get("use_peft"):
        lora = memory.lora_parameters(
            shape, recipe.get("lora_r", 16), recipe.get("lora_target_modules") or []
        )
    colocated = grpo and recipe.get("use_vllm") and recipe.get("vllm_mode", "server") == "colocate"
    plan = memory.training_plan(
        shape,
        dtype=memory.dtype_bytes(recipe.get("dtype")),
        micro_batch=recipe.get("per_device_train_batch_size", 8),
        sequence=sequence,
        loss_tokens=loss_tokens,
        checkpointing=bool(recipe.get("gradient_checkpointing")),
        lora=lora,
        logit_bytes=memory.GRPO_LOGIT_BYTES if grpo else memory.SFT_LOGIT_BYTES,
        gpus=gpus,
        vllm_gib=gpu_gib * recipe.get("vllm_gpu_memory_utilization", 0.3) if colocated else 0.0,
    )
    parts = " + ".join(f"{name} {gib:.1f}" for name, gib in plan.parts.items())
    detail = f"{gpu_gib:g} GiB GPU: {parts} = {plan.total_gib:.1f} GiB (estimate, a micro-batch of full-length examples)"
    if plan.total_gib > gpu_gib:
        report.add(
            "memory",
            "error",
            detail,
            "lower per_device_train_batch_size and raise gradient_accumulation_steps to keep the step, enable gradient_checkpointing, or lower vllm_gpu_memory_utilization",
        )
    else:
        report.add("memory", "ok", detail)


def table(report: Report) -> str:
    """The report as a Markdown table."""
    lines = ["| check | status | detail |", "|---|---|---|"]
    lines += [f"| {row.check} | {row.status} | {row.detail.replace('|', '/')} |" for row in report.rows]
    return "\n".join(lines)
