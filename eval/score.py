"""``imagenet-think eval score``: score a model's predictions against the release's two references.

Refuses predictions made on another release split than the one scored against (the fingerprint
``eval generate`` recorded, :func:`eval.predict.split_fingerprint`), unless ``allow_other_release``.
Reads only committed chunks (:func:`generation.run_check.check_run`) and streams: the references from
the release's Arrow table and the predictions from their record files ``--batch-size`` images at a
time, each batch scored and appended to ``per_example.parquet``; the summary is computed from the
per-example scores (``tfidf_cosine_corpus`` takes a first pass for its IDF). The agreement ceiling
is cached per release split and settings (:mod:`eval.agreement`). What is scored and how, and every
file written (``per_example.parquet``, ``summary.json``, tables and charts): docs/eval.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from common.options import add_options, option, parse_options
from eval.aggregate import (
    ReferenceScores,
    batched_rows,
    corpus_frequencies,
    reference_segments,
    score_against_references,
    segments,
    summarize,
    summarize_columns,
)
from eval.agreement import AGREEMENT_FOLDER, annotator_agreement
from eval.harness.files import is_harness_file, read_harness_file
from eval.harness.outputs import HarnessPredictions
from eval.metrics import METRICS, PAPER_METRICS
from eval.predict import EVAL_FILE, load_references, read_eval_file, split_fingerprint
from eval.report import write_report
from generation.run_check import check_run
from generation.runs import RUN_FILE
from generation.verdicts.labels import CORRECT_KINDS, KINDS, label_verdicts
from imagenet_think_errors import InputError, MissingInputError, RefusedError, UsageError
from release.schema import joint_annotators, joint_column

EXAMPLE = (
    "imagenet-think eval score --predictions predictions/openvlthinker --dataset imagenet_think "
    "--out reports/openvlthinker"
)
RULES = "rules (which split predictions are scored against, coverage, label verdicts, the agreement cache): docs/eval.md"
log = logging.getLogger(__name__)
BATCH_EXAMPLES = 512  # images read and scored at a time (--batch-size)


class PredictionRecords:
    """The records of a predictions folder's committed chunks, read a file at a time.

    Holds an index (image id -> file and row, from the ``image_id`` column alone) and the ids of
    the rejected images; a record's think and answer are read when asked for, from at most
    ``OPEN_FILES`` files held at once. A run writes its chunks in the split's order, so that
    reading the split in order reads each file once.
    """

    OPEN_FILES = 4
    COLUMNS = ("think", "answer", "think_closed")

    def __init__(self, record_files: list[Path], reject_files: list[Path]) -> None:
        self.files = list(record_files)
        self.where: dict[str, tuple[int, int]] = {}
        for number, path in enumerate(self.files):  # a later file's record of an image wins
            for row, image_id in enumerate(_image_ids(path)):
                self.where[image_id] = (number, row)
        self.rejected = {i for path in reject_files for i in _image_ids(path)} - self.where.keys()
        self._open: OrderedDict[int, pa.Table] = OrderedDict()

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.where or image_id in self.rejected

    def predicted(self, image_id: str) -> bool:
        return image_id in self.where

    def thinks_and_answers(self, image_ids: list[str]) -> tuple[list, list, list]:
        """The think and answer of each image's record, and whether its think is closed (as
        ``generation.reasoning.parse_reasoning`` found when the record was made); "", "" and False
        for an image without one (rejected)."""
        thinks, answers, closed = [""] * len(image_ids), [""] * len(image_ids), [False] * len(image_ids)
        by_file: dict[int, list[tuple[int, int]]] = {}
        for k, image_id in enumerate(image_ids):
            if (place := self.where.get(image_id)) is not None:
                by_file.setdefault(place[0], []).append((k, place[1]))
        for number, wanted in by_file.items():
            rows = self._table(number).take([row for _, row in wanted])
            columns = (rows[name].to_pylist() for name in self.COLUMNS)
            for (k, _), think, answer, is_closed in zip(wanted, *columns, strict=True):
                thinks[k], answers[k], closed[k] = think, answer, is_closed
        return thinks, answers, closed

    def _table(self, number: int) -> pa.Table:
        if number in self._open:
            self._open.move_to_end(number)
        else:
            self._open[number] = pq.read_table(self.files[number], columns=list(self.COLUMNS))
            if len(self._open) > self.OPEN_FILES:
                self._open.popitem(last=False)
        return self._open[number]


def _image_ids(path: Path) -> list[str]:
    return pq.read_table(path, columns=["image_id"]).column("image_id").to_pylist()


def load_predictions(predictions: Path) -> tuple[PredictionRecords, dict]:
    """The records of the chunks the run committed (:func:`generation.run_check.check_run`: files that
    fail their commit are left out) and the run's config."""
    records_dir = predictions / "records"
    if not (records_dir / RUN_FILE).is_file():
        raise MissingInputError(
            f"{predictions} holds no predictions yet (no records/{RUN_FILE}): rerun the "
            f"`imagenet-think eval generate ... --out {predictions}` that made its {EVAL_FILE}"
        )
    state = check_run(records_dir)
    config = state.run.get("config")
    if not isinstance(config, dict) or not {"annotator", "model"} <= set(config):
        raise InputError(
            f"{records_dir / RUN_FILE} does not name the model (config.annotator and config.model); redo "
            "the predictions with `imagenet-think eval generate` into a new --out folder"
        )
    for path, problem in state.not_counted.items():
        log.warning("%s is left out (its images count as not generated): %s", path, problem)
    return PredictionRecords(state.record_files, state.reject_files), config


