"""The one policy for a record's verdicts: take the stored verdict when its rules' fingerprint is
current, else judge now.

Generation judges every record when its chunk commits (:func:`with_verdicts`): its quality verdict
(:func:`generation.verdicts.quality.record_verdict`) and its answer's label verdict
(:func:`generation.verdicts.labels.label_verdicts`), each stored with the fingerprint of the rules
that judged it (``quality_checker``, ``label_verifier``). Whoever reads records later (the release)
takes a stored verdict only under the current fingerprint and judges the others now
(:func:`current_quality_verdicts`, :class:`LabelVerdicts`), so a changed rule never leaves a stale
verdict in a release, and an unchanged one is never paid for twice.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from common.classes import imagenet21k_classes
from generation.records import RECORD_SCHEMA
from generation.verdicts.labels import KINDS, label_verdicts, verifier_fingerprint
from generation.verdicts.language import identify
from generation.verdicts.quality import forced_verdict, quality_fingerprint, record_verdict

logger = logging.getLogger(__name__)


class StoredRecords(Protocol):
    """Records in :data:`~generation.records.RECORD_SCHEMA` with random access by row
    (``release.rows.RecordStore``)."""

    table: pa.Table

    def take(self, rows: list[int], columns: list[str] | None = None) -> pa.Table: ...


# The record columns generation.verdicts.quality.record_verdict judges, in the order of its arguments.
QUALITY_FIELDS = (
    "think_closed",
    "finish_reason",
    "think",
    "answer",
    "forced_answer",
    "second_pass_finish_reason",
)


def quality_verdicts(
    records: pa.Table | pa.RecordBatch, reject_forced: bool = False, rows=None
) -> list[tuple[str, str] | None]:
    """:func:`generation.verdicts.quality.record_verdict` of each record of ``records`` (in
    :data:`RECORD_SCHEMA`), or of those at ``rows`` (an array of indices) only."""
    selected = records.select(list(QUALITY_FIELDS))
    columns = (selected if rows is None else selected.take(pa.array(rows))).to_pydict()
    return [
        record_verdict(*fields, reject_forced=reject_forced) for fields in zip(*columns.values(), strict=True)
    ]


def with_verdicts(records: pa.Table) -> pa.Table:
    """``records`` (in :data:`RECORD_SCHEMA`) with their quality verdicts
    (:func:`generation.verdicts.quality.record_verdict`) and their answers' label verdicts against their
    ``wnid`` (:func:`generation.verdicts.labels.label_verdicts`), judged now by the current rules; a record
    whose ``wnid`` is no ImageNet-21K-P class gets no label verdict (``label_verifier`` "")."""
    quality = [verdict or ("", "") for verdict in quality_verdicts(records)]
    classes = imagenet21k_classes()
    wnids, answers = records["wnid"].to_pylist(), records["answer"].to_pylist()
    judged = [i for i, wnid in enumerate(wnids) if wnid in classes]
    verdicts = label_verdicts([answers[i] for i in judged], [wnids[i] for i in judged])
    kinds, scores, verifiers = [""] * len(wnids), [0.0] * len(wnids), [""] * len(wnids)
    fingerprint = verifier_fingerprint()
    for i, verdict in zip(judged, verdicts, strict=True):
        kinds[i], scores[i], verifiers[i] = verdict.kind, verdict.score, fingerprint
    values = {
        "quality_reason": [reason for reason, _ in quality],
        "quality_detail": [detail for _, detail in quality],
        "quality_checker": [quality_fingerprint()] * len(wnids),
        "label_verdict": kinds,
        "label_score": scores,
        "label_verifier": verifiers,
    }
    for name, column in values.items():
        field = RECORD_SCHEMA.field(name)
        records = records.set_column(
            records.schema.get_field_index(name), field, pa.array(column, field.type)
        )
    return records


def prepare_verdicts() -> None:
    """Load what :func:`with_verdicts` needs once per process (the label verifier's automaton, the
    language model): a second or two."""
    label_verdicts(["warm-up"], [imagenet21k_classes().wnids[0]])
    identify("warm-up")


def current_quality_verdicts(
    batch: pa.RecordBatch, reject_forced: bool = False
) -> list[tuple[str, str] | None]:
    """The quality verdict (reason, detail) of each record of ``batch``, None for a good one: as
    generation judged it where the current rules did (``quality_checker``), else judged now;
    ``reject_forced``: forced answers are rejected too (:func:`~generation.verdicts.quality.forced_verdict`)."""
    columns = batch.select(["forced_answer", "quality_reason", "quality_detail"]).to_pydict()
    current = pc.equal(batch["quality_checker"], quality_fingerprint())
    verdicts = [
        forced_verdict((reason, detail) if reason else None, forced, reject_forced)
        for reason, detail, forced in zip(
            columns["quality_reason"], columns["quality_detail"], columns["forced_answer"], strict=True
        )
    ]
    unjudged = np.flatnonzero(~current.to_numpy(zero_copy_only=False))
    if len(unjudged):
        judged_now = quality_verdicts(batch, reject_forced, rows=unjudged)
        for index, verdict in zip(unjudged, judged_now, strict=True):
            verdicts[index] = verdict
    return verdicts


class LabelVerdicts:
    """The label verdicts of the good records' answers against their image's class in the manifest
    (:mod:`generation.verdicts.labels`): as generation judged them when it committed their chunk where that
    verdict is the current verifier's (same fingerprint) against the same class; the others (records
    of older runs, a changed verifier, a manifest that relabelled the image) are judged here, once."""

    BATCH = 1000

    def __init__(self, records: StoredRecords, good: dict[tuple[str, str], int], labels: dict[str, str]):
        table = records.table
        self.kinds = np.full(table.num_rows, -1, dtype=np.int8)  # index in KINDS; -1: not a good record
        self.scores = np.zeros(table.num_rows, dtype=np.float32)
        label = {row: labels[image_id] for (image_id, _), row in good.items()}
        stored = np.zeros(table.num_rows, dtype=bool)
        stored[list(label)] = True
        stored &= pc.equal(table["label_verifier"], verifier_fingerprint()).to_numpy(zero_copy_only=False)
        record_wnids = table["wnid"].to_pylist()
        stored[[row for row, wnid in label.items() if record_wnids[row] != wnid]] = False
        kind_of = {kind: index for index, kind in enumerate(KINDS)}
        verdicts = table["label_verdict"].dictionary_encode().combine_chunks()
        codes = np.array([kind_of.get(kind, -1) for kind in verdicts.dictionary.to_pylist()], dtype=np.int8)
        stored_kinds = codes[verdicts.indices.to_numpy(zero_copy_only=False)] if len(codes) else self.kinds
        stored &= stored_kinds >= 0
        self.kinds[stored] = stored_kinds[stored]
        self.scores[stored] = table["label_score"].to_numpy()[stored]
        unjudged = [row for row in label if not stored[row]]
        if unjudged:
            logger.info(
                "judging %d answers against their labels (their runs hold no verdict of the current verifier)",
                len(unjudged),
            )
        for start in tqdm(range(0, len(unjudged), self.BATCH), desc="judging answers", disable=not unjudged):
            rows = unjudged[start : start + self.BATCH]
            answers = records.take(rows, ["answer"])["answer"].to_pylist()
            for row, verdict in zip(rows, label_verdicts(answers, [label[r] for r in rows]), strict=True):
                self.kinds[row], self.scores[row] = KINDS.index(verdict.kind), verdict.score

    def of(self, record_rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(kind indices, scores) of the good records at ``record_rows``."""
        return self.kinds[record_rows], self.scores[record_rows]
