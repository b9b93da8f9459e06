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
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from datasets import load_dataset
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from generation.tiny_models import resolve_model
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


def load_processor(model_path: str, max_pixels: int | None, chat_template_path: str | None):
    """The model's processor, with the recipe's image budget and chat template (a .jinja file)."""
    processor = AutoProcessor.from_pretrained(model_path)
    if max_pixels is not None:
        size = dict(processor.image_processor.size)
        size["longest_edge"], size["shortest_edge"] = max_pixels, min(size["shortest_edge"], max_pixels)
        processor.image_processor.size = size
    if chat_template_path is not None:
        if not chat_template_path.endswith((".jinja", ".j2")):
            raise ValueError(f"chat_template_path must be a .jinja file, got {chat_template_path!r}")
        processor.chat_template = Path(chat_template_path).read_text(encoding="utf-8")
    return processor


def load_rows(args: DataArguments, split: str, limit: int | None):
    """One split's rows (image, question, think, answer, annotator), filtered for quality."""
    rows = select_traces(load_dataset(args.dataset_name, args.dataset_config, split=split), args.annotator)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    return quality_filter(rows, args.min_think_words, args.max_think_words, args.min_answer_words)


def build_examples(args: DataArguments, split: str, limit: int | None, processor, training_args: SFTConfig):
    """The split's examples that fit ``max_length``; the train split's first one checks the template first."""
    with training_args.main_process_first(desc=f"{split} examples"):
        rows = load_rows(args, split, limit)
        if not len(rows):
            raise ValueError(
                f"no {split} rows in {args.dataset_name} ({args.dataset_config}) pass the filters"
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
        raise ValueError(f"no {split} example fits max_length={training_args.max_length}")
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
        raise ValueError(
            "this script trains on the assistant turn with completion_only_loss; leave both unset"
        )
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


def parse_args(argv: list[str] | None = None) -> tuple[DataArguments, SFTConfig, ModelConfig]:
    """The recipe (``--config FILE.yaml``) with command-line overrides."""
    skip_cpu_shm_build()  # before SFTConfig, which sets up the process group
    return TrlParser((DataArguments, SFTConfig, ModelConfig)).parse_args_and_config(argv)


def main(data_args: DataArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    trainer = build_trainer(data_args, training_args, model_args)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)  # the adapter (or model) with the processor
    trainer.accelerator.print(f"saved to {training_args.output_dir}")
    trainer.end()


if __name__ == "__main__":
    main(*parse_args())
