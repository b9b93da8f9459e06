"""Supervised fine-tuning of a VLM on ImageNet-Think's think traces (TRL SFTTrainer, PEFT, DeepSpeed).

    accelerate launch --config_file configs/accelerate/zero2.yaml \
        training/sft.py --config configs/sft/qwen2_5_vl_7b_lora.yaml --dataset_name org/imagenet-think

Arguments: a recipe (``--config configs/sft/*.yaml``) and command-line overrides of
:class:`DataArguments`, TRL's ``SFTConfig`` and ``ModelConfig``. The rules (which traces, the
assistant turn, the template check, overlong examples, LoRA) and more launch commands are in
docs/training.md; what SFT shares with GRPO is in ``training/data.py``, ``training/model.py`` and
``training/recipes.py``. Errors are one ``training/sft.py: error: ...`` line (docs/setup.md).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from accelerate import PartialState
from trl import ModelConfig, SFTConfig, SFTTrainer

from common.model_refs import resolve_model
from imagenet_think_errors import InputError
from release.schema import JOINT_CONFIG
from training.data import check_dataset_name, load_split
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
from training.model import load_model, load_processor, peft_config_for
from training.recipes import parse_recipe_args, run_script

PROG = "training/sft.py"
RECIPES = "configs/sft/*.yaml"
HELP = (
    f"SFT on ImageNet-Think's think traces. Recipes: {RECIPES}; every option below is also a recipe key. "
    "Rules: docs/training.md. Launch: accelerate launch [--config_file configs/accelerate/...] training/sft.py "
    "--config RECIPE [overrides]"
)


@dataclass
class DataArguments:
    """What to train on: which release, config, split and trace, and how examples are filtered."""

    dataset_name: str = field(default="imagenet_think", metadata={"help": "release folder or Hub dataset id"})
    dataset_config: str = field(default=JOINT_CONFIG, metadata={"help": "both, verified, glm or kimi"})
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


def parse_args(argv: list[str] | None = None) -> tuple[DataArguments, SFTConfig, ModelConfig]:
    """The recipe (``--config FILE.yaml``) with command-line overrides. A missing recipe, an unknown
    key or argument, or a value that TRL or transformers reject raises an :class:`InputError`."""
    return parse_recipe_args(argv, (DataArguments, SFTConfig, ModelConfig), PROG, RECIPES, HELP)


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
    return run_script(PROG, lambda: train(*parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
