"""A harness's raw outputs as the predictions ``eval score`` scores.

Each output is split by :func:`generation.reasoning.parse_reasoning` in the style that
:func:`generation.reasoning.detect_style` finds in it, and gets a think status (``closed``,
``open``, ``none``) whose shares the summary reports (``outputs``; docs/eval.md, "How outputs are
split"). :class:`HarnessPredictions` answers the questions ``eval score`` asks of a predictions
folder (:class:`eval.score.PredictionRecords`): which images are predicted or rejected, and their
think and answer. A harness rejects nothing; every output is held in memory (the harness's files
hold them all too).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from generation.reasoning import STYLES, Reasoning, detect_style, parse_reasoning
from imagenet_think_errors import InputError

THINK_STATUSES = ("closed", "open", "none")
# lmms-eval's sample log leaves the document out and writes each metric's per-document value as
# text: a HarnessOutput's image id (str()). The log's image id is read from this metric's field.
LOGGED_ID_KEY = "coverage"


@dataclass(frozen=True)
class HarnessOutput:
    """One image's raw output. ``str()`` gives the image id: what lmms-eval's sample log writes
    for each of the task's metrics (the output itself is in the log's ``filtered_resps``)."""

    image_id: str
    wnid: str
    text: str
    split_sha256: str | None = None

    def __str__(self) -> str:
        return self.image_id


def split_output(text: str) -> tuple[Reasoning, str]:
    """The think and answer of a raw output (:func:`detect_style`, :func:`parse_reasoning`) and
    its think status (:data:`THINK_STATUSES`)."""
    text = text if isinstance(text, str) else ""
    style = detect_style(text)
    parsed = parse_reasoning(text, style)
    fmt = STYLES[style]
    if fmt.close is None or (fmt.open not in text and fmt.close not in text):
        return parsed, "none"
    return parsed, "closed" if parsed.closed else "open"


class HarnessPredictions:
    """The outputs of a harness run, parsed, by image id; ``made_on`` and ``config`` as
    :func:`eval.score.score` reads them from an ``eval generate`` folder."""

    rejected: frozenset[str] = frozenset()

    def __init__(self, outputs: Iterable[HarnessOutput], *, source: str, made_on: dict, model: str) -> None:
        self.source = source
        self.made_on = made_on
        self.config = {"annotator": model, "model": model}
        self.wnids: dict[str, str] = {}
        self._parts: dict[str, tuple[str, str, bool]] = {}
        self._status: dict[str, str] = {}
        for output in outputs:
            if output.image_id in self._parts:
                raise InputError(
                    f"{source} has two outputs for image {output.image_id}; score one output per image "
                    "(a run with repeats: keep one of them)"
                )
            parsed, status = split_output(output.text)
            self._parts[output.image_id] = (parsed.think, parsed.answer, parsed.closed)
            self._status[output.image_id] = status
            self.wnids[output.image_id] = output.wnid
        if not self._parts:
            raise InputError(f"{source} holds no outputs to score")

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._parts

    def __len__(self) -> int:
        return len(self._parts)

    def predicted(self, image_id: str) -> bool:
        return image_id in self._parts

    def thinks_and_answers(self, image_ids: list[str]) -> tuple[list, list, list]:
        """The think and answer of each image and whether the parser found its think closed
        ("", "" and False for an image without an output)."""
        parts = [self._parts.get(image_id, ("", "", False)) for image_id in image_ids]
        return tuple(list(column) for column in zip(*parts, strict=True)) if parts else ([], [], [])

    def think_shares(self, image_ids: Iterable[str]) -> dict[str, float]:
        """The share of each think status among the outputs of ``image_ids``."""
        counts = Counter(self._status[image_id] for image_id in image_ids if image_id in self._status)
        total = sum(counts.values())
        return {status: counts[status] / total if total else 0.0 for status in THINK_STATUSES}
