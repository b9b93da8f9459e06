"""parse_reasoning: every rule of generation/reasoning.py, for each style."""

import pytest

from generation.reasoning import STYLES, Reasoning, parse_reasoning

DELIMS = {
    "glm": ("<think>", "</think>"),
    "kimi": ("◁think▷", "◁/think▷"),
    "think_tags": ("<think>", "</think>"),
}
THINKING = sorted(DELIMS)


@pytest.mark.parametrize("style", THINKING)
def test_rule1_closed_with_opening(style):
    o, c = DELIMS[style]
    assert parse_reasoning(f"{o} look at it \n{c}\n\n The answer. ", style) == Reasoning(
        "look at it", "The answer.", True
    )


@pytest.mark.parametrize("style", THINKING)
def test_rule1_opening_in_prompt(style):
    _, c = DELIMS[style]
    assert parse_reasoning(f"reasoning only{c}final", style) == Reasoning("reasoning only", "final", True)


@pytest.mark.parametrize("style", THINKING)
def test_rule1_first_closing_splits_and_text_before_opening_dropped(style):
    o, c = DELIMS[style]
    parsed = parse_reasoning(f"preamble {o}a{c}b{c}c", style)
    assert parsed == Reasoning("a", f"b{c}c", True)


@pytest.mark.parametrize("style", THINKING)
def test_rule2_unclosed(style):
    o, _ = DELIMS[style]
    assert parse_reasoning(f"intro {o} still thinking when the tokens ran out", style) == Reasoning(
        "still thinking when the tokens ran out", "", False
    )


@pytest.mark.parametrize("style", THINKING)
def test_rule3_no_delimiters(style):
    assert parse_reasoning("  just an answer  ", style) == Reasoning("", "just an answer", False)


@pytest.mark.parametrize("style", THINKING)
def test_rule4_answer_tags(style):
    o, c = DELIMS[style]
    assert parse_reasoning(f"{o}t{c} noise <answer> the cat </answer> tail", style).answer == "the cat"
    assert parse_reasoning(f"{o}t{c}<answer>unfinished", style).answer == "unfinished"
    assert parse_reasoning("<answer>x</answer>", style) == Reasoning("", "x", False)


def test_glm_box_markers_removed_content_kept():
    text = "<think>hmm</think><answer>It is a <|begin_of_box|>brambling<|end_of_box|>.</answer>"
    assert parse_reasoning(text, "glm") == Reasoning("hmm", "It is a brambling.", True)
    # Other styles leave the markers alone.
    assert "<|begin_of_box|>" in parse_reasoning(text, "think_tags").answer


def test_kimi_ignores_angle_tags():
    assert parse_reasoning("<think>a</think>b", "kimi") == Reasoning("", "<think>a</think>b", False)


def test_plain_style():
    assert parse_reasoning(" <think>x</think> all of it ", "plain") == Reasoning(
        "", "<think>x</think> all of it", True
    )


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize(
    "text", ["", " ", "</think>", "<think>", "◁/think▷◁think▷", "<answer>", "\x00\ud800", None]
)
def test_never_raises(style, text):
    parsed = parse_reasoning(text, style)
    assert isinstance(parsed.think, str) and isinstance(parsed.answer, str)


def test_empty_parts():
    assert parse_reasoning("<think></think>", "think_tags") == Reasoning("", "", True)


def test_unknown_style():
    with pytest.raises(ValueError, match="unknown reasoning style"):
        parse_reasoning("x", "nope")
