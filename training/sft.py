"""Supervised fine-tuning of a VLM on ImageNet-Think's think traces (TRL SFTTrainer, PEFT, DeepSpeed).

Arguments come from a recipe (``--config configs/sft/*.yaml``) and command-line
overrides: :class:`DataArguments`, TRL's ``SFTConfig`` and ``ModelConfig``.

    # Qwen2.5-VL-7B, LoRA, one node of 8 GPUs, DeepSpeed ZeRO-2
    accelerate launch --config_file configs/accelerate/zero2.yaml \\
        training/sft.py --config configs/sft/qwen2_5_vl_7b_lora.yaml
    # full fine-tuning, ZeRO-3 (multi-node: configs/slurm/sft_multinode.sbatch)
    accelerate launch --config_file configs/accelerate/zero3.yaml \\
        training/sft.py --config configs/sft/qwen2_5_vl_7b_full.yaml
    # one GPU, with overrides
    accelerate launch --config_file configs/accelerate/single_gpu.yaml \\
        training/sft.py --config configs/sft/qwen2_5_vl_3b_lora.yaml --dataset_name org/imagenet-think
    # a tiny random model on the CPU
    accelerate launch --num_processes 1 training/sft.py --config configs/sft/tiny.yaml \\
        --dataset_name path/to/release
    # then merge a LoRA adapter for vLLM
    python training/merge.py --adapter runs/qwen2_5_vl_7b_lora --out runs/qwen2_5_vl_7b_lora-merged

Each row becomes the user turn (the image, then the question) and the assistant
turn (``<think>\\n{think}\\n</think>\\n\\n{answer}``, or the GLM format with
``think_format: glm``); the loss covers the assistant turn only. Before
training, one example is rendered through the chat template and the run stops
if the think content would not reach the trained tokens. Examples longer than
``max_length`` tokens (image tokens included) are dropped, or with
``overlong: shorten_think`` their think is cut at a sentence boundary; image
tokens are never cut. LoRA adapts the language model's projections only; the
vision tower is frozen unless ``train_vision_tower: true``.

Errors: a wrong input (a recipe that does not exist or has an unknown key, a
``dataset_name`` that is no folder or Hub dataset, a missing config or split,
rows without ImageNet-Think's columns, an unknown annotator, a template that
drops the think) is printed as one ``training/sft.py: error: ...`` line naming
the input and the fix, and the script exits 1 without a traceback;
``IMAGENET_THINK_DEBUG=1`` adds the traceback (``--debug`` is TrainingArguments'
own option here). Under ``accelerate launch`` the launcher then reports the failed
child itself: with one process (no DeepSpeed) ``accelerate launch -q`` (``--quiet``)
makes it exit 1 silently instead of raising ``CalledProcessError``; with several
processes (multi-GPU or DeepSpeed on one node: ``torch.distributed.run``) ``-q``
does nothing and a ``ChildFailedError`` traceback follows, whose "Root Cause"
block shows the same message (the script writes it to torchelastic's error file):
read the ``error:`` line above it.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate import PartialState
from datasets import Dataset, load_dataset
from datasets.exceptions import DatasetNotFoundError
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from generation.models import resolve_model
from imagenet_think_cli import run_reporting
from imagenet_think_errors import InputError, MissingInputError, UsageError
from training.formatting import (
    EACH,
    OVERLONG_POLICIES,
    THINK_FORMATS,
    check_think_reaches_labels,
    prepare_examples,
    quality_filter,
    select_traces,
    to_example,
)

VISION_MODULE = "visual"  # the vision tower (and its merger) in Qwen2-VL, Qwen2.5-VL and GLM-4.1V
LANGUAGE_MODEL = "language_model"
DEFAULT_LORA_TARGETS = tuple("q_proj k_proj v_proj o_proj gate_proj up_proj down_proj gate_up_proj".split())
PROG = "training/sft.py"
RECIPES = "configs/sft/*.yaml"


@dataclass
class DataArguments:
    """What to train on: which release, config, split and trace, and how examples are filtered."""

    dataset_name: str = field(default="imagenet_think", metadata={"help": "release folder or Hub dataset id"})
    dataset_config: str = field(default="both", metadata={"help": "glm, kimi or both"})
    dataset_train_split: str = "train"
    dataset_test_split: str = field(
        default="validation", metadata={"help": "evaluated when eval_strategy is set"}
    )
    annotator: str = field(
        default=EACH,
        metadata={
            "help": f"whose trace to train on: an annotator (glm, kimi) or '{EACH}' (one example each)"
        },
    )
    think_format: str = field(
        default="r1", metadata={"help": "assistant target format", "choices": sorted(THINK_FORMATS)}
    )
    overlong: str = field(
        default="drop",
        metadata={
            "help": "examples over max_length: drop, or shorten the think",
            "choices": OVERLONG_POLICIES,
        },
    )
    min_think_words: int = 1
    max_think_words: int | None = None
    min_answer_words: int = 1
    max_train_samples: int | None = field(
        default=None, metadata={"help": "keep the first N training rows (a quick run)"}
    )
    max_eval_samples: int | None = None
    max_pixels: int | None = field(
        default=None, metadata={"help": "image processor pixel budget (size.longest_edge); None: the model's"}
    )
    train_vision_tower: bool = field(
        default=False, metadata={"help": "train the vision tower too (LoRA: fully, saved with the adapter)"}
    )


def _looks_local(name: str) -> bool:
    """Whether ``name`` can only be a local path: not ``org/name``, as Hub ids are."""
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") != 1


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
            f"model_name_or_path {model_path}: cannot load its processor: {_first_line(error)}"
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


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def check_dataset_name(name: str) -> None:
    """Fail early if ``name`` can only be a local folder and there is none."""
    if _looks_local(name) and not Path(name).expanduser().is_dir():
        raise MissingInputError(
            f"dataset_name {name}: no such folder; give a release folder written by `imagenet-think build` "
            "or a Hub dataset id (org/name)"
        )


def load_split(name: str, config: str, split: str) -> Dataset:
    """One split of a release folder or Hub dataset; a wrong name, config or split is an :class:`InputError`."""
    check_dataset_name(name)
    folder = Path(name).expanduser()
    where = f"dataset_name {name}"
    try:
        return load_dataset(str(folder) if folder.is_dir() else name, config, split=split)
    except DatasetNotFoundError as error:
        raise MissingInputError(
            f"{where}: no such folder here, and no such dataset on the Hub (a private or gated one needs "
            "`hf auth login`)"
        ) from error
    except ConnectionError as error:
        raise MissingInputError(
            f"{where}: no such folder here, and the Hub cannot be reached ({_first_line(error)}); "
            "give a release folder, or go online"
        ) from error
    except FileNotFoundError as error:
        raise InputError(
            f"{where}: {_first_line(error)}; give a release folder written by `imagenet-think build`"
        ) from error
    except ValueError as error:
        message = _first_line(error)
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


def load_rows(args: DataArguments, split: str, limit: int | None):
    """One split's rows (image, question, think, answer, annotator), filtered for quality."""
    dataset = load_split(args.dataset_name, args.dataset_config, split)
    try:
        rows = select_traces(dataset, args.annotator)
    except InputError as error:
        raise InputError(f"{args.dataset_name} ({args.dataset_config}/{split}): {error}") from error
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    return quality_filter(rows, args.min_think_words, args.max_think_words, args.min_answer_words)


