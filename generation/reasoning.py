"""Split a thinking model's raw output into its reasoning trace and its answer.

One parser for the whole project: generation, training and eval all call :func:`parse_reasoning`,
by the styles and rules of docs/generate.md, "Think and answer". :func:`detect_style` picks the
style of an output whose model is not known (a harness's). Each thinking style also names the text
that forces an answer (:attr:`ThinkFormat.force`), appended to a generation cut at its token budget
with the think still open before it is continued (``on_truncation: force_answer``,
:mod:`generation.annotator`).
"""

from __future__ import annotations

from dataclasses import dataclass

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
GLM_BOX_MARKERS = ("<|begin_of_box|>", "<|end_of_box|>")


@dataclass(frozen=True)
class ThinkFormat:
    """The delimiters of one output style; ``open``/``close``/``force`` are None for ``plain``.

    ``force`` is the text that closes an open think and starts the answer, for answer forcing.
    """

    open: str | None
    close: str | None
    removed_markers: tuple[str, ...] = ()
    force: str | None = None


STYLES: dict[str, ThinkFormat] = {
    "glm": ThinkFormat("<think>", "</think>", GLM_BOX_MARKERS, force="</think><answer>"),
    "kimi": ThinkFormat("◁think▷", "◁/think▷", force="◁/think▷"),
    "think_tags": ThinkFormat("<think>", "</think>", force="</think>"),
    "plain": ThinkFormat(None, None),
}


@dataclass(frozen=True)
class Reasoning:
    think: str
    answer: str
    closed: bool


def parse_reasoning(text: str, style: str) -> Reasoning:
    """Parse ``text`` written in ``style`` (one of :data:`STYLES`)."""
    try:
        fmt = STYLES[style]
    except KeyError:
        raise ValueError(f"unknown reasoning style {style!r}; expected one of {sorted(STYLES)}") from None
    text = text if isinstance(text, str) else ""
    for marker in fmt.removed_markers:
        text = text.replace(marker, "")
    if fmt.close is None:
        return Reasoning(think="", answer=text.strip(), closed=True)

    head, sep, tail = text.partition(fmt.close)
    if sep:
        _, opened, after_open = head.partition(fmt.open)
        think = after_open if opened else head
        answer, closed = tail, True
    else:
        _, opened, after_open = text.partition(fmt.open)
        think, answer = (after_open, "") if opened else ("", text)
        closed = False
    return Reasoning(think=think.strip(), answer=_inside_answer_tags(answer).strip(), closed=closed)


def _inside_answer_tags(answer: str) -> str:
    _, opened, inside = answer.partition(ANSWER_OPEN)
    return inside.partition(ANSWER_CLOSE)[0] if opened else answer


def detect_style(text: str) -> str:
    """The style of an output whose model is not known (a harness's predictions): ``kimi`` if a
    Kimi delimiter occurs, else ``glm`` if ``<think>``, ``</think>``, ``<answer>`` or a box marker
    does (its parse also drops GLM's box markers), else ``plain``."""
    text = text if isinstance(text, str) else ""
    kimi = STYLES["kimi"]
    if kimi.open in text or kimi.close in text:
        return "kimi"
    glm = STYLES["glm"]
    if any(mark in text for mark in (glm.open, glm.close, ANSWER_OPEN, *glm.removed_markers)):
        return "glm"
    return "plain"
