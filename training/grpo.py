"""Reinforcement learning of a VLM on ImageNet-Think with GRPO (TRL GRPOTrainer, PEFT, DeepSpeed, vLLM),
rewarded by the dataset's own verifiers (:mod:`training.rewards`).

    accelerate launch --config_file configs/accelerate/single_gpu.yaml \
        training/grpo.py --config configs/grpo/qwen2_5_vl_3b_lora.yaml --dataset_name org/imagenet-think

Arguments: a recipe (``--config configs/grpo/*.yaml``) and command-line overrides of
:class:`DataArguments`, :class:`RewardArguments`, TRL's ``GRPOConfig`` and ``ModelConfig``. The
rules (prompts, references, rewards, logging) and more launch commands (ZeRO-3, SLURM, from an SFT
student, the tiny CPU recipe) are in docs/training.md. Errors are one ``training/grpo.py: error:
...`` line (docs/setup.md).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer, ModelConfig

from common.model_refs import resolve_model
from imagenet_think_errors import InputError
from release.schema import JOINT_CONFIG, joint_annotators, joint_column
from training.data import check_dataset_name, load_split, user_turn
from training.formatting import (
    EACH,
    THINK_FORMATS,
    THINK_OPEN,
    chosen_annotators,
    format_target,
    keep_annotator,
)
from training.model import cap_image, check_prompt_renders, load_model, load_processor, peft_config_for
from training.recipes import parse_recipe_args, run_script
from training.rewards import DEFAULT_REWARDS, REWARDS, build_rewards, end_token_ids

PROG = "training/grpo.py"
RECIPES = "configs/grpo/*.yaml"
PROMPT_COLUMNS = ("image", "question", "wnid", "references")
HELP = (
    "GRPO on ImageNet-Think, rewarded by its verifiers (label, think_format, repetition; optional length, "
    f"reference_similarity). Recipes: {RECIPES}; every option below is also a recipe key. Rules: docs/training.md. "
    "Launch: accelerate launch [--config_file configs/accelerate/...] training/grpo.py --config RECIPE [overrides]"
)


@dataclass
class DataArguments:
    """Which prompts: the release, config, split and annotator(s) whose traces are the references."""

    dataset_name: str = field(default="imagenet_think", metadata={"help": "release folder or Hub dataset id"})
    dataset_config: str = field(
        default=JOINT_CONFIG, metadata={"help": "both (one row per image), verified, glm or kimi"}
    )
    dataset_train_split: str = "train"
    dataset_test_split: str = field(
        default="validation", metadata={"help": "evaluated when eval_strategy is set"}
    )
    annotator: str = field(
        default=EACH,
        metadata={"help": f"whose traces are the references: an annotator (glm, kimi) or '{EACH}'"},
    )
    think_format: str = field(
        default="r1",
        metadata={"help": "the format rewarded (and of the references)", "choices": sorted(THINK_FORMATS)},
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "a system turn before the image and question; empty or unset: none"},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "keep the first N training images (a quick run)"}
    )
    max_eval_samples: int | None = None
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "image pixel budget: images are resized to it as the processor would; None: the model's"
        },
    )
    train_vision_tower: bool = field(
        default=False, metadata={"help": "train the vision tower too (LoRA: fully, saved with the adapter)"}
    )
    chat_template_path: str | None = field(
        default=None,
        metadata={"help": "a .jinja chat template to use instead of the model's (saved with it)"},
    )


@dataclass
class RewardArguments:
    """Which rewards (weights: GRPOConfig's ``reward_weights``, in the same order) and their settings."""

    reward_funcs: list[str] = field(
        default_factory=lambda: list(DEFAULT_REWARDS),
        metadata={"help": f"reward functions of training/rewards.py, some of {list(REWARDS)}"},
    )
    overlong_buffer: int = field(
        default=256,
        metadata={"help": "length reward: the last N tokens before max_completion_length fall from 0 to -1"},
    )
    reference_metric: str = field(
        default="rougeL", metadata={"help": "reference_similarity reward: a lexical metric of eval.metrics"}
    )


def prompt_rows(dataset: Dataset, annotator: str = EACH, think_format: str = "r1") -> Dataset:
    """One row per image: ``image``, ``question``, ``wnid``, and ``references``, the traces of
    ``annotator`` (or of every annotator with :data:`EACH`) in ``think_format``.

    The ``both`` config has ``<name>_think``/``<name>_answer`` columns; a per-annotator config (``glm``,
    ``kimi``) has ``think``, ``answer`` and ``annotator``, as ``verified`` has (a row per verified trace of
    any annotator: one prompt per row, ``annotator`` keeps one's). The images are not decoded.
    """
    columns = dataset.column_names
    if "think" in columns:
        names, pairs = None, [("think", "answer")]
        _require(columns, ("image", "question", "wnid", "think", "answer", "annotator"))
        dataset = keep_annotator(dataset, annotator)
    else:
        names = joint_annotators(columns)
        if not names:
            _require(columns, ("image", "question", "wnid", "think (or <annotator>_think)"))
        chosen = chosen_annotators(names, annotator)
        pairs = [(joint_column(name, "think"), joint_column(name, "answer")) for name in chosen]
        _require(columns, ("image", "question", "wnid", *(column for pair in pairs for column in pair)))
    texts = [column for pair in pairs for column in pair]

    def references(*values: list[str]) -> dict:
        by_column = dict(zip(texts, values, strict=True))
        rows = len(values[0])
        return {
            "references": [
                [format_target(by_column[t][i], by_column[a][i], think_format) for t, a in pairs]
                for i in range(rows)
            ]
        }

    rows = dataset.map(references, input_columns=texts, batched=True, desc="references")
    return rows.select_columns(list(PROMPT_COLUMNS))


def _require(columns: list[str], required: tuple[str, ...]) -> None:
    missing = [column for column in required if column not in columns]
    if missing:
        raise InputError(
            f"not ImageNet-Think rows: the columns {missing} are missing (it has {columns}); train on a release "
            "written by `imagenet-think build`, config both, glm or kimi"
        )


class PromptFormatter:
    """The batch transform that makes prompts: the image resized to the processor's budget (RGB), the
    user turn (after the system turn), and the reward columns."""

    def __init__(self, image_processor, system_prompt: str | None):
        self.image_processor = image_processor
        self.system_prompt = system_prompt or None

    def __call__(self, batch: dict) -> dict:
        return {
            "image": [cap_image(image, self.image_processor) for image in batch["image"]],
            "prompt": [user_turn(question, self.system_prompt) for question in batch["question"]],
            "wnid": batch["wnid"],
            "references": batch["references"],
        }


def build_prompts(args: DataArguments, split: str, limit: int | None, processor, training_args) -> Dataset:
    """The split's prompts (a lazily formatted dataset: images are resized when a batch is read)."""
    with training_args.main_process_first(desc=f"{split} prompts"):
        dataset = load_split(args.dataset_name, args.dataset_config, split)
        try:
            rows = prompt_rows(dataset, args.annotator, args.think_format)
        except InputError as error:
            raise InputError(f"{args.dataset_name} ({args.dataset_config}/{split}): {error}") from error
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
    if not len(rows):
        raise InputError(
            f"no {split} rows in {args.dataset_name} ({args.dataset_config}); give a release with images"
        )
    PartialState().print(f"{split}: {len(rows)} prompts")
    return rows.with_transform(PromptFormatter(processor.image_processor, args.system_prompt))


def check_reward_args(reward_args: RewardArguments, training_args: GRPOConfig) -> None:
    """Fail before any loading if the rewards and their weights do not fit together."""
    names = reward_args.reward_funcs
    names = [names] if isinstance(names, str) else list(names or [])
    build_rewards(  # names, duplicates, settings
        names,
        max_completion_length=training_args.max_completion_length,
        overlong_buffer=reward_args.overlong_buffer,
        reference_metric=reward_args.reference_metric,
    )
    weights = training_args.reward_weights
    if weights is not None and len(weights) != len(names):
        raise InputError(
            f"reward_weights {list(weights)} has {len(weights)} values for the {len(names)} reward_funcs {names}; "
            "give one weight per reward, in the same order"
        )
    if training_args.remove_unused_columns:
        raise InputError(
            "remove_unused_columns: true would drop the wnid the label reward needs; leave it unset"
        )


def build_trainer(
    data_args: DataArguments,
    reward_args: RewardArguments,
    training_args: GRPOConfig,
    model_args: ModelConfig,
    **trainer_kwargs,
) -> GRPOTrainer:
    """Everything up to ``trainer.train()``: rewards, processor, prompts, template check, model, trainer.
    ``trainer_kwargs`` go to ``GRPOTrainer`` (``callbacks``, TRL's experimental ``rollout_func``)."""
    check_reward_args(reward_args, training_args)
    check_dataset_name(data_args.dataset_name)  # before the model and processor load
    model_path = resolve_model(model_args.model_name_or_path)
    processor = load_processor(model_path, data_args.max_pixels, data_args.chat_template_path)
    processor.tokenizer.padding_side = "left"
    train = build_prompts(
        data_args, data_args.dataset_train_split, data_args.max_train_samples, processor, training_args
    )
    first = train[0]
    rendered = check_prompt_renders(first["prompt"], first["image"], processor)
    evaluate = None
    if training_args.eval_strategy != "no":
        evaluate = build_prompts(
            data_args, data_args.dataset_test_split, data_args.max_eval_samples, processor, training_args
        )
    model = load_model(model_path, model_args, training_args, data_args.train_vision_tower)
    rewards = build_rewards(
        reward_args.reward_funcs,
        think_format=data_args.think_format,
        end_ids=end_token_ids(processor.tokenizer, model.generation_config),
        opened_in_prompt=rendered.rstrip().endswith(THINK_OPEN),
        max_completion_length=training_args.max_completion_length,
        overlong_buffer=reward_args.overlong_buffer,
        reference_metric=reward_args.reference_metric,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluate,
        processing_class=processor,
        peft_config=peft_config_for(model_args, data_args.train_vision_tower),
        **trainer_kwargs,
    )


def parse_args(
    argv: list[str] | None = None,
) -> tuple[DataArguments, RewardArguments, GRPOConfig, ModelConfig]:
    """The recipe (``--config FILE.yaml``) with command-line overrides; mistakes raise an :class:`InputError`."""
    types = (DataArguments, RewardArguments, GRPOConfig, ModelConfig)
    return parse_recipe_args(argv, types, PROG, RECIPES, HELP)


def train(
    data_args: DataArguments, reward_args: RewardArguments, training_args: GRPOConfig, model_args: ModelConfig
) -> None:
    """Train, then save the adapter (or model), the processor and the log history to ``output_dir``."""
    trainer = build_trainer(data_args, reward_args, training_args, model_args)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)  # the adapter (or model) with the processor
    if trainer.is_world_process_zero():
        trainer.state.save_to_json(str(Path(training_args.output_dir) / "trainer_state.json"))
    trainer.accelerator.print(f"saved to {training_args.output_dir}")
    trainer.end()


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line) and train; an expected failure prints
    ``training/grpo.py: error: ...`` and returns 1 (2 for a usage error)."""
    return run_script(PROG, lambda: train(*parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
