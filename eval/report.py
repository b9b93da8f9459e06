"""Tables in the layout of the paper's Tables 3–7 (Markdown, LaTeX, CSV) and bar charts (PNG).

``imagenet-think eval report REPORT [REPORT ...] --out DIR`` reads the ``summary.json`` of each
model that ``eval score`` wrote. Which metric goes in which table and chart is the metric
registry's (:mod:`eval.metrics`: :func:`~eval.metrics.paper_tables`,
:func:`~eval.metrics.family_charts`); what each table, row and column holds (the agreement
ceiling, label accuracy and verdicts, coverage and its dagger, how two summaries of one model are
named): docs/eval.md, "Tables and charts".
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from eval.charts import bar_charts
from eval.metrics import METRICS
from eval.tables import SEGMENT_NAMES, backbone_note, latex, markdown, table_rows, write_csv
from generation.verdicts.labels import KINDS
from imagenet_think_errors import InputError, MissingInputError, UsageError

EXAMPLE = "imagenet-think eval report reports/openvlthinker reports/internvl35 --out reports/all"
RULES = "rules (coverage marks and model labels): docs/eval.md"


def _fail(path: Path, problem: str) -> InputError:
    return InputError(
        f"{path} is not a summary written by `imagenet-think eval score`: {problem}; score the "
        "predictions again with `imagenet-think eval score --predictions PRED --out FOLDER`"
    )


def check_summary(summary, path: Path) -> dict:
    """``summary`` if it has what the tables and charts read, else an :class:`InputError` naming ``path``."""
    if not isinstance(summary, dict):
        raise _fail(path, f"it holds a JSON {type(summary).__name__}, not an object")
    missing = [k for k in ("model", "scores", "backbones", "label_accuracy", "coverage") if k not in summary]
    if missing:
        raise _fail(path, f"the key(s) {', '.join(missing)} are missing")
    if not isinstance(summary["model"], str) or not summary["model"]:
        raise _fail(path, f"model {summary['model']!r} is not a name")
    if not isinstance(summary["coverage"], int | float) or not 0 <= summary["coverage"] <= 1:
        raise _fail(path, f"coverage {summary['coverage']!r} is not a fraction")
    images = summary.get("images")
    if images is not None and (
        not isinstance(images, dict)
        or not all(
            isinstance(images.get(k), int) for k in ("expected", "predicted", "rejected", "not_generated")
        )
    ):
        raise _fail(path, "images lacks the counts expected, predicted, rejected, not_generated")
    _check_scores(summary["scores"], path, "scores")
    accuracy = summary["label_accuracy"]
    if not isinstance(accuracy, dict) or not {"model", "references"} <= set(accuracy):
        raise _fail(path, "label_accuracy lacks model or references")
    if not isinstance(summary["backbones"], dict):
        raise _fail(path, "backbones is not a mapping")
    verdicts = summary.get("label_verdicts")
    if verdicts is not None:
        entries = [verdicts.get("model"), *dict(verdicts.get("references") or {}).values()]
        if not isinstance(verdicts.get("references"), dict) or not all(map(_verdict_entry, entries)):
            raise _fail(
                path,
                "label_verdicts lacks model or references, each with verdicts (one per kind), correct and "
                "score as {mean, ci}",
            )
    agreement = summary.get("agreement")
    if agreement is not None:
        if not isinstance(agreement, dict):
            raise _fail(path, "agreement is not a mapping")
        missing = [k for k in ("scores", "pairs", "n_examples", "dataset", "split") if k not in agreement]
        if missing:
            raise _fail(path, f"agreement lacks {', '.join(missing)}")
        _check_scores(agreement["scores"], path, "agreement.scores")
    return summary


def _check_scores(scores, path: Path, where: str) -> None:
    if not isinstance(scores, dict) or not scores or not all(isinstance(s, dict) for s in scores.values()):
        raise _fail(path, f"{where} is not a mapping of segments to metrics")
    for segment, by_metric in scores.items():
        if segment not in SEGMENT_NAMES:
            raise _fail(path, f"{where}.{segment} is not one of the segments {', '.join(SEGMENT_NAMES)}")
        for metric, entry in by_metric.items():
            if metric not in METRICS:
                raise _fail(path, f"{where}.{segment}.{metric} is not a metric of eval.metrics")
            keys = ("avg_of_avg", "avg_of_max", "avg_of_avg_ci")
            if not isinstance(entry, dict) or any(k not in entry for k in keys):
                raise _fail(path, f"{where}.{segment}.{metric} lacks {', '.join(keys)}")


def _interval_entry(entry) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("mean"), int | float)
        and len(entry.get("ci", ())) == 2
    )


def _verdict_entry(entry) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("verdicts"), dict)
        and all(_interval_entry(entry["verdicts"].get(kind)) for kind in KINDS)
        and _interval_entry(entry.get("correct"))
        and _interval_entry(entry.get("score"))
    )


def summary_path(report: str | Path) -> Path:
    path = Path(report)
    return path / "summary.json" if path.is_dir() else path


def load_summary(report: str | Path) -> dict:
    """A ``summary.json`` (or the ``eval score`` folder holding one), checked."""
    path = summary_path(report)
    if not path.is_file():
        raise MissingInputError(f"{path} not found: write it with `imagenet-think eval score`")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _fail(path, f"it is not valid JSON ({error})") from None
    return check_summary(summary, path)


def load_summaries(reports: list[str | Path]) -> list[dict]:
    """The summaries, each with a ``label`` distinct from the others'.

    A label is the model's name; summaries sharing a name are labelled ``model (folder)``,
    with as many of the folders holding each summary.json as tell them apart (a summary file
    named otherwise stands for itself: ``model (reports/a.json)``).
    """
    paths = [summary_path(r) for r in reports]
    seen: dict[Path, str | Path] = {}
    for report, path in zip(reports, paths, strict=True):
        resolved = path.resolve()
        if resolved in seen:
            raise UsageError(f"{seen[resolved]} and {report} are the same summary ({path}); give it once")
        seen[resolved] = report
    summaries = [dict(load_summary(path)) for path in paths]
    by_model = defaultdict(list)
    for summary, path in zip(summaries, paths, strict=True):
        summary["label"] = summary["model"]
        where = path.resolve()
        by_model[summary["model"]].append((summary, where.parent if where.name == "summary.json" else where))
    for model, group in by_model.items():
        if len(group) < 2:
            continue
        for depth in range(1, max(len(folder.parts) for _, folder in group) + 1):
            labels = ["/".join(folder.parts[-depth:]) for _, folder in group]
            if len(set(labels)) == len(labels):
                break
        for (summary, _), folder_label in zip(group, labels, strict=True):
            summary["label"] = f"{model} ({folder_label})"
    return summaries


def write_report(summaries: list[dict], out: str | Path) -> list[Path]:
    """tables.md, tables.tex, tables.csv and the charts into ``out``.

    Rows are labelled by each summary's ``label`` (set by :func:`load_summaries`), else its model.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = table_rows(summaries)
    note = backbone_note(summaries)
    (out / "tables.md").write_text(note + markdown(tables), encoding="utf-8")
    (out / "tables.tex").write_text(latex(tables), encoding="utf-8")
    write_csv(tables, out / "tables.csv")
    charts = bar_charts(summaries, out)
    return [out / "tables.md", out / "tables.tex", out / "tables.csv", *charts]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "reports",
        nargs="+",
        help="folders written by `eval score` (or their summary.json); same model names get folder labels",
    )
    parser.add_argument("--out", required=True, help="folder for the combined tables and charts")


def run(args: argparse.Namespace) -> int:
    written = write_report(load_summaries(args.reports), args.out)
    print(Path(written[0]).read_text())
    print("written: " + ", ".join(str(p) for p in written))
    return 0