def open_predictions(
    predictions, dataset: str | None, split: str | None, allow_other_release: bool = False
) -> tuple[dict, PredictionRecords | HarnessPredictions, dict, str]:
    """What ``predictions`` were made on, their records, their config and their name: an ``eval
    generate`` folder, a harness's prediction file (:mod:`eval.harness.files`) or
    :class:`~eval.harness.outputs.HarnessPredictions` already read."""
    if isinstance(predictions, HarnessPredictions):
        harness = predictions
    elif is_harness_file(predictions):
        harness = read_harness_file(predictions, dataset, split, allow_other_release)
    else:
        made_on = read_eval_file(predictions)
        records, config = load_predictions(Path(predictions))
        return made_on, records, config, str(predictions)
    return harness.made_on, harness, harness.config, harness.source


@dataclass
class _Batch:
    """A batch of scored images: ids, labels, and the segments of the model and of each reference."""

    image_ids: list[str]
    wnids: list[str]
    has_prediction: list[bool]
    think_closed: list[bool]
    candidate: dict[str, list[str]]
    references: list[dict[str, list[str]]]


def _batches(references, records: PredictionRecords, annotators: list[str], size: int) -> Iterator[_Batch]:
    """The scored images in the split's order, ``size`` at a time."""
    for rows in batched_rows(references, size):
        image_ids = rows["image_id"]
        thinks, answers, closed = records.thinks_and_answers(image_ids)
        yield _Batch(
            image_ids,
            rows["wnid"],
            [records.predicted(i) for i in image_ids],
            closed,
            segments(thinks, answers),
            [reference_segments(rows, a) for a in annotators],
        )


@dataclass
class ScoreOptions:
    """The options of ``imagenet-think eval score`` (and of :func:`score`), each declared once."""

    predictions: str | Path | HarnessPredictions = option(
        help="a folder written by `eval generate` (it may be unfinished), lmms-eval's --log_samples file "
        "of the imagenet_think task or a VLMEvalKit prediction file (docs/eval.md)",
    )
    out: str | Path = option(help="the report folder")
    dataset: str | None = option(
        None,
        help="the release, a folder or Hub id (default: the one the predictions were made on); "
        "its split must have the fingerprint recorded in PRED/eval.json",
    )
    split: str | None = option(None, help="the split (default: the one the predictions were made on)")
    allow_other_release: bool = option(
        False,
        help="score predictions made on another release or split anyway, over the images both "
        "share (recorded in summary.json)",
    )
    metrics: tuple[str, ...] = option(PAPER_METRICS, nargs="+", help="metric names (eval.metrics.METRICS)")
    full_length: bool = option(False, help="semantic metrics over whole texts, in windows")
    n_boot: int = option(1000, flag="--bootstrap", metavar="N", help="bootstrap resamples for the intervals")
    model_name: str | None = option(
        None,
        flag="--name",
        metavar="NAME",
        help="the model's name in tables (default: the config's annotator name)",
    )
    agreement_cache: str | Path | None = option(
        None,
        metavar="DIR",
        help=f"where the annotator agreement of the release split is kept (default: {AGREEMENT_FOLDER} "
        "beside --out, shared by the reports of one folder)",
    )
    agreement: bool = option(
        True, flag="--no-agreement", help="leave out the annotator agreement (ceiling) row"
    )
    batch_size: int = option(
        BATCH_EXAMPLES,
        help=f"images read and scored at a time; bounds memory, not the scores (default {BATCH_EXAMPLES})",
    )

    def __post_init__(self) -> None:
        self.metrics = tuple(self.metrics)


