"""ImageNet-Think rows -> SFT examples, their real token lengths, and the chat template check.

An example is TRL's conversational prompt-completion format with one image:
``image`` (the PIL image), ``prompt`` (the user turn: the image, then the
question) and ``completion`` (the assistant turn: the think trace and the
answer in a :data:`THINK_FORMATS` format). TRL's
``DataCollatorForVisionLanguageModeling`` renders both through the model's chat
template and, with ``completion_only_loss``, masks every token but the
assistant turn's, whatever the template (no ``{% generation %}`` markers
needed). Lengths are measured with that same collator, so they count the image
tokens exactly as training sees them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from datasets import Dataset, interleave_datasets
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from generation.reasoning import ANSWER_CLOSE, ANSWER_OPEN, STYLES
from imagenet_think_errors import InputError
from release.schema import joint_annotators, joint_column
from training.data import user_turn

THINK_OPEN, THINK_CLOSE = STYLES["think_tags"].open, STYLES["think_tags"].close
# Assistant targets; each reads back with ``parse_reasoning(text, "think_tags")``.
THINK_FORMATS = {
    # DeepSeek-R1 style, used by most Qwen2.5-VL reasoning models.
    "r1": f"{THINK_OPEN}\n{{think}}\n{THINK_CLOSE}\n\n{{answer}}",
    # GLM-4.1V-Thinking style.
    "glm": f"{THINK_OPEN}{{think}}{THINK_CLOSE}{ANSWER_OPEN}{{answer}}{ANSWER_CLOSE}",
}
EACH = "each"  # every annotator's trace, one example each
TRACE_COLUMNS = ("image", "question", "think", "answer", "annotator")  # a per-annotator config's
OVERLONG_POLICIES = ("drop", "shorten_think")
IGNORE_INDEX = -100
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def format_target(think: str, answer: str, think_format: str = "r1") -> str:
    """The assistant turn's text: the think trace and the answer in ``think_format``."""
    try:
        template = THINK_FORMATS[think_format]
    except KeyError:
        raise InputError(
            f"unknown think_format {think_format!r}; set think_format to one of {sorted(THINK_FORMATS)}"
        ) from None
    return template.format(think=think.strip(), answer=answer.strip())


def to_example(image, question: str, think: str, answer: str, think_format: str = "r1") -> dict:
    """One prompt-completion example: the user turn holds the image and the question (the same
    user turn as GRPO's prompts, ``training.data.user_turn``)."""
    return {
        "image": image,
        "prompt": user_turn(question),
        "completion": [{"role": "assistant", "content": format_target(think, answer, think_format)}],
    }


def select_traces(dataset: Dataset, annotator: str = EACH) -> Dataset:
    """Rows with ``image``, ``question``, ``think``, ``answer``, ``annotator`` for the chosen trace(s).

    ``annotator`` names whose trace to train on, or :data:`EACH` for every
    annotator's, one example each, interleaved image by image (so that the first n
    rows hold every annotator's traces). A per-annotator config (``glm``, ``kimi``)
    has one trace per row, as ``verified`` (every annotator's verified traces); the ``both``
    config has ``<name>_think`` and ``<name>_answer``.
    """
    columns = dataset.column_names
    if "think" in columns:
        _require_columns(columns, TRACE_COLUMNS)
        return keep_annotator(dataset, annotator).select_columns(list(TRACE_COLUMNS))
    names = joint_annotators(columns)
    _require_columns(columns, ("image", "question", *(joint_column(name, "answer") for name in names)), names)
    traces = [_one_trace(dataset, name) for name in chosen_annotators(names, annotator)]
    return interleave_datasets(traces) if len(traces) > 1 else traces[0]


def keep_annotator(dataset: Dataset, annotator: str) -> Dataset:
    """The rows of ``annotator`` (all with :data:`EACH`) of a config with one trace per row (a
    per-annotator config, or ``verified``, which holds every annotator's verified traces)."""
    found = sorted(set(dataset.unique("annotator")))
    if annotator not in (EACH, *found):
        raise InputError(
            f"this config holds traces of {found} only; got annotator={annotator!r}: set annotator to "
            f"one of {[*found, EACH]}, or use the config of that annotator (or both)"
        )
    if annotator == EACH or found == [annotator]:
        return dataset
    return dataset.filter(lambda name: name == annotator, input_columns="annotator")


def chosen_annotators(names: list[str], annotator: str) -> list[str]:
    """The annotators of a ``both`` table (``names``) whose traces to use: ``annotator``, or all."""
    if annotator not in (EACH, *names):
        raise InputError(f"annotator must be one of {[*names, EACH]}; got {annotator!r}: set annotator")
    return names if annotator == EACH else [annotator]


def _require_columns(columns: list[str], required: tuple[str, ...], traces: list[str] | None = None) -> None:
    """Fail unless ``columns`` hold ImageNet-Think's: ``required``, and a trace (``think`` or ``<name>_think``)."""
    missing = [column for column in required if column not in columns]
    if traces == []:
        missing.append("think (or <annotator>_think)")
    if missing:
        raise InputError(
            f"not ImageNet-Think rows: the columns {missing} are missing (it has {columns}); train on a release "
            "written by `imagenet-think build`, config glm, kimi or both"
        )


