"""Why a generation record is kept out of a release's default configs.

A record is rejected when its think was never closed, the generation hit its
token limit, the answer is empty, or the text is caught in a repetition loop
(the paper's 196,388-token maximum can only be one). Releases keep rejected
records reachable, with their reason, in the ``rejected`` config.
"""

from __future__ import annotations

import re
import zlib

_WORD = re.compile(r"\w+")
LOOP_NGRAM = 8
LOOP_MIN_WORDS = 200
LOOP_MAX_DISTINCT_NGRAM_RATIO = 0.3
LOOP_TAIL_CHARS = 4000
LOOP_MAX_TAIL_COMPRESSION = 0.08


def is_repetition_loop(text: str) -> bool:
    """True when ``text`` degenerates into repeating itself.

    Two signals, either suffices: fewer than 30% of its word 8-grams are
    distinct (natural reasoning stays above 90%), or its last 4,000 characters
    compress below 8% of their size with zlib (English prose compresses to
    about 35–45%).
    """
    words = _WORD.findall(text.lower())
    if len(words) >= LOOP_MIN_WORDS:
        ngrams = [tuple(words[i : i + LOOP_NGRAM]) for i in range(len(words) - LOOP_NGRAM + 1)]
        if len(set(ngrams)) < LOOP_MAX_DISTINCT_NGRAM_RATIO * len(ngrams):
            return True
    tail = text[-LOOP_TAIL_CHARS:].encode("utf-8")
    return len(tail) >= LOOP_TAIL_CHARS and len(zlib.compress(tail)) < LOOP_MAX_TAIL_COMPRESSION * len(tail)


def rejection_reason(think_closed: bool, finish_reason: str, think: str, answer: str) -> str | None:
    """The reason code a record is kept out of the default configs, or None if it is good."""
    if finish_reason == "length":
        return "truncated"
    if not think_closed:
        return "think_not_closed"
    if not answer.strip():
        return "empty_answer"
    if is_repetition_loop(think) or is_repetition_loop(answer):
        return "repetition_loop"
    return None