def score(options: ScoreOptions, references=None) -> dict:
    """Score ``predictions`` (an ``eval generate`` folder, a harness's prediction file or its
    :class:`~eval.harness.outputs.HarnessPredictions`) into ``out``; returns the summary.

    The split is read and scored ``batch_size`` images at a time and ``per_example.parquet`` is
    written as it goes: memory does not grow with the split beyond the per-example scores and
    the image ids. With ``agreement``, the annotator agreement of the release split (the
    references scored against each other, :func:`eval.agreement.annotator_agreement`) is read from
    ``agreement_cache`` (default: ``.annotator_agreement`` beside ``out``) or computed there once.
    Raises :class:`RefusedError` if the predictions were made on another release or split than
    ``dataset``/``split`` (default: the ones they were made on), unless ``allow_other_release``.
    ``references``: the ``both`` split already loaded (as lmms-eval's task has it), instead of
    loading ``dataset``/``split``, which then only name it.
    """
    _check_options(options.metrics, options.batch_size)
    out = Path(options.out)
    made_on, records, config, predictions = open_predictions(
        options.predictions, options.dataset, options.split, options.allow_other_release
    )
    dataset, split = options.dataset or made_on["dataset"], options.split or made_on["split"]
    if references is None:
        references = load_references(dataset, split, made_on.get("limit"))
    references = references.remove_columns([name for name in ("image",) if name in references.column_names])
    annotators = joint_annotators(references.column_names)
    all_ids = references["image_id"]
    fingerprint = split_fingerprint(all_ids, references["wnid"])
    _check_made_on(predictions, made_on, dataset, split, fingerprint, options.allow_other_release)
    keep, counts = _coverage(predictions, records, all_ids, dataset, split)
    del all_ids
    columns = ["image_id", "wnid"] + [
        joint_column(a, part) for a in annotators for part in ("think", "answer")
    ]
    split_rows = references.select_columns(columns)
    scored = _score_split(
        split_rows.select(keep),
        records,
        annotators,
        options.metrics,
        options.full_length,
        options.batch_size,
        out / "per_example.parquet",
    )
    summary = summarize(ReferenceScores.concatenate(scored.parts), n_boot=options.n_boot)
    summary.update(
        **_provenance(options, config, predictions, made_on, dataset, split, fingerprint),
        references=annotators,
        coverage=counts["predicted"] / counts["expected"],
        images=counts,
        think_closed=scored.closed_thinks / counts["predicted"] if counts["predicted"] else 0.0,
        **_label_summaries(scored, annotators, options.n_boot),
    )
    if isinstance(records, HarnessPredictions):
        summary["outputs"] = records.think_shares(split_rows.select(keep)["image_id"])
    if options.agreement and len(annotators) >= 2:
        summary["agreement"] = _agreement(options, split_rows, annotators, dataset, split, fingerprint)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_report([summary], out)
    return summary


def _provenance(
    options: ScoreOptions,
    config: dict,
    predictions: str,
    made_on: dict,
    dataset: str,
    split: str,
    fingerprint: str,
) -> dict:
    """The summary's account of what was scored: the model, its predictions, the split scored against
    and the one they were made on."""
    return {
        "model": options.model_name or config["annotator"],
        "model_id": config["model"],
        "dataset": dataset,
        "split": split,
        "split_sha256": fingerprint,
        "predictions": predictions,
        "made_on": {key: made_on.get(key) for key in ("dataset", "split", "limit", "split_sha256")},
        "allow_other_release": options.allow_other_release,
    }


def _agreement(
    options: ScoreOptions, split_rows, annotators: list[str], dataset: str, split: str, fingerprint: str
) -> dict:
    """The annotator agreement (ceiling) row of the split, from ``agreement_cache`` (default: beside
    ``out``) or computed there once."""
    cache = (
        Path(options.agreement_cache)
        if options.agreement_cache
        else Path(options.out).resolve().parent / AGREEMENT_FOLDER
    )
    return annotator_agreement(
        split_rows,
        annotators,
        dataset=dataset,
        split=split,
        fingerprint=fingerprint,
        metrics=options.metrics,
        full_length=options.full_length,
        n_boot=options.n_boot,
        batch_size=options.batch_size,
        cache=cache,
    )


