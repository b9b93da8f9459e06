"""Label-grounded accuracy: does an answer name its image's ImageNet-21K class?

An answer names the class when it contains any lemma of the class's synset
(``generation.classes.imagenet21k_classes().lemmas[wnid]``) as whole words, ignoring case:

- the words of a multiword lemma may be joined by spaces or hyphens ("man-eater" matches
  "man eater" and "great white-shark" matches "great white shark");
- the last word may take a plural "s" or "es", or "ies" for a consonant + "y" ending
  ("brambling" matches "bramblings", "butterfly" matches "butterflies"); irregular
  plurals ("mice", "geese", "oxen") are not recognised;
- lemmas written in capitals (abbreviations: "OR", "ER", "PC", "CD") match only in
  capitals, otherwise every "or" would name an operating room;
- curly apostrophes count as straight ones ("jack-o’-lantern").

Hypernyms are not accepted ("a bird" does not name a brambling): the WordNet hierarchy is
not available offline (timm ships the lemmas and glosses only).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

import numpy as np

from generation.classes import imagenet21k_classes

WORD_SEPARATOR = r"[\s\-]+"
APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def _last_word_pattern(word: str) -> str:
    """The last word of a lemma with its optional plural ending."""
    if re.search(r"[^aeiou\W]y$", word, re.IGNORECASE):
        return re.escape(word[:-1]) + "(?:y|ies)"
    if word[-1].isalpha():
        return re.escape(word) + "(?:e?s)?"
    return re.escape(word)


def lemma_pattern(lemma: str) -> str:
    """A regular expression (without word boundaries) for one lemma."""
    words = [word for word in re.split(WORD_SEPARATOR, lemma.translate(APOSTROPHES)) if word]
    if not words:
        raise ValueError(f"lemma {lemma!r} has no words")
    body = WORD_SEPARATOR.join([*map(re.escape, words[:-1]), _last_word_pattern(words[-1])])
    is_abbreviation = lemma.upper() == lemma and any(character.isalpha() for character in lemma)
    return f"(?:{body})" if is_abbreviation else f"(?i:{body})"


@cache
def class_pattern(wnid: str) -> re.Pattern:
    """Any lemma of the class ``wnid`` as whole words."""
    classes = imagenet21k_classes()
    if wnid not in classes:
        raise ValueError(f"{wnid!r} is not an ImageNet-21K-P class")
    alternatives = "|".join(lemma_pattern(lemma) for lemma in classes.lemmas[wnid])
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def names_class(answer: str, wnid: str) -> bool:
    """Whether ``answer`` names the class ``wnid``; a non-string answer names nothing."""
    if not isinstance(answer, str):
        return False
    return class_pattern(wnid).search(answer.translate(APOSTROPHES)) is not None


def label_hits(answers: Sequence[str], wnids: Sequence[str]) -> np.ndarray:
    """Per answer, whether it names its class."""
    if len(answers) != len(wnids):
        raise ValueError(f"{len(answers)} answers but {len(wnids)} wnids")
    return np.array(
        [names_class(answer, wnid) for answer, wnid in zip(answers, wnids, strict=True)], dtype=bool
    )


def label_accuracy(answers: Sequence[str], wnids: Sequence[str]) -> float:
    """The share of answers that name their class."""
    hits = label_hits(answers, wnids)
    return float(hits.mean()) if len(hits) else 0.0
