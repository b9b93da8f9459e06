"""``imagenet-think eval score``: score a model's predictions against the release's two references.

The predictions must have been made on the release split they are scored against: the
fingerprint ``eval generate`` recorded in ``eval.json`` (:func:`eval.predict.split_fingerprint`)
must equal the one of the rows scored against, computed the same way, else scoring is
refused unless ``allow_other_release`` (recorded in the summary).

Each image of the split is predicted (a record), rejected (a generation reject, scored as
an empty output, i.e. 0) or not generated yet (an unfinished run, or a chunk whose files fail
their commit: left out of the scores). Only committed chunks are read
(:func:`generation.runs.check_run`).
Coverage is predicted / expected images; it is in the summary, the tables and the charts.
Writes into ``--out``:

- ``per_example.parquet``: per scored image, every ``{segment}/{metric}/{s1,s2,avg,max}``
  score and whether the model's and each reference's answer names the image's class;
- ``summary.json``: Avg of Avg and Avg of Max with bootstrap 95% intervals per segment
  and metric, the backbones used, label accuracy, coverage and the image counts, what the
  predictions were made on and the fingerprint of what they were scored against;
- the tables and charts of :mod:`eval.report`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from eval.aggregate import score_against_references, segments, summarize
from eval.label_accuracy import label_accuracy, label_hits
from eval.metrics import PAPER_METRICS
from eval.predict import EVAL_FILE, load_references, read_eval_file, split_fingerprint
from eval.report import write_report
from generation.records import iter_rows
from generation.runs import RUN_FILE, check_run
from imagenet_think_errors import InputError, MissingInputError, RefusedError

EXAMPLE = (
    "imagenet-think eval score --predictions predictions/openvlthinker --dataset imagenet_think "
    "--out reports/openvlthinker"
)
RULES = """\
rules:
  The predictions are scored only against the release split they were made on: the
  fingerprint of the split's (image_id, wnid) rows recorded in PRED/eval.json must equal
  the one of --dataset/--split; otherwise scoring is refused unless --allow-other-release
  (then only the images both share are scored, and the summary records it).
  Rejected images score 0; images not generated yet (an unfinished run) are left out.
  Coverage = predicted / expected images is in summary.json and every table and chart;
  models below 100% are marked with a dagger."""
log = logging.getLogger(__name__)


def reference_annotators(column_names) -> list[str]:
    """Annotators of a ``both`` table, from its ``<annotator>_think`` columns."""
    return [name.removesuffix("_think") for name in column_names if name.endswith("_think")]


def load_predictions(predictions: Path) -> tuple[dict[str, dict], set[str], dict]:
    """Records by image id, the rejected image ids, and the run's config, of the chunks the run
    committed (:func:`generation.runs.check_run`: files that fail their commit are left out)."""
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
    for path, problem in state.bad.items():
        log.warning("%s is left out (its images count as not generated): %s", path, problem)
    records = {r["image_id"]: r for r in iter_rows(state.record_files)}
    rejected = {r["image_id"] for r in iter_rows(state.reject_files, columns=["image_id"])} - set(records)
    return records, rejected, config


def score(
    predictions: str | Path,
    out: str | Path,
    dataset: str | None = None,
    split: str | None = None,
    metrics: tuple[str, ...] = PAPER_METRICS,
    full_length: bool = False,
    n_boot: int = 1000,
    model_name: str | None = None,
    allow_other_release: bool = False,
) -> dict:
    """Score ``predictions`` (an ``eval generate`` folder) into ``out``; returns the summary.

    Raises :class:`RefusedError` if the predictions were made on another release or split
    than ``dataset``/``split`` (default: the ones they were made on), unless
    ``allow_other_release``.
    """
    predictions, out = Path(predictions), Path(out)
    made_on = read_eval_file(predictions)
    dataset, split = dataset or made_on["dataset"], split or made_on["split"]
    records, rejected, config = load_predictions(predictions)
    references = load_references(dataset, split, made_on.get("limit")).remove_columns("image")
    annotators = reference_annotators(references.column_names)
    all_ids, all_wnids = references["image_id"], references["wnid"]
    fingerprint = split_fingerprint(all_ids, all_wnids)
    recorded = made_on.get("split_sha256")
    if fingerprint != recorded:
        where = f"{dataset} split {split!r}" + (
            f" (first {made_on['limit']})" if made_on.get("limit") else ""
        )
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

    # Each expected image is predicted, rejected (scored as an empty output) or not generated yet.
    keep = [k for k, i in enumerate(all_ids) if i in records or i in rejected]
    if not keep:
        raise MissingInputError(
            f"{predictions} has no prediction for any of the {len(all_ids)} images of {dataset} split "
            f"{split!r}; run `imagenet-think eval generate ... --out {predictions}` to make them"
        )
    counts = {
        "expected": len(all_ids),
        "predicted": sum(i in records for i in all_ids),
        "rejected": sum(i in rejected for i in all_ids),
    }
    counts["not_generated"] = counts["expected"] - len(keep)
    if counts["not_generated"]:
        log.warning(
            "%s is unfinished: %d of %d images not generated yet are left out of the scores",
            predictions,
            counts["not_generated"],
            counts["expected"],
        )
    references = references.select(keep)
    image_ids, wnids = references["image_id"], references["wnid"]
    missing = {"think": "", "answer": ""}
    chosen = [records.get(i, missing) for i in image_ids]
    candidate = segments([r["think"] for r in chosen], [r["answer"] for r in chosen])
    refs = [segments(references[f"{a}_think"], references[f"{a}_answer"]) for a in annotators]
    scored = score_against_references(candidate, refs, metrics, full_length=full_length)
    model_hits = label_hits(candidate["answer"], wnids)
    reference_hits = {a: label_hits(ref["answer"], wnids) for a, ref in zip(annotators, refs, strict=True)}

    out.mkdir(parents=True, exist_ok=True)
    columns = {"image_id": image_ids, "wnid": wnids, "has_prediction": [i in records for i in image_ids]}
    columns.update(scored.columns())
    columns["label_hit/model"] = model_hits
    columns.update({f"label_hit/{a}": hits for a, hits in reference_hits.items()})
    pq.write_table(pa.table(columns), out / "per_example.parquet")
    summary = summarize(scored, n_boot=n_boot)
    summary.update(
        model=model_name or config["annotator"],
        model_id=config["model"],
        dataset=dataset,
        split=split,
        split_sha256=fingerprint,
        predictions=str(predictions),
        made_on={key: made_on.get(key) for key in ("dataset", "split", "limit", "split_sha256")},
        allow_other_release=allow_other_release,
        references=annotators,
        coverage=counts["predicted"] / counts["expected"],
        images=counts,
        label_accuracy={
            "model": label_accuracy(candidate["answer"], wnids),
            "references": {
                a: label_accuracy(ref["answer"], wnids) for a, ref in zip(annotators, refs, strict=True)
            },
        },
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_report([summary], out)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--predictions", required=True, help="a folder written by `eval generate` (it may be unfinished)"
    )
    parser.add_argument("--out", required=True, help="the report folder")
    parser.add_argument(
        "--dataset",
        help="the release, a folder or Hub id (default: the one the predictions were made on); "
        "its split must have the fingerprint recorded in PRED/eval.json",
    )
    parser.add_argument("--split", help="the split (default: the one the predictions were made on)")
    parser.add_argument(
        "--allow-other-release",
        action="store_true",
        help="score predictions made on another release or split anyway, over the images both "
        "share (recorded in summary.json)",
    )
    parser.add_argument(
        "--metrics", nargs="+", default=list(PAPER_METRICS), help="metric names (eval.metrics.METRICS)"
    )
    parser.add_argument(
        "--full-length", action="store_true", help="semantic metrics over whole texts, in windows"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    parser.add_argument("--name", help="the model's name in tables (default: the config's annotator name)")


def run(args: argparse.Namespace) -> int:
    summary = score(
        args.predictions,
        args.out,
        dataset=args.dataset,
        split=args.split,
        metrics=tuple(args.metrics),
        full_length=args.full_length,
        n_boot=args.bootstrap,
        model_name=args.name,
        allow_other_release=args.allow_other_release,
    )
    print((Path(args.out) / "tables.md").read_text())
    images = summary["images"]
    print(
        f"{summary['n_examples']} examples scored: {images['predicted']} predicted, {images['rejected']} "
        f"rejected (scored 0) of {images['expected']}; coverage {summary['coverage']:.1%}; report in {args.out}"
    )
    if images["not_generated"]:
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
