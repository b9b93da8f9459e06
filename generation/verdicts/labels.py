"""Label verdicts: how an answer relates to its image's ImageNet-21K-P class in WordNet 3.0.

The one definition of the label check: generation judges every answer with it when a chunk commits
(:mod:`generation.verdicts.policy`), and the release, GRPO's ``label`` reward and ``eval score``
(label accuracy) use :func:`label_verdicts` too. The rules (what an answer names, the verdict kinds
and the label score, the known limits) are stated in docs/release.md, "Label verdicts and
`verified`"; :func:`lemma_forms` and :func:`_normalize` implement the matching rules. Every form of
every lemma is one pattern of a single Aho-Corasick automaton (``ahocorasick_rs``), matched against
the normalized answer: one pass finds every whole-word mention of any lemma, hundreds of times
faster than one regex per class (``benchmarks/bench_label_verdicts.py``); it is built on first use
(1.5 s or so) and kept for the process. :func:`verifier_fingerprint` hashes everything a verdict depends
on (this module, the WordNet module and table, the class lemmas, the versions of
``ahocorasick_rs`` and Unicode), so that a stored verdict is reused only under the same rules.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain
from unicodedata import unidata_version

import ahocorasick_rs
import numpy as np

from common.classes import imagenet21k_classes
from generation.verdicts import wordnet
from generation.verdicts.wordnet import TABLE_FILE, WordNetNouns, data_path, wordnet_nouns

__all__ = [
    "KINDS",
    "LabelVerdict",
    "label_accuracy",
    "label_hits",
    "label_verdicts",
    "lemma_forms",
    "named_synsets",
    "names_class",
    "verifier_fingerprint",
]

KINDS = ("exact", "hyponym", "hypernym", "other_class", "none")
CORRECT_KINDS = frozenset({"exact", "hyponym"})
# The stop-list: synsets with fewer ancestors than this count neither as hypernym nor as other class.
MIN_ANCESTORS = 6


@dataclass(frozen=True, slots=True)
class LabelVerdict:
    kind: str  # one of KINDS
    score: float  # in [0, 1]
    # The wnid that decided: the label for exact, the ancestor scored for hypernym, the first one
    # mentioned for hyponym and other_class (and between equally deep ancestors; between synsets that
    # share a mention, the first by wnid); None for none.
    named: str | None


NONE = LabelVerdict("none", 0.0, None)


# The matching rules, all of them.

WORD_SEPARATOR = re.compile(r"[\s\-]+")
CONSONANT_Y = re.compile(r"[^aeiou\W]y$", re.IGNORECASE)
# Every boundary between a word character (``\w``, as in a regular expression) and another character
# or an end of the text is marked, in the answers and in the patterns alike, so that a pattern can
# only match whole words: one that begins (ends) with a word character begins (ends) with the mark.
WORDS = re.compile(r"(\w+)")
MARK = "\x01"
# Curly apostrophes count as straight ones; an answer's own \x01 (and \x00, which separates the
# patterns while they are normalised together) is neither mark nor separator.
REPLACEMENTS = (("\u2019", "'"), ("\u2018", "'"), ("\u02bc", "'"), ("\x00", "\ufffd"), ("\x01", "\ufffd"))


def lemma_forms(lemma: str, instance: bool = False) -> tuple[tuple[str, ...], bool]:
    """The strings that name ``lemma`` (its words joined by one space, the last one with its plural
    endings; none for a single character), and whether they match only in their own capitals: an
    abbreviation (all capitals), or the name of an ``instance`` (a proper name) that starts with one."""
    words = [word for word in WORD_SEPARATOR.split(_replace(lemma)) if word]
    if not words:
        raise ValueError(f"lemma {lemma!r} has no words")
    if len(words) == 1 and len(words[0]) == 1:
        return (), False  # "A" (vitamin A), "C" (carbon): letters far more often than names
    last = words[-1]
    if CONSONANT_Y.search(last):
        endings = (last, last[:-1] + "ies")
    elif last[-1].isalpha():
        endings = (last, last + "s", last + "es")
    else:
        endings = (last,)
    stem = " ".join(words[:-1])
    forms = tuple(f"{stem} {ending}" if stem else ending for ending in endings)
    is_abbreviation = lemma.upper() == lemma and any(character.isalpha() for character in lemma)
    return forms, is_abbreviation or (instance and lemma[0].isupper())


def _replace(text: str) -> str:
    for old, new in REPLACEMENTS:
        text = text.replace(old, new)
    return text


def _mark(text: str) -> str:
    """Each run of spaces and hyphens made one space (those at either end dropped), word boundaries
    marked. (``str.split`` and ``\\s`` know the same whitespace.)"""
    return MARK.join(WORDS.split(" ".join(text.replace("-", " ").split())))


def _normalize(text: str) -> str:
    """An answer as the patterns are matched in it (apostrophes straight, separators, marks)."""
    return _mark(_replace(text))


def _lower(text: str) -> str:
    """Lower case, one character for one (so that positions agree with ``text``)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(low if len(low := character.lower()) == 1 else character for character in text)