def build_examples(args: DataArguments, split: str, limit: int | None, processor, training_args: SFTConfig):
    """The split's examples that fit ``max_length``; the train split's first one checks the template first."""
    with training_args.main_process_first(desc=f"{split} examples"):
        rows = load_rows(args, split, limit)
        if not len(rows):
            raise InputError(
                f"no {split} rows in {args.dataset_name} ({args.dataset_config}) pass the filters; lower "
                "min_think_words/min_answer_words or raise max_think_words"
            )
        if split == args.dataset_train_split:
            first = rows[0]
            example = to_example(
                first["image"], first["question"], first["think"], first["answer"], args.think_format
            )
            check_think_reaches_labels(example, processor)
        examples, counts = prepare_examples(
            rows,
            processor,
            training_args.max_length,
            args.overlong,
            args.think_format,
            training_args.dataset_num_proc,
        )
    PartialState().print(
        f"{split}: {counts['rows']} rows -> {len(examples)} examples; {counts['dropped']} dropped and "
        f"{counts['shortened']} shortened (longer than max_length={training_args.max_length} tokens, "
        f"overlong={args.overlong})"
    )
    if not len(examples):
        raise InputError(
            f"no {split} example of {args.dataset_name} fits max_length={training_args.max_length}; raise "
            "max_length, lower max_pixels or set overlong: shorten_think"
        )
    return examples


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


