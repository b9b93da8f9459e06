"""WordNet 3.0's noun hierarchy around the ImageNet-21K-P classes, read from a table shipped with the package.

ImageNet wnids are WordNet 3.0 noun offsets (``n01530575`` is synset 01530575 of ``data.noun``).
``data/wordnet30_nouns.tsv.gz`` holds every noun synset that is an ancestor or a descendant of a
class (the classes included); edges to synsets outside the table never lie on a path the label
verdicts follow. Format (UTF-8, gzip): ``#`` lines are provenance comments; every other line is a
synset, sorted by wnid, with four tab-separated columns: the wnid, its lemmas in WordNet's order
separated by ``|`` (underscores as spaces, as timm's class list writes them), its ``@`` hypernyms
and its ``@i`` instance hypernyms (wnids separated by spaces). Nothing downloads;
``tools/build_wordnet_table.py`` regenerates the table. WordNet 3.0 is Princeton University's,
under ``data/WORDNET_LICENSE.txt``.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

TABLE_FILE = "wordnet30_nouns.tsv.gz"
LICENSE_FILE = "WORDNET_LICENSE.txt"


def data_path(name: str):
    """A file shipped in ``generation/verdicts/data`` (a ``Traversable``; a real path in an installed package)."""
    return resources.files("generation.verdicts") / "data" / name


def format_row(
    wnid: str, lemmas: Iterable[str], hypernyms: Iterable[str], instance_hypernyms: Iterable[str]
) -> str:
    """One line of the table (without its newline)."""
    return "\t".join([wnid, "|".join(lemmas), " ".join(hypernyms), " ".join(instance_hypernyms)])


@dataclass(eq=False)
class WordNetNouns:
    """The table: synsets by index, with their lemmas and their hypernyms (``@`` and ``@i`` together)."""

    wnids: tuple[str, ...]
    lemmas: tuple[tuple[str, ...], ...]
    parents: tuple[tuple[int, ...], ...]
    instance_parents: tuple[tuple[int, ...], ...]
    header: tuple[str, ...] = ()
    index: dict[str, int] = field(init=False, repr=False)
    _children: list[list[int]] | None = field(default=None, init=False, repr=False)
    _ancestors: dict[int, frozenset[int]] = field(default_factory=dict, init=False, repr=False)
    _descendants: dict[int, frozenset[int]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {wnid: i for i, wnid in enumerate(self.wnids)}

    def __len__(self) -> int:
        return len(self.wnids)

    def __contains__(self, wnid: object) -> bool:
        return wnid in self.index

    # Index-based queries (the label matcher's inner loop).

    def hypernym_indices(self, i: int) -> tuple[int, ...]:
        return self.parents[i] + self.instance_parents[i]

    def ancestor_indices(self, i: int) -> frozenset[int]:
        """Every synset on any hypernym path above ``i`` (``i`` excluded), computed once."""
        known = self._ancestors.get(i)
        if known is None:
            found: set[int] = set()
            for parent in self.hypernym_indices(i):
                found.add(parent)
                found |= self.ancestor_indices(parent)
            known = self._ancestors[i] = frozenset(found)
        return known

    def descendant_indices(self, i: int) -> frozenset[int]:
        """Every synset with ``i`` on one of its hypernym paths (``i`` excluded), computed once."""
        known = self._descendants.get(i)
        if known is None:
            if self._children is None:
                children: list[list[int]] = [[] for _ in self.wnids]
                for child in range(len(self.wnids)):
                    for parent in self.hypernym_indices(child):
                        children[parent].append(child)
                self._children = children
            found: set[int] = set()
            stack = [i]
            while stack:
                for child in self._children[stack.pop()]:
                    if child not in found:
                        found.add(child)
                        stack.append(child)
            known = self._descendants[i] = frozenset(found)
        return known

    # wnid-based queries.

    def _at(self, wnid: str) -> int:
        try:
            return self.index[wnid]
        except KeyError:
            raise KeyError(f"{wnid!r} is not in the WordNet table") from None

    def synset_lemmas(self, wnid: str) -> tuple[str, ...]:
        return self.lemmas[self._at(wnid)]

    def hypernyms(self, wnid: str) -> tuple[str, ...]:
        """The direct hypernyms of ``wnid``, ``@`` then ``@i``."""
        return tuple(self.wnids[j] for j in self.hypernym_indices(self._at(wnid)))

    def ancestors(self, wnid: str) -> frozenset[str]:
        return frozenset(self.wnids[j] for j in self.ancestor_indices(self._at(wnid)))

    def descendants(self, wnid: str) -> frozenset[str]:
        return frozenset(self.wnids[j] for j in self.descendant_indices(self._at(wnid)))

    def depth(self, wnid: str) -> int:
        """The number of ancestors over all hypernym paths (0 for ``entity``)."""
        return len(self.ancestor_indices(self._at(wnid)))


def parse_table(lines: Iterable[str]) -> WordNetNouns:
    header: list[str] = []
    rows: list[list[str]] = []
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith("#"):
            header.append(line[1:].strip())
        elif line:
            rows.append(line.split("\t"))
    index = {row[0]: i for i, row in enumerate(rows)}

    def edges(column: str) -> tuple[int, ...]:
        return tuple(index[wnid] for wnid in column.split()) if column else ()

    return WordNetNouns(
        wnids=tuple(row[0] for row in rows),
        lemmas=tuple(tuple(row[1].split("|")) for row in rows),
        parents=tuple(edges(row[2]) for row in rows),
        instance_parents=tuple(edges(row[3]) for row in rows),
        header=tuple(header),
    )


def read_table(path) -> WordNetNouns:
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as handle:
        return parse_table(handle.read().split("\n"))


@cache
def wordnet_nouns() -> WordNetNouns:
    """The shipped table, read once per process."""
    return read_table(data_path(TABLE_FILE))