def _patterns(nouns: WordNetNouns) -> tuple[list[str], list[tuple]]:
    """Every form of every lemma of the table as a pattern of the automaton (lower case, marked), and
    per pattern: the synsets it names in any case, the (synset, form) pairs that need their own
    capitals, and which ends need a look at their neighbour: those that are no word character (left,
    right), or None."""
    synsets, forms, cased = [], [], []
    for index, lemmas in enumerate(nouns.lemmas):
        instance = bool(nouns.instance_parents[index])
        for lemma in lemmas:
            lemma_strings, own_case_only = lemma_forms(lemma, instance)
            synsets += [index] * len(lemma_strings)
            forms += lemma_strings
            cased += [own_case_only] * len(lemma_strings)
    # All forms in one pass: \x00 is neither a word character nor a separator.
    marked = _mark("\x00".join(forms))
    keys: dict[str, tuple[list[int], list[tuple[int, str]]]] = {}
    for index, form, key, own_case_only in zip(
        synsets, marked.split("\x00"), _lower(marked).split("\x00"), cased, strict=True
    ):
        any_case, own_case = keys.setdefault(key, ([], []))
        if own_case_only:
            own_case.append((index, form))
        elif index not in any_case:
            any_case.append(index)
    values = []
    for key, (any_case, own_case) in keys.items():
        check = (key[0] != MARK, key[-1] != MARK)
        values.append((tuple(any_case), tuple(own_case), check if any(check) else None))
    return list(keys), values


class _Matcher:
    """Every lemma of the WordNet table in one automaton: which synsets does a text name?"""

    def __init__(self, patterns: list[str], values: list[tuple]) -> None:
        self.values = values
        self.automaton = ahocorasick_rs.AhoCorasick(patterns, matchkind=ahocorasick_rs.MatchKind.Standard)

    def mentions(self, text: str, keep_nested: bool = False) -> list[tuple[int, ...]]:
        """The synsets of each mention in ``text``, in order; a mention inside a longer one ("lion" in
        "sea lion") does not count unless ``keep_nested`` (which gives every whole-word match)."""
        marked = _normalize(text)
        lowered = _lower(marked)
        values, found = self.values, []
        for pattern, start, end in self.automaton.find_matches_as_indexes(lowered, overlapping=True):
            named, own_case, check = values[pattern]
            if check is not None and (
                (check[0] and start and lowered[start - 1] == MARK)
                or (check[1] and lowered[end : end + 1] == MARK)
            ):
                continue  # a word character beside an end of the pattern that is no word character
            if own_case:
                span = marked[start:end]
                named += tuple(index for index, form in own_case if form == span)
            if named:
                found.append((start, -end, named))
        found.sort()  # by start, the longest first
        mentions, reach = [], 0
        for _, negative_end, named in found:
            if -negative_end > reach or keep_nested:
                mentions.append(named)
            if -negative_end > reach:
                reach = -negative_end
        return mentions


_MATCHER_LOCK = threading.Lock()


def _matcher() -> _Matcher:
    with _MATCHER_LOCK:  # built once, also when a thread prepares it (generation.runs.prepare_commits)
        return _built_matcher()


@cache
def _built_matcher() -> _Matcher:
    return _Matcher(*_patterns(wordnet_nouns()))


