"""What the SFT and GRPO recipes share: recipes and arguments, the release, the user turn, the processor
with its image budget and chat template, the model, and the LoRA targets that keep adapters off the
vision tower.

Both ``training/sft.py`` and ``training/grpo.py`` read a recipe (``--config configs/<stage>/*.yaml``)
with command-line overrides through :func:`parse_recipe_args`, load one split of a release with
:func:`load_split`, build the user turn (the image, then the question, after an optional system
turn) with :func:`user_turn`, load the processor with :func:`load_processor` (``max_pixels`` caps
the image processor; :func:`cap_image` resizes an image to exactly what that processor keeps, so a
vLLM engine built from the model folder sees the same image tokens), check the chat template with
:func:`check_prompt_renders`, load the model with :func:`load_model` (``tiny:`` references built
on first use) and restrict LoRA to the language model with :func:`peft_config_for`. Every expected
failure is an :mod:`imagenet_think_errors` error whose message names the input and the fix;
:func:`run_script` prints it as one ``PROG: error: ...`` line.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from datasets import Dataset, load_dataset
from datasets.exceptions import DatasetNotFoundError
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import ModelConfig, TrlParser, get_peft_config

from common.model_refs import resolve_model
from imagenet_think_errors import InputError, MissingInputError, UsageError, run_reporting
from release.folder import MARKER, verify_release

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "LANGUAGE_MODEL",
    "VISION_MODULE",
    "cap_image",
    "check_dataset_name",
    "check_prompt_renders",
    "check_recipe",
    "first_line",
    "language_model_targets",
    "load_model",
    "load_processor",
    "load_split",
    "parse_recipe_args",
    "peft_config_for",
    "resolve_model",
    "run_script",
    "skip_cpu_shm_build",
    "user_turn",
]

VISION_MODULE = "visual"  # the vision tower (and its merger) in Qwen2-VL, Qwen2.5-VL and GLM-4.1V
LANGUAGE_MODEL = "language_model"
DEFAULT_LORA_TARGETS = tuple("q_proj k_proj v_proj o_proj gate_proj up_proj down_proj gate_up_proj".split())


# Recipes and arguments.


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def check_recipe(path: str, parser: TrlParser, prog: str, recipes: str) -> None:
    """Fail with the fix if the recipe is missing, is not a YAML mapping or has a key no argument has."""
    recipe = Path(path)
    if not recipe.is_file():
        raise MissingInputError(
            f"recipe {path} (--config): no such file; the recipes are {recipes}"
            if not recipe.exists()
            else f"recipe {path} (--config): not a file; give one of {recipes}"
        )
    try:
        spec = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or " ".join(str(error).split())
        raise InputError(f"recipe {path}: not valid YAML{where}: {problem}") from error
    if not isinstance(spec, dict):
        raise InputError(f"recipe {path}: expected a mapping of argument names to values (key: value lines)")
    known = {action.dest for action in parser._actions} | {"env"}  # TRL reads `env:` itself
    unknown = [key for key in spec if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise InputError(
            f"recipe {path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; the keys are "
            f"the arguments `python {prog} --help` lists"
        )


def skip_cpu_shm_build() -> None:
    """On the CPU, DeepSpeed compiles its shared-memory allreduce op (minutes) when it sets up the process
    group; only its inference allreduce uses it, so training (gloo) goes without."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true" and not torch.cuda.is_available():
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def parse_recipe_args(
    argv: list[str] | None, types: tuple[type, ...], prog: str, recipes: str, description: str | None = None
) -> tuple:
    """The recipe (``--config FILE.yaml``) with command-line overrides, parsed into ``types``. A missing
    recipe, an unknown key or argument, or a value that TRL or transformers reject raises an
    :class:`InputError` (a :class:`UsageError` for the command line). ``description`` heads ``--help``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser(types, prog=prog, description=description)
    source = "the arguments"
    if "--config" in argv:
        at = argv.index("--config") + 1
        if at == len(argv) or argv[at].startswith("--"):
            raise UsageError(f"--config needs a recipe file, one of {recipes}")
        check_recipe(argv[at], parser, prog, recipes)
        source = f"recipe {argv[at]} (or the arguments)"
    skip_cpu_shm_build()  # before the training config, which sets up the process group
    try:
        *parsed, unused = parser.parse_args_and_config(argv, return_remaining_strings=True)
    except ValueError as error:  # the configs' and TrainingArguments' checks of the values
        raise InputError(f"{source}: {first_line(error)}") from error
    if unused:
        raise UsageError(f"unknown arguments {unused}; `python {prog} --help` lists the arguments")
    return tuple(parsed)


def run_script(prog: str, call: Callable[[], int | None]) -> int:
    """``call()``'s exit status; an expected failure prints ``PROG: error: ...`` (one per process,
    ``[rank N]`` when there are several) and returns 1 (2 for a usage error)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    name = f"{prog} [rank {os.environ.get('RANK', '0')}]" if world_size > 1 else prog
    return run_reporting(name, call)


