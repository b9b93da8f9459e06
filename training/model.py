"""The model side of the SFT and GRPO recipes: the processor with its image budget and chat template
(:func:`load_processor`; :func:`cap_image` resizes an image to exactly what that processor keeps,
so a vLLM engine built from the model folder sees the same image tokens; :func:`check_prompt_renders`),
the model (:func:`load_model`, its vision tower frozen unless trained) and the LoRA targets that
keep adapters off the vision tower (:func:`peft_config_for`)."""

from __future__ import annotations

import math
import re
from pathlib import Path

from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import ModelConfig, get_peft_config

from imagenet_think_errors import InputError, MissingInputError
from training.data import looks_local
from training.recipes import first_line

VISION_MODULE = "visual"  # the vision tower (and its merger) in Qwen2-VL, Qwen2.5-VL and GLM-4.1V
LANGUAGE_MODEL = "language_model"
DEFAULT_LORA_TARGETS = tuple("q_proj k_proj v_proj o_proj gate_proj up_proj down_proj gate_up_proj".split())


def load_processor(model_path: str, max_pixels: int | None, chat_template_path: str | None):
    """The model's processor, with the recipe's image budget and chat template (a .jinja file)."""
    if looks_local(model_path) and not Path(model_path).expanduser().is_dir():
        raise MissingInputError(
            f"model_name_or_path {model_path}: no such folder; give a model folder, a Hub id (org/name) "
            "or tiny:<arch>"
        )
    try:
        processor = AutoProcessor.from_pretrained(model_path)
    except (OSError, ValueError) as error:
        raise InputError(
            f"model_name_or_path {model_path}: cannot load its processor: {first_line(error)}"
        ) from error
    if max_pixels is not None:
        size = dict(processor.image_processor.size)
        size["longest_edge"], size["shortest_edge"] = max_pixels, min(size["shortest_edge"], max_pixels)
        processor.image_processor.size = size
    if chat_template_path is not None:
        if not chat_template_path.endswith((".jinja", ".j2")):
            raise InputError(
                f"chat_template_path {chat_template_path}: not a .jinja file; give the template itself "
                "(a .jinja or .j2 file)"
            )
        if not Path(chat_template_path).is_file():
            raise MissingInputError(f"chat_template_path {chat_template_path}: no such file")
        processor.chat_template = Path(chat_template_path).read_text(encoding="utf-8")
    return processor


def _resize_factor(image_processor) -> int:
    """The side length an image is cut into merged patches by (28 for Qwen2-VL, Qwen2.5-VL, GLM-4.1V)."""
    return int(getattr(image_processor, "patch_size", 1) or 1) * int(
        getattr(image_processor, "merge_size", 1) or 1
    )


def _smart_resize(height: int, width: int, factor: int, low: int | None, high: int) -> tuple[int, int]:
    """Qwen2-VL's ``smart_resize``: sides multiples of ``factor``, pixels within ``[low, high]``."""
    new_height, new_width = (
        max(factor, round(height / factor) * factor),
        max(factor, round(width / factor) * factor),
    )
    if new_height * new_width > high:
        beta = math.sqrt(height * width / high)
        new_height = max(factor, math.floor(height / beta / factor) * factor)
        new_width = max(factor, math.floor(width / beta / factor) * factor)
    elif low is not None and new_height * new_width < low:
        beta = math.sqrt(low / (height * width))
        new_height = math.ceil(height * beta / factor) * factor
        new_width = math.ceil(width * beta / factor) * factor
    return new_height, new_width