@cache
def verifier_fingerprint() -> str:
    """A short hash of the matching rules (this module and ``generation.verdicts.wordnet``, the versions of
    ``ahocorasick_rs`` and of Unicode, which decides ``\\w`` and lower case), the WordNet table and the
    class lemmas: two verdicts with the same fingerprint were judged alike."""
    digest = hashlib.sha256()
    for source in (__file__, wordnet.__file__):
        with open(source, "rb") as handle:
            digest.update(handle.read())
    digest.update(f"{importlib.metadata.version('ahocorasick-rs')} {unidata_version}".encode())
    digest.update(data_path(TABLE_FILE).read_bytes())
    classes = imagenet21k_classes()
    digest.update(json.dumps([[wnid, classes.lemmas[wnid]] for wnid in classes.wnids]).encode())
    return digest.hexdigest()[:16]


@cache
def _class_indices() -> frozenset[int]:
    nouns = wordnet_nouns()
    return frozenset(nouns.index[wnid] for wnid in imagenet21k_classes().wnids)


def _label_index(wnid: str) -> int:
    if wnid not in imagenet21k_classes():
        raise ValueError(f"{wnid!r} is not an ImageNet-21K-P class")
    return wordnet_nouns().index[wnid]


def named_synsets(answer: str) -> list[str]:
    """The wnids of the table's synsets that ``answer`` names, in order of first mention."""
    if not isinstance(answer, str):
        return []
    wnids = wordnet_nouns().wnids
    return [wnids[index] for index in dict.fromkeys(chain.from_iterable(_matcher().mentions(answer)))]


def names_class(answer: str, wnid: str) -> bool:
    """Whether ``answer`` names the class ``wnid`` by one of its lemmas; a non-string answer names nothing."""
    label = _label_index(wnid)
    return isinstance(answer, str) and any(label in named for named in _matcher().mentions(answer))


# The verdict.


def _first(mentions: list[tuple[int, ...]], candidates: set[int] | frozenset[int]) -> int:
    """The candidate mentioned first."""
    return next(index for named in mentions for index in named if index in candidates)


def _verdict(
    mentions: list[tuple[int, ...]], label: int, nouns: WordNetNouns, classes: frozenset[int]
) -> LabelVerdict:
    mentioned = set(chain.from_iterable(mentions))
    if label in mentioned:
        return LabelVerdict("exact", 1.0, nouns.wnids[label])
    if not mentioned:
        return NONE
    if below := nouns.descendant_indices(label) & mentioned:
        return LabelVerdict("hyponym", 1.0, nouns.wnids[_first(mentions, below)])
    mentioned = {index for index in mentioned if len(nouns.ancestor_indices(index)) >= MIN_ANCESTORS}
    ancestors = nouns.ancestor_indices(label)
    if above := ancestors & mentioned:
        depths = {index: len(nouns.ancestor_indices(index)) for index in above}
        depth = max(depths.values())
        deepest = _first(mentions, {index for index, d in depths.items() if d == depth})
        return LabelVerdict("hypernym", (depth + 1) / (len(ancestors) + 1), nouns.wnids[deepest])
    if others := classes & mentioned:
        return LabelVerdict("other_class", 0.0, nouns.wnids[_first(mentions, others)])
    return NONE


def label_verdicts(answers: Sequence[str], wnids: Sequence[str]) -> list[LabelVerdict]:
    """Per answer, its verdict against the class ``wnids[i]`` (rules in the module docstring)."""
    if len(answers) != len(wnids):
        raise ValueError(f"{len(answers)} answers but {len(wnids)} wnids")
    nouns, matcher, classes = wordnet_nouns(), _matcher(), _class_indices()
    labels = {wnid: _label_index(wnid) for wnid in dict.fromkeys(wnids)}
    return [
        _verdict(matcher.mentions(answer), labels[wnid], nouns, classes) if isinstance(answer, str) else NONE
        for answer, wnid in zip(answers, wnids, strict=True)
    ]


def label_hits(answers: Sequence[str], wnids: Sequence[str]) -> np.ndarray:
    """Per answer, whether it names its class or a descendant of it (verdict ``exact`` or ``hyponym``)."""
    return np.array([v.kind in CORRECT_KINDS for v in label_verdicts(answers, wnids)], dtype=bool)


def label_accuracy(answers: Sequence[str], wnids: Sequence[str]) -> float:
    """The share of answers that name their class or a descendant of it."""
    hits = label_hits(answers, wnids)
    return float(hits.mean()) if len(hits) else 0.0
