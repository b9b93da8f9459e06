"""What :mod:`release.stats` counts from the words of the released thinks, in one pass per table.

Each table's words are found once (:func:`release.trace_quality.table_words`) and feed both the
trace report (:class:`release.trace_quality.TraceQuality`) and the vocabulary figure's blocks (which
rows form which counted block, :class:`release.stats.ReleaseStats` says). A large release counts
them in a second process (:mod:`release.background`), beside the writing or the reading of the
release: ``build`` starts it before checking its inputs when the runs' record files hold
:data:`EARLY_RECORD_BYTES` or more (the class check's automaton is built meanwhile), ``stats`` from
:data:`BACKGROUND_SAMPLES` samples; a smaller one counts in the caller's process, where starting a
process would cost more than it saves.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from generation.records import RECORD_GLOB
from release.background import Background
from release.trace_quality import COLUMNS, TraceQuality, table_words

BACKGROUND_SAMPLES = 2_000
EARLY_RECORD_BYTES = 8 << 20  # about 2,000 records of reasoning traces


class ThinkWords:
    """The trace report and the vocabulary blocks of each annotator's rows (columns
    :data:`release.trace_quality.COLUMNS`), fed in release order."""

    def __init__(self, annotators=()) -> None:
        self._quality = TraceQuality(annotators)
        self._blocks: dict[tuple[str, int], set[str]] = {}  # the words of each counted block being filled
        self._block_words: list[int] = []  # the distinct words of each counted block, once full

    def add(self, annotator: str, table: pa.Table, blocks=()) -> None:
        """Count ``table``, the next rows of ``annotator``; ``blocks``: (the block's key, first row, end
        row, whether the block is full with them) for the rows that belong to counted blocks."""
        think, answer = table_words(table)
        self._quality.add_words(annotator, table, think, answer)
        for block, start, stop, full in blocks:
            words = self._blocks.setdefault(block, set())
            words.update(think.distinct_words(start, stop))
            if full:
                self._block_words.append(len(self._blocks.pop(block)))

    def result(self, tokens: dict[str, list[int]]) -> dict:
        """``trace_quality`` (``tokens``: each annotator's token counts), the distinct words of each full
        counted block (``block_words``) and of all rows of the blocks not full (``leftover_words``)."""
        leftover = set().union(*self._blocks.values())
        return {
            "trace_quality": self._quality.result(tokens),
            "block_words": self._block_words,
            "leftover_words": len(leftover),
        }


class _InBackground:
    """A :class:`ThinkWords` in a second process, with its methods."""

    def __init__(self) -> None:
        self._background = Background(ThinkWords)

    def add(self, annotator: str, table: pa.Table, blocks=()) -> None:
        self._background.call(
            "add", annotator, table.select([c for c in COLUMNS if c in table.column_names]), blocks
        )

    def result(self, tokens: dict[str, list[int]]) -> dict:
        return self._background.ask("result", tokens)


def think_words(annotators, samples: int) -> ThinkWords | _InBackground:
    """A :class:`ThinkWords` for a release of ``samples`` samples: in a second process from
    :data:`BACKGROUND_SAMPLES` on."""
    return _InBackground() if samples >= BACKGROUND_SAMPLES else ThinkWords(annotators)


def early_think_words(run_folders) -> _InBackground | None:
    """A :class:`ThinkWords` in a second process, started now, if the record files of ``run_folders``
    (run folders, or folders of run folders) hold :data:`EARLY_RECORD_BYTES` or more; else None."""
    files = (
        path
        for folder in map(Path, run_folders)
        for pattern in (RECORD_GLOB, f"*/{RECORD_GLOB}")
        for path in folder.glob(pattern)
    )
    return _InBackground() if sum(path.stat().st_size for path in files) >= EARLY_RECORD_BYTES else None