def _one_trace(dataset: Dataset, name: str) -> Dataset:
    think, answer = joint_column(name, "think"), joint_column(name, "answer")
    trace = dataset.select_columns(["image", "question", think, answer])
    trace = trace.rename_columns({think: "think", answer: "answer"})
    return trace.add_column("annotator", [name] * len(trace))


def quality_filter(
    dataset: Dataset, min_think_words: int = 1, max_think_words: int | None = None, min_answer_words: int = 1
) -> Dataset:
    """Keep rows whose think and answer word counts are within bounds (the images are not decoded)."""

    def keep(think: str, answer: str) -> bool:
        words = len(think.split())
        return (
            words >= min_think_words
            and (max_think_words is None or words <= max_think_words)
            and len(answer.split()) >= min_answer_words
        )

    return dataset.filter(keep, input_columns=["think", "answer"])


def make_collator(processor, max_length: int | None = None) -> DataCollatorForVisionLanguageModeling:
    """The collator SFTTrainer builds for these examples: loss on the completion (assistant turn) only."""
    return DataCollatorForVisionLanguageModeling(processor, max_length=max_length, completion_only_loss=True)


class TokenCounter:
    """The real length of one example in tokens, image tokens included (the collator, no truncation)."""

    def __init__(self, processor):
        self.collator = make_collator(processor)

    def __call__(self, example: dict) -> int:
        return int(self.collator([dict(example)])["input_ids"].shape[1])


def fit_to_length(
    row: dict, measure: TokenCounter, max_length: float, policy: str, think_format: str
) -> dict:
    """The row as an example with its ``num_tokens``. With ``shorten_think``, an over-long think is
    cut after the last sentence that fits; an example that still does not fit keeps its length."""
    example = to_example(row["image"], row["question"], row["think"], row["answer"], think_format)
    length, shortened = measure(example), False
    if length > max_length and policy == "shorten_think":
        cuts = [match.start() for match in SENTENCE_END.finditer(row["think"].strip())]
        fits = _last_fitting(
            cuts, lambda cut: measure({**example, **_with_think(row, cut, think_format)}), max_length
        )
        if fits is not None:
            example.update(_with_think(row, cuts[fits], think_format))
            length, shortened = measure(example), True
    return {**{k: example[k] for k in ("prompt", "completion")}, "num_tokens": length, "shortened": shortened}


def _with_think(row: dict, cut: int, think_format: str) -> dict:
    target = format_target(row["think"].strip()[:cut], row["answer"], think_format)
    return {"completion": [{"role": "assistant", "content": target}]}


def _last_fitting(cuts: list[int], length_at: Callable[[int], int], max_length: float) -> int | None:
    """The largest index into ``cuts`` whose length fits (binary search; lengths grow with the cut)."""
    low, high, best = 0, len(cuts) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if length_at(cuts[middle]) <= max_length:
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best


def prepare_examples(
    rows: Dataset,
    processor,
    max_length: int | None,
    policy: str = "drop",
    think_format: str = "r1",
    num_proc: int | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """Format ``rows`` and drop the examples longer than ``max_length`` (image tokens are never cut).

    Returns the examples (``image``, ``prompt``, ``completion``, ``num_tokens``) and
    the counts ``rows``, ``shortened``, ``dropped``.
    """
    if policy not in OVERLONG_POLICIES:
        raise InputError(f"unknown overlong policy {policy!r}; set overlong to one of {OVERLONG_POLICIES}")
    limit = max_length if max_length is not None else float("inf")
    measure = TokenCounter(processor)
    examples = rows.map(
        fit_to_length,
        fn_kwargs={"measure": measure, "max_length": limit, "policy": policy, "think_format": think_format},
        num_proc=num_proc,
        desc="formatting and measuring examples",
    )
    kept = examples.filter(lambda n: n <= limit, input_columns="num_tokens")
    counts = {"rows": len(rows), "shortened": sum(examples["shortened"]), "dropped": len(rows) - len(kept)}
    return kept.select_columns(["image", "prompt", "completion", "num_tokens"]), counts


def trained_text(example: dict, collator, tokenizer) -> str:
    """The text of the tokens that carry loss when ``example`` is collated."""
    batch = collator([dict(example)])
    ids = batch["input_ids"][0][batch["labels"][0] != IGNORE_INDEX]
    return tokenizer.decode(ids, skip_special_tokens=False)


def check_think_reaches_labels(example: dict, processor) -> None:
    """Fail if the chat template keeps the target (think included) out of the trained assistant tokens.

    Some templates rewrite the assistant turn: newer GLM templates drop the
    ``<think>`` content of assistant messages, others cannot render structured
    content. Training on such a rendering would teach the model to skip its reasoning.
    """
    target = example["completion"][0]["content"]
    trained = trained_text(example, make_collator(processor), processor.tokenizer)
    if _squash(trained).startswith(_squash(target)):
        return
    think = target.partition(THINK_OPEN)[2].partition(THINK_CLOSE)[0]
    problem = (
        "drops the think content from the assistant turn"
        if _squash(think) not in _squash(trained)
        else "does not render the assistant turn as the target text"
    )
    raise InputError(
        f"The chat template {problem}: the trained tokens decode to {trained[:300]!r}, expected them to start "
        f"with {target[:300]!r}. Train with a template that keeps the assistant's reasoning verbatim "
        "(SFTConfig.chat_template_path: a .jinja file)."
    )


def _squash(text: str) -> str:
    return " ".join(text.split())