# The release.


def _looks_local(name: str) -> bool:
    """Whether ``name`` can only be a local path: not ``org/name``, as Hub ids are."""
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") != 1


def check_dataset_name(name: str) -> None:
    """Fail early if ``name`` can only be a local folder and there is none."""
    if _looks_local(name) and not Path(name).expanduser().is_dir():
        raise MissingInputError(
            f"dataset_name {name}: no such folder; give a release folder written by `imagenet-think build` "
            "or a Hub dataset id (org/name)"
        )


def load_split(name: str, config: str, split: str) -> Dataset:
    """One split of a release folder or Hub dataset; a wrong name, config or split is an :class:`InputError`.
    A release folder (with ``release.json``) is verified first (:func:`release.folder.verify_release`)."""
    check_dataset_name(name)
    folder = Path(name).expanduser()
    where = f"dataset_name {name}"
    if (folder / MARKER).is_file():  # a release folder: read only as built
        verify_release(folder, configs=(config,))
    try:
        return load_dataset(str(folder) if folder.is_dir() else name, config, split=split)
    except DatasetNotFoundError as error:
        raise MissingInputError(
            f"{where}: no such folder here, and no such dataset on the Hub (a private or gated one needs "
            "`hf auth login`)"
        ) from error
    except ConnectionError as error:
        raise MissingInputError(
            f"{where}: no such folder here, and the Hub cannot be reached ({first_line(error)}); "
            "give a release folder, or go online"
        ) from error
    except FileNotFoundError as error:
        raise InputError(
            f"{where}: {first_line(error)}; give a release folder written by `imagenet-think build`"
        ) from error
    except ValueError as error:
        message = first_line(error)
        if "BuilderConfig" in message:
            raise InputError(
                f"dataset_config {config!r} of {name}: {message}; set dataset_config, or give a release "
                "written by `imagenet-think build` (configs glm, kimi, both)"
            ) from error
        if "split" in message.lower():
            raise InputError(
                f"split {split!r} of {name}: {message} (set dataset_train_split/dataset_test_split)"
            ) from error
        raise InputError(f"{where} ({config}, {split}): {message}") from error


# The user turn, the processor and the chat template.


def user_turn(question: str, system_prompt: str | None = None) -> list[dict]:
    """The prompt messages: an optional system turn, then the user turn (the image, then the question)."""
    messages = (
        [{"role": "system", "content": [{"type": "text", "text": system_prompt}]}] if system_prompt else []
    )
    return [*messages, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def load_processor(model_path: str, max_pixels: int | None, chat_template_path: str | None):
    """The model's processor, with the recipe's image budget and chat template (a .jinja file)."""
    if _looks_local(model_path) and not Path(model_path).expanduser().is_dir():
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


# The model and its adapters.


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
