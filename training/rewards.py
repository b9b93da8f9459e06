"""GRPO rewards made of ImageNet-Think's own verifiers; each is a TRL reward function.

A reward function takes the batch's ``completions`` (conversational: one assistant message each, or
plain strings), their ``completion_ids`` and the dataset's other columns as lists (``wnid``,
``references``), and returns one float per completion; TRL logs each under its name and sums them
with the recipe's ``reward_weights``. What each reward scores (``label``, ``think_format``,
``repetition``, ``length``, ``reference_similarity``) and when a completion counts as truncated:
docs/training.md, "GRPO". :func:`build_rewards` makes them from their names (:data:`REWARDS`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from eval.metrics import LEXICAL_METRICS, similarities
from generation.reasoning import ANSWER_CLOSE, ANSWER_OPEN, parse_reasoning
from generation.verdicts.labels import label_verdicts
from generation.verdicts.quality import is_repetition_loop
from imagenet_think_errors import InputError
from training.formatting import THINK_CLOSE, THINK_FORMATS, THINK_OPEN

__all__ = [
    "DEFAULT_REWARDS",
    "REWARDS",
    "LabelReward",
    "LengthReward",
    "ReferenceSimilarityReward",
    "RepetitionReward",
    "ThinkFormatReward",
    "build_rewards",
    "completion_text",
    "end_token_ids",
]

STYLE = "think_tags"  # every THINK_FORMATS target reads back with this parser style
DEFAULT_REWARDS = ("label", "think_format", "repetition")
OPTIONAL_REWARDS = ("length", "reference_similarity")
REWARDS = (*DEFAULT_REWARDS, *OPTIONAL_REWARDS)


def completion_text(completion) -> str:
    """The text of one completion: a string, or the content of a conversational completion's last
    message (its text parts joined)."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"] if completion else ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def end_token_ids(tokenizer, generation_config=None) -> frozenset[int]:
    """The ids that end a completion: the tokenizer's EOS, the generation config's EOS ids, the pad id."""
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    eos = getattr(generation_config, "eos_token_id", None)
    ids.update([eos] if isinstance(eos, int) else (eos or []))
    return frozenset(int(i) for i in ids if i is not None)


class _Reward:
    """A TRL reward function; ``__name__`` is the name TRL logs it under."""

    __name__ = "reward"

    def __init__(self, end_ids: Iterable[int] = ()):
        self.end_ids = frozenset(end_ids)

    def truncated(self, completion_ids: Sequence[Sequence[int]] | None, n: int) -> list[bool]:
        """Per completion, whether generation stopped at the length limit (no end token last)."""
        if completion_ids is None:
            return [False] * n
        return [bool(ids) and int(ids[-1]) not in self.end_ids for ids in completion_ids]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__name__})"


class LabelReward(_Reward):
    __name__ = "label"

    def __call__(self, completions, wnid, completion_ids=None, **kwargs) -> list[float]:
        texts = [completion_text(c) for c in completions]
        truncated = self.truncated(completion_ids, len(texts))
        answers = []
        for text, cut in zip(texts, truncated, strict=True):
            parsed = parse_reasoning(text, STYLE)
            answers.append(parsed.answer if parsed.closed and not cut else None)  # None: verdict none
        verdicts = label_verdicts(answers, list(wnid))
        log_metric = kwargs.get("log_metric")
        if log_metric is not None and verdicts:
            log_metric(
                "label/accuracy", sum(v.kind in ("exact", "hyponym") for v in verdicts) / len(verdicts)
            )
        return [verdict.score for verdict in verdicts]


class ThinkFormatReward(_Reward):
    __name__ = "think_format"

    def __init__(self, think_format: str = "r1", end_ids: Iterable[int] = (), opened_in_prompt: bool = False):
        super().__init__(end_ids)
        if think_format not in THINK_FORMATS:
            raise InputError(
                f"unknown think_format {think_format!r}; set it to one of {sorted(THINK_FORMATS)}"
            )
        self.think_format = think_format
        self.opened_in_prompt = opened_in_prompt

    def follows(self, text: str) -> bool:
        """Whether ``text`` (not truncated) is in the recipe's think format."""
        parsed = parse_reasoning(text, STYLE)
        body = text.strip()
        opens = text.count(THINK_OPEN)
        opened = (opens == 0 and self.opened_in_prompt) or (opens == 1 and body.startswith(THINK_OPEN))
        if not (parsed.closed and opened and text.count(THINK_CLOSE) == 1 and parsed.think and parsed.answer):
            return False
        if self.think_format == "glm":
            after = body.partition(THINK_CLOSE)[2].strip()
            return (
                after.startswith(ANSWER_OPEN)
                and after.endswith(ANSWER_CLOSE)
                and after.count(ANSWER_OPEN) == 1
            )
        return True

    def __call__(self, completions, completion_ids=None, **kwargs) -> list[float]:
        texts = [completion_text(c) for c in completions]
        truncated = self.truncated(completion_ids, len(texts))
        return [float(not cut and self.follows(text)) for text, cut in zip(texts, truncated, strict=True)]