def _check_options(metrics: tuple[str, ...], batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"--batch-size must be a whole number of images >= 1, not {batch_size!r}")
    unknown = [name for name in metrics if name not in METRICS]
    if unknown or not metrics:
        raise UsageError(
            f"--metrics {' '.join(unknown) if unknown else '(none)'}: not metrics of eval.metrics; "
            f"pass some of {', '.join(METRICS)}"
        )


def _check_made_on(
    predictions: Path, made_on: dict, dataset: str, split: str, fingerprint: str, allow_other_release: bool
) -> None:
    """Refuse predictions made on another release split than the one scored against (unless
    ``allow_other_release``, logged)."""
    recorded = made_on.get("split_sha256")
    if fingerprint == recorded:
        return
    where = f"{dataset} split {split!r}" + (f" (first {made_on['limit']})" if made_on.get("limit") else "")
    made = f"{made_on['dataset']} split {made_on['split']!r}"
    if not allow_other_release:
        raise RefusedError(
            f"the predictions in {predictions} were made on {made}"
            + (
                f", not on {where} (split fingerprints {str(recorded)[:12]}… and {fingerprint[:12]}…)"
                if recorded
                else f", and its {EVAL_FILE} has no split fingerprint to check {where} against"
            )
            + ": score them against the release and split they were made on, redo them with "
            "`imagenet-think eval generate` on this one"
            + ("" if recorded else " (a rerun with the same arguments adds the fingerprint)")
            + ", or pass --allow-other-release to score the images both share"
        )
    log.warning("scoring predictions made on %s against %s (--allow-other-release)", made, where)


def _coverage(
    predictions: Path, records: PredictionRecords, all_ids: list[str], dataset: str, split: str
) -> tuple[list[int], dict[str, int]]:
    """The positions of the split's images that are scored, and the image counts: each expected
    image is predicted, rejected (scored as an empty output) or not generated yet (left out)."""
    keep = [k for k, i in enumerate(all_ids) if i in records]
    if not keep:
        raise MissingInputError(
            f"{predictions} has no prediction for any of the {len(all_ids)} images of {dataset} split "
            f"{split!r}; run `imagenet-think eval generate ... --out {predictions}` to make them"
        )
    counts = {
        "expected": len(all_ids),
        "predicted": sum(records.predicted(i) for i in all_ids),
        "rejected": sum(i in records.rejected for i in all_ids),
    }
    counts["not_generated"] = counts["expected"] - len(keep)
    if counts["not_generated"]:
        log.warning(
            "%s is unfinished: %d of %d images not generated yet are left out of the scores",
            predictions,
            counts["not_generated"],
            counts["expected"],
        )
    return keep, counts


@dataclass
class _Scored:
    """What scoring a split gives: the metric scores by batch, per answerer (the model, each
    reference) the label verdicts' kind indices and scores by batch, and how many of the model's
    predictions have a closed think."""

    parts: list[ReferenceScores]
    kinds: dict[str, list[np.ndarray]]
    label_scores: dict[str, list[np.ndarray]]
    closed_thinks: int = 0