def cap_image(image: Image.Image, image_processor) -> Image.Image:
    """``image`` in RGB, resized to a size ``image_processor`` keeps as it is: sides multiples of the
    merged patch, pixels within its ``size`` budget (the processor's own resize, repeated until it no
    longer changes the size). Any processor of the model family whose budget holds that size (a vLLM
    engine built from the model folder, whose budget is the model's) then makes the same image tokens."""
    image = image.convert("RGB") if image.mode != "RGB" else image
    size = dict(image_processor.size)
    low, high = size.get("shortest_edge"), size.get("longest_edge")
    if high is None:
        return image
    factor = _resize_factor(image_processor)
    width, height = image.size
    new_height, new_width = height, width
    for _ in range(4):  # a fixed point after one or two rounds (a first round can fall below the minimum)
        resized = _smart_resize(new_height, new_width, factor, low, high)
        if resized == (new_height, new_width):
            break
        new_height, new_width = resized
    if (new_width, new_height) == (width, height):
        return image
    return image.resize((new_width, new_height), Image.Resampling.BICUBIC)


def check_prompt_renders(prompt: list[dict], image: Image.Image, processor) -> str:
    """The prompt as the chat template renders it for generation; fail if the template drops the system
    turn or the question, or if the image does not become the image tokens its pixels make."""
    try:
        text = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    except Exception as error:  # jinja2 errors, a template that cannot render structured content
        raise InputError(
            f"the chat template cannot render the prompt ({first_line(error)}); give a template that renders a "
            "system turn, an image and a question (chat_template_path: a .jinja file)"
        ) from error
    for message in prompt:
        for part in message["content"]:
            if part["type"] == "text" and " ".join(part["text"].split()) not in " ".join(text.split()):
                raise InputError(
                    f"the chat template drops the {message['role']} turn's text {part['text'][:80]!r} from the "
                    f"prompt (it renders {text[:300]!r}); give a template that keeps it "
                    "(chat_template_path: a .jinja file)"
                )
    batch = processor(text=[text], images=[image], return_tensors="pt")
    token = getattr(processor, "image_token", None)
    if token is not None and "image_grid_thw" in batch:
        found = int((batch["input_ids"] == processor.tokenizer.convert_tokens_to_ids(token)).sum())
        merge = int(getattr(processor.image_processor, "merge_size", 1) or 1)
        expected = int(batch["image_grid_thw"].prod(dim=-1).sum()) // merge**2
        if found != expected:
            raise InputError(
                f"the chat template renders {found} image tokens for an image of {expected}; give a template "
                "that puts the family's image placeholder where the image is (chat_template_path)"
            )
    return text


def language_model_targets(names: list[str] | tuple[str, ...]) -> str:
    """A PEFT ``target_modules`` regex matching ``names`` inside the language model only (the
    vision MLP reuses ``gate_proj``/``up_proj``/``down_proj``)."""
    return rf".*\.{LANGUAGE_MODEL}\..*\.({'|'.join(map(re.escape, names))})"


def peft_config_for(model_args: ModelConfig, train_vision_tower: bool):
    """TRL's LoRA config from ``model_args``, restricted to the language model's projections."""
    config = get_peft_config(model_args)
    if config is None:
        return None
    names = model_args.lora_target_modules or DEFAULT_LORA_TARGETS
    names = [names] if isinstance(names, str) else names  # TRL's ModelConfig makes a one-item list a string
    if list(names) == ["all-linear"]:  # PEFT's every linear layer but the output, here of the language model
        config.target_modules, config.exclude_modules = "all-linear", rf"(.*\.)?{VISION_MODULE}(\..*)?"
    else:
        config.target_modules = language_model_targets(names)
    if train_vision_tower:
        config.modules_to_save = [*(config.modules_to_save or []), VISION_MODULE]
    return config


def load_model(model_path: str, model_args: ModelConfig, training_args, train_vision_tower: bool):
    """The model in the recipe's dtype, its vision tower frozen unless ``train_vision_tower``."""
    model = AutoModelForImageTextToText.from_pretrained(
        model_path,
        revision=model_args.model_revision,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=training_args.trust_remote_code,
    )
    if not train_vision_tower:
        for name, parameter in model.named_parameters():
            if f".{VISION_MODULE}." in f".{name}":
                parameter.requires_grad_(False)
    return model
