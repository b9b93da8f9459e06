"""``imagenet-think eval score``: score a model's predictions against the release's two references.

Every image of the evaluated split counts: an image the model produced no record for
(a generation reject) is scored as an empty output, i.e. 0, and the coverage is
reported. Writes into ``--out``:

- ``per_example.parquet``: per image, every ``{segment}/{metric}/{s1,s2,avg,max}`` score
  and whether the model's and each reference's answer names the image's class;
- ``summary.json``: Avg of Avg and Avg of Max with bootstrap 95% intervals per segment
  and metric, the backbones used, label accuracy, coverage;
- the tables and charts of :mod:`eval.report`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from eval.aggregate import score_against_references, segments, summarize
from eval.label_accuracy import label_hits
from eval.metrics import PAPER_METRICS
from eval.predict import EVAL_FILE, load_references
from eval.report import write_report
from generation.records import RECORD_GLOB, iter_rows, shard_files

EXAMPLE = (
    "imagenet-think eval score --predictions predictions/openvlthinker --dataset imagenet_think "
    "--out reports/openvlthinker"
)


def reference_annotators(column_names) -> list[str]:
    """Annotators of a ``both`` table, from its ``<annotator>_think`` columns."""
    return [name.removesuffix("_think") for name in column_names if name.endswith("_think")]


def load_predictions(predictions: Path) -> tuple[dict[str, dict], dict]:
    """Records by image id, and the run's config."""
    run = json.loads((predictions / "records" / "run.json").read_text())
    records = {r["image_id"]: r for r in iter_rows(shard_files(predictions / "records", RECORD_GLOB))}
    return records, run["config"]


def score(
    predictions: str | Path,
    out: str | Path,
    dataset: str | None = None,
    split: str | None = None,
    metrics: tuple[str, ...] = PAPER_METRICS,
    full_length: bool = False,
    n_boot: int = 1000,
    model_name: str | None = None,
) -> dict:
    predictions, out = Path(predictions), Path(out)
    asked = json.loads((predictions / EVAL_FILE).read_text())
    dataset, split = dataset or asked["dataset"], split or asked["split"]
    records, config = load_predictions(predictions)
    references = load_references(dataset, split, asked.get("limit")).remove_columns("image")
    annotators = reference_annotators(references.column_names)
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
        references=annotators,
        coverage=sum(columns["has_prediction"]) / max(len(image_ids), 1),
        label_accuracy={
            "model": float(model_hits.mean()) if len(model_hits) else 0.0,
            "references": {a: float(h.mean()) if len(h) else 0.0 for a, h in reference_hits.items()},
        },
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_report([summary], out)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True, help="a folder written by `eval generate`")
    parser.add_argument("--out", required=True, help="the report folder")
    parser.add_argument("--dataset", help="the release (default: the one the predictions were made on)")
    parser.add_argument("--split", help="the split (default: the one the predictions were made on)")
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
    )
    print((Path(args.out) / "tables.md").read_text())
    print(f"{summary['n_examples']} examples, coverage {summary['coverage']:.1%}; report in {args.out}")
    return 0