def _score_split(
    references,
    records: PredictionRecords,
    annotators: list[str],
    metrics: tuple[str, ...],
    full_length: bool,
    batch_size: int,
    per_example: Path,
) -> _Scored:
    """Score the kept rows ``batch_size`` at a time, writing ``per_example`` as it goes."""
    idf_corpora = None
    if "tfidf_cosine_corpus" in metrics:  # its IDF needs every text of the split: a first pass
        idf_corpora = corpus_frequencies(
            [b.candidate, *b.references] for b in _batches(references, records, annotators, batch_size)
        )
    per_example.parent.mkdir(parents=True, exist_ok=True)
    partial = per_example.with_name(per_example.name + ".partial")
    answerers = ["model", *annotators]
    scored = _Scored([], {who: [] for who in answerers}, {who: [] for who in answerers})
    writer = None
    progress = tqdm(
        total=len(references), desc="scoring", unit="image", disable=len(references) <= batch_size
    )
    try:
        for batch in _batches(references, records, annotators, batch_size):
            metric_scores = score_against_references(
                batch.candidate, batch.references, metrics, full_length=full_length, idf_corpora=idf_corpora
            )
            scored.parts.append(metric_scores)
            scored.closed_thinks += sum(batch.think_closed)
            answers = [batch.candidate["answer"], *(reference["answer"] for reference in batch.references)]
            verdicts = {
                who: label_verdicts(a, batch.wnids) for who, a in zip(answerers, answers, strict=True)
            }
            for who, found in verdicts.items():
                scored.kinds[who].append(np.array([KINDS.index(v.kind) for v in found], dtype=np.int8))
                scored.label_scores[who].append(np.array([v.score for v in found], dtype=np.float64))
            table = pa.table(
                {
                    "image_id": batch.image_ids,
                    "wnid": batch.wnids,
                    "has_prediction": batch.has_prediction,
                    "think_closed": batch.think_closed,
                    **metric_scores.columns(),
                    **_label_columns(verdicts),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(partial, table.schema)
            writer.write_table(table)
            progress.update(len(batch.image_ids))
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    partial.replace(per_example)
    return scored


def _label_summaries(scored: _Scored, annotators: list[str], n_boot: int) -> dict:
    """The summary's ``label_accuracy`` (the share correct per answerer) and ``label_verdicts``."""
    kinds_of = {who: np.concatenate(found) for who, found in scored.kinds.items()}
    scores_of = {who: np.concatenate(found) for who, found in scored.label_scores.items()}
    correct = {who: np.isin(k, CORRECT_CODES) for who, k in kinds_of.items()}
    return {
        "label_accuracy": {
            "model": float(correct["model"].mean()),
            "references": {a: float(correct[a].mean()) for a in annotators},
        },
        "label_verdicts": _label_summary(kinds_of, scores_of, n_boot),
    }


CORRECT_CODES = [KINDS.index(kind) for kind in KINDS if kind in CORRECT_KINDS]


def _label_columns(verdicts: dict[str, list]) -> dict[str, pa.Array]:
    """Per answerer (model, each reference): whether the answer is correct (``exact`` or ``hyponym``),
    its verdict, label score and the synset that decided it."""
    fields = {
        "hit": (pa.bool_(), lambda v: v.kind in CORRECT_KINDS),
        "verdict": (pa.string(), lambda v: v.kind),
        "score": (pa.float64(), lambda v: v.score),
        "named": (pa.string(), lambda v: v.named),
    }
    return {
        f"label_{field}/{who}": pa.array([value(v) for v in found], type=kind)
        for field, (kind, value) in fields.items()
        for who, found in verdicts.items()
    }


def _label_summary(kinds: dict[str, np.ndarray], scores: dict[str, np.ndarray], n_boot: int) -> dict:
    """Per answerer: the share of each verdict kind, the share correct and the mean label score,
    each with its bootstrap interval (the examples resampled as for the metrics)."""
    columns: dict[tuple[str, str], np.ndarray] = {}
    for who, codes in kinds.items():
        for code, kind in enumerate(KINDS):
            columns[(who, kind)] = codes == code
        columns[(who, "correct")] = np.isin(codes, CORRECT_CODES)
        columns[(who, "score")] = scores[who]
    stats = summarize_columns(columns, n_boot)
    described = {
        who: {
            "verdicts": {kind: stats[(who, kind)] for kind in KINDS},
            "correct": stats[(who, "correct")],
            "score": stats[(who, "score")],
        }
        for who in kinds
    }
    return {
        "model": described["model"],
        "references": {who: entry for who, entry in described.items() if who != "model"},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, ScoreOptions)


def run(args: argparse.Namespace) -> int:
    summary = score(parse_options(args, ScoreOptions))
    print((Path(args.out) / "tables.md").read_text())
    images = summary["images"]
    print(
        f"{summary['n_examples']} examples scored: {images['predicted']} predicted, {images['rejected']} "
        f"rejected (scored 0) of {images['expected']}; coverage {summary['coverage']:.1%}; report in {args.out}"
    )
    if images["not_generated"] and not is_harness_file(args.predictions):
        print(
            f"unfinished: {images['not_generated']} images not generated yet are left out; finish them with "
            f"the same `imagenet-think eval generate ... --out {args.predictions}` and score again"
        )
    if summary["allow_other_release"] and summary["split_sha256"] != summary["made_on"]["split_sha256"]:
        print(
            f"scored against {summary['dataset']}/{summary['split']}, not the release split the predictions "
            f"were made on ({summary['made_on']['dataset']}/{summary['made_on']['split']})"
        )
    return 0