class RepetitionReward(_Reward):
    __name__ = "repetition"

    def __call__(self, completions, **kwargs) -> list[float]:
        scores = []
        for completion in completions:
            parsed = parse_reasoning(completion_text(completion), STYLE)
            scores.append(
                -1.0 if is_repetition_loop(parsed.think) or is_repetition_loop(parsed.answer) else 0.0
            )
        return scores


class LengthReward(_Reward):
    __name__ = "length"

    def __init__(self, max_completion_length: int, overlong_buffer: int):
        super().__init__()
        if not 0 < overlong_buffer <= max_completion_length:
            raise InputError(
                f"overlong_buffer={overlong_buffer}: the length reward needs 0 < overlong_buffer <= "
                f"max_completion_length ({max_completion_length}); set overlong_buffer"
            )
        self.max_length, self.buffer = max_completion_length, overlong_buffer

    def __call__(self, completions, completion_ids, **kwargs) -> list[float]:
        start = self.max_length - self.buffer
        return [max(-1.0, min(0.0, (start - len(ids)) / self.buffer)) for ids in completion_ids]


class ReferenceSimilarityReward(_Reward):
    __name__ = "reference_similarity"

    def __init__(self, metric: str = "rougeL"):
        super().__init__()
        if metric not in LEXICAL_METRICS:
            raise InputError(
                f"reference_metric {metric!r}: the reference_similarity reward takes a lexical metric of "
                f"eval.metrics, one of {list(LEXICAL_METRICS)}; set reference_metric"
            )
        self.metric = metric

    def __call__(self, completions, references, **kwargs) -> list[float]:
        texts = [completion_text(c) for c in completions]
        pairs = [
            (i, text, ref)
            for i, (text, refs) in enumerate(zip(texts, references, strict=True))
            for ref in refs
        ]
        best = [0.0] * len(texts)
        if pairs:
            scores = similarities([self.metric], [p[1] for p in pairs], [p[2] for p in pairs])[self.metric]
            for (i, _, _), score in zip(pairs, scores, strict=True):
                best[i] = max(best[i], float(score))
        return best


def build_rewards(
    names: Sequence[str],
    *,
    think_format: str = "r1",
    end_ids: Iterable[int] = (),
    opened_in_prompt: bool = False,
    max_completion_length: int = 512,
    overlong_buffer: int = 128,
    reference_metric: str = "rougeL",
) -> list[_Reward]:
    """The reward functions named in ``names`` (a recipe's ``reward_funcs``), in that order."""
    if isinstance(names, str):
        names = [names]
    if not names:
        raise InputError(f"reward_funcs is empty; name some of {list(REWARDS)}")
    unknown = [name for name in names if name not in REWARDS]
    if unknown:
        hints = [
            f"{name!r}"
            + (
                f" (did you mean {close[0]!r}?)"
                if (close := difflib.get_close_matches(name, REWARDS, 1))
                else ""
            )
            for name in unknown
        ]
        raise InputError(f"reward_funcs: unknown reward {', '.join(hints)}; the rewards are {list(REWARDS)}")
    if len(set(names)) != len(names):
        raise InputError(
            f"reward_funcs {list(names)} names a reward twice; weigh it with reward_weights instead"
        )
    end_ids = frozenset(end_ids)
    make = {
        "label": lambda: LabelReward(end_ids),
        "think_format": lambda: ThinkFormatReward(think_format, end_ids, opened_in_prompt),
        "repetition": lambda: RepetitionReward(),
        "length": lambda: LengthReward(max_completion_length, overlong_buffer),
        "reference_similarity": lambda: ReferenceSimilarityReward(reference_metric),
    }
    return [make[name]() for name in names]