def load_model(model_path: str, model_args: ModelConfig, training_args: SFTConfig, train_vision_tower: bool):
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


def build_trainer(data_args: DataArguments, training_args: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    """Everything up to ``trainer.train()``: processor, checked and measured examples, model, trainer."""
    if training_args.completion_only_loss is False or training_args.assistant_only_loss:
        raise InputError(
            "completion_only_loss: false / assistant_only_loss: true: this script trains on the assistant "
            "turn with completion_only_loss; leave both unset"
        )
    check_dataset_name(data_args.dataset_name)  # before the model and processor load
    model_path = resolve_model(model_args.model_name_or_path)
    processor = load_processor(model_path, data_args.max_pixels, training_args.chat_template_path)
    train = build_examples(
        data_args, data_args.dataset_train_split, data_args.max_train_samples, processor, training_args
    )
    evaluate = None
    if training_args.eval_strategy != "no":
        evaluate = build_examples(
            data_args, data_args.dataset_test_split, data_args.max_eval_samples, processor, training_args
        )
    return SFTTrainer(
        model=load_model(model_path, model_args, training_args, data_args.train_vision_tower),
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluate,
        processing_class=processor,
        peft_config=peft_config_for(model_args, data_args.train_vision_tower),
    )


def skip_cpu_shm_build() -> None:
    """On the CPU, DeepSpeed compiles its shared-memory allreduce op (minutes) when it sets up the process
    group; only its inference allreduce uses it, so training (gloo) goes without."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true" and not torch.cuda.is_available():
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def check_recipe(path: str, parser: TrlParser) -> None:
    """Fail with the fix if the recipe is missing, is not a YAML mapping or has a key no argument has."""
    recipe = Path(path)
    if not recipe.is_file():
        raise MissingInputError(
            f"recipe {path} (--config): no such file; the recipes are {RECIPES}"
            if not recipe.exists()
            else f"recipe {path} (--config): not a file; give one of {RECIPES}"
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
            f"the arguments `python {PROG} --help` lists"
        )


def parse_args(argv: list[str] | None = None) -> tuple[DataArguments, SFTConfig, ModelConfig]:
    """The recipe (``--config FILE.yaml``) with command-line overrides. A missing recipe, an unknown
    key or argument, or a value that TRL or transformers reject raises an :class:`InputError`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser((DataArguments, SFTConfig, ModelConfig))
    source = "the arguments"
    if "--config" in argv:
        at = argv.index("--config") + 1
        if at == len(argv) or argv[at].startswith("--"):
            raise UsageError(f"--config needs a recipe file, one of {RECIPES}")
        check_recipe(argv[at], parser)
        source = f"recipe {argv[at]} (or the arguments)"
    skip_cpu_shm_build()  # before SFTConfig, which sets up the process group
    try:
        *parsed, unused = parser.parse_args_and_config(argv, return_remaining_strings=True)
    except ValueError as error:  # SFTConfig's and TrainingArguments' checks of the values
        raise InputError(f"{source}: {_first_line(error)}") from error
    if unused:
        raise UsageError(f"unknown arguments {unused}; `python {PROG} --help` lists the arguments")
    return tuple(parsed)


def train(data_args: DataArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    """Train, then save the adapter (or model) and the processor to ``output_dir``."""
    trainer = build_trainer(data_args, training_args, model_args)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)  # the adapter (or model) with the processor
    trainer.accelerator.print(f"saved to {training_args.output_dir}")
    trainer.end()


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line) and train; an expected failure prints
    ``training/sft.py: error: ...`` (one per process, ``[rank N]`` when there are several)
    and returns 1 (2 for a usage error); ``IMAGENET_THINK_DEBUG=1`` adds the traceback."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    prog = f"{PROG} [rank {os.environ.get('RANK', '0')}]" if world_size > 1 else PROG
    return run_reporting(prog, lambda: train(*parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
