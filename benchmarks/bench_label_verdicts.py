"""Time label verdicts against the former per-class regex matcher on the same synthetic answers.

    .venv/bin/python -m benchmarks.bench_label_verdicts --answers 5000 --words 200   # from the repo root

Answers of about ``--words`` words drawn from the ImageNet-21K glosses' vocabulary each name their
label, a descendant, an ancestor, another class or nothing (a fifth each), in varied surface forms.
Rows, in answers/s on one core: ``label_verdicts`` (automaton built beforehand; its build and the
table's load are timed apart); the former matcher (``OLD MATCHER`` below, one regex per class)
asked only whether an answer names its class; and the former matcher brought to the same verdict
(one regex per synset) on ``--regex-answers`` answers. It prints the ratios and how often the two
matchers agree on naming the label. Figures: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from collections.abc import Sequence
from functools import cache

import numpy as np

from benchmarks.bench_metrics import vocabulary
from common.classes import imagenet21k_classes
from generation.verdicts import labels as verifier
from generation.verdicts.wordnet import wordnet_nouns

# --- OLD MATCHER: the label matcher as it was before the verdicts (the baseline) ---------------

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


# --- END OF OLD MATCHER -------------------------------------------------------------------------


@cache
def synset_pattern(wnid: str) -> re.Pattern:
    """The old matcher's expression for any synset of the WordNet table."""
    alternatives = "|".join(lemma_pattern(lemma) for lemma in wordnet_nouns().synset_lemmas(wnid))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def regex_verdict(answer: str, label: str) -> tuple[str, str | None]:
    """The verdict (kind, named) with one regular expression per synset, as the former matcher
    would give it: every candidate searched, the first mentioned (or the deepest ancestor) kept."""
    nouns, classes = wordnet_nouns(), imagenet21k_classes()
    text = answer.translate(APOSTROPHES)

    def first(candidates) -> str | None:
        found = [(m.start(), w) for w in candidates if (m := synset_pattern(w).search(text))]
        return min(found)[1] if found else None

    if synset_pattern(label).search(text):
        return "exact", label
    if named := first(nouns.descendants(label)):
        return "hyponym", named
    by_depth: dict[int, list[str]] = {}
    for ancestor in nouns.ancestors(label):
        by_depth.setdefault(nouns.depth(ancestor), []).append(ancestor)
    for depth in sorted(by_depth, reverse=True):
        if named := first(by_depth[depth]):
            return "hypernym", named
    if named := first(c for c in classes.wnids if c != label):
        return "other_class", named
    return "none", None


def surface(rng: np.random.Generator, lemma: str) -> str:
    """A lemma as an answer might write it."""
    roll = rng.random()
    if roll < 0.2 and lemma[-1].isalpha() and not lemma.isupper():
        lemma += "s"
    elif roll < 0.35:
        lemma = lemma.replace(" ", "-")
    elif roll < 0.5:
        lemma = lemma.capitalize()
    return lemma


def make_answers(n: int, n_words: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    words, cdf = vocabulary()
    nouns, classes = wordnet_nouns(), imagenet21k_classes()
    answers, labels = [], []
    for _ in range(n):
        label = classes.wnids[int(rng.integers(len(classes.wnids)))]
        pick = int(rng.integers(5))
        choices = [
            [label],
            sorted(nouns.descendants(label)),
            sorted(nouns.ancestors(label)),
            [classes.wnids[int(rng.integers(len(classes.wnids)))]],
            [],
        ][pick]
        phrase = ""
        if choices:
            lemmas = nouns.synset_lemmas(choices[int(rng.integers(len(choices)))])
            phrase = surface(rng, lemmas[int(rng.integers(len(lemmas)))])
        draws = np.searchsorted(cdf, rng.random(n_words), side="right")
        chosen = [words[min(i, len(words) - 1)] for i in draws]
        for k in range(0, n_words, int(rng.integers(8, 26))):
            chosen[k] = chosen[k].capitalize()
            if k:
                chosen[k - 1] += str(rng.choice([".", ".", ",", "?", ";"]))
        if phrase:
            chosen.insert(int(rng.integers(len(chosen))), phrase)
        answers.append("The answer: " + " ".join(chosen) + ".")
        labels.append(label)
    return answers, labels


def per_second(function, *args, repeat: int = 3) -> tuple[float, object]:
    """The best of ``repeat`` runs, as calls of ``function`` per answer per second."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - start)
    return len(args[0]) / best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=5000)
    parser.add_argument("--words", type=int, default=200)
    parser.add_argument("--regex-answers", type=int, default=20, help="answers for the regex verdict")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    nouns = wordnet_nouns()
    load = time.perf_counter() - start
    start = time.perf_counter()
    verifier._matcher()
    build = time.perf_counter() - start
    print(f"WordNet table: {len(nouns):,} synsets loaded in {load:.3f} s; automaton built in {build:.2f} s")

    answers, labels = make_answers(args.answers, args.words, args.seed)
    print(f"{len(answers)} answers, {np.mean([len(a.split()) for a in answers]):.0f} words on average")
    for label in dict.fromkeys(labels):  # per-label caches (ancestors, descendants) outside the timings
        verifier.label_verdicts([""], [label])
        class_pattern(label)

    rate, verdicts = per_second(verifier.label_verdicts, answers, labels)
    old_rate, old_hits = per_second(label_hits, answers, labels)
    n = args.regex_answers
    for label in labels[:n]:  # compile outside the timing
        regex_verdict("", label)
    regex_rate, regex_verdicts = per_second(
        lambda a, w: [regex_verdict(x, y) for x, y in zip(a, w, strict=True)],
        answers[:n],
        labels[:n],
        repeat=1,
    )

    print(f"\n{'':<40}{'answers/s':>12}{'ratio':>9}")
    print(f"{'label_verdicts (automaton)':<40}{rate:>12,.0f}")
    print(f"{'baseline names_class (regex, own class)':<40}{old_rate:>12,.0f}{rate / old_rate:>8.1f}x")
    print(f"{f'baseline verdict (regex, {n} answers)':<40}{regex_rate:>12,.1f}{rate / regex_rate:>8.0f}x")

    kinds = Counter(v.kind for v in verdicts)
    print("\nverdicts: " + ", ".join(f"{kind} {kinds[kind]}" for kind in verifier.KINDS))
    exact = np.array([v.kind == "exact" for v in verdicts])
    hits = np.array([v.kind in verifier.CORRECT_KINDS for v in verdicts])
    print(f"names its own class: regex {old_hits.mean():.4f}, automaton exact {exact.mean():.4f} ", end="")
    print(f"(agreement {np.mean(old_hits == exact):.4f}); exact or hyponym {hits.mean():.4f}")
    print(f"regex hits that are automaton hits: {np.mean(hits[old_hits]):.4f}")
    same = sum((v.kind, v.named) == r for v, r in zip(verdicts, regex_verdicts, strict=False))
    print(f"verdict (kind, named), regex vs automaton, first {n} answers: {same}/{n} the same")


if __name__ == "__main__":
    main()
