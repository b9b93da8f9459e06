"""Tables in the layout of the paper's Tables 3–7 (Markdown, LaTeX, CSV) and bar charts (PNG).

Input: one or more ``summary.json`` written by ``eval score`` (one per model). Which metric
goes in which table and chart is the metric registry's (:mod:`eval.metrics`: ``FAMILIES``,
``METRICS``, :func:`~eval.metrics.paper_tables`, :func:`~eval.metrics.family_charts`). Tables 3–6
put the models in rows and, per metric, Avg of Avg / Avg of Max on the full output;
Table 7 puts segments (full output, thinking tokens, answer tokens) in columns for each
model, with its two vector-space rows labelled as Table 6 labels them ("TF-IDF Cosine
Similarity" for TF-IDF, "Cosine Similarity" for raw term frequencies; the paper's Table 7
swaps them). What the paper does not measure comes after: label-grounded accuracy (the answer
names the image's class or a more specific one: verdict ``exact`` or ``hyponym`` of
:mod:`generation.verdicts.labels`) and the label verdicts (the share of each kind and the mean label
score with bootstrap intervals, for each model and each reference annotator; ``chart_labels.png``).

The annotator agreement (``summary["agreement"]``, :func:`eval.agreement.annotator_agreement`: the
two references scored against each other over the split) is an extra row "annotator agreement"
in Tables 3–6, a Table 7 of its own (Table 7 has one table per model) and a hatched bar in the
charts: the ceiling a model can reach against two different annotators. Summaries of several
release splits give one such row each, named by the release and split.

Coverage (predicted / expected images) is a column of every table with a row per model,
in Table 7's title and in the charts' legends; a model below full coverage is marked
with a dagger (†) and a footnote saying how many images it was scored on.

``imagenet-think eval report REPORT [REPORT ...] --out DIR`` combines several models. Two
summaries of the same model name are labelled ``model (folder)`` by the folder that holds
each summary.json, so that their rows can be told apart; the same file given twice is an error.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

from eval.metrics import METRICS, SEGMENT_TABLE, family_charts, paper_tables
from generation.verdicts.labels import KINDS
from imagenet_think_errors import InputError, MissingInputError, UsageError

EXAMPLE = "imagenet-think eval report reports/openvlthinker reports/internvl35 --out reports/all"
RULES = """\
rules:
  Each REPORT is a folder written by `eval score` or its summary.json. Every table and
  chart gives each model's coverage (predicted / expected images); a model below 100% is
  marked with a dagger and a footnote. Two summaries with the same model name are told
  apart by their folders: `model (folder)`. The same summary given twice is an error."""
DAGGER = "†"
SEGMENT_NAMES = {"full": "Full Output", "think": "Thinking Tokens", "answer": "Answer Tokens"}
AGREEMENT_ROW = "annotator agreement"
AGREEMENT_NOTE = (
    "Annotator agreement: the two references scored against each other over every image of the "
    "split (each as the candidate against the other; Avg = mean of both directions, Max = the larger): "
    "how high a model can score against two different annotators."
)
ACCURACY_TITLE = (
    "Label-grounded answer accuracy (the answer names the image's class or a more specific one: "
    "verdict exact or hyponym)"
)
VERDICT_TITLE = (
    "Label verdicts: each answer against the image's ImageNet-21K-P class in WordNet 3.0 "
    "(correct = exact or hyponym; label score 1 for those, by depth for a hypernym, 0 otherwise)"
)
KIND_NAMES = {kind: kind.replace("_", " ").capitalize() for kind in KINDS}  # "Other class"


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


def _label(summary: dict) -> str:
    return summary.get("label") or summary["model"]


def _below_full(summary: dict) -> bool:
    return summary["coverage"] < 1


def _name(summary: dict) -> str:
    """The model's label, with a dagger if it is below full coverage."""
    return _label(summary) + (DAGGER if _below_full(summary) else "")


def _coverage(summary: dict) -> str:
    images = summary.get("images")
    counts = f" ({images['predicted']}/{images['expected']})" if isinstance(images, dict) else ""
    return f"{summary['coverage']:.1%}{counts}"


def coverage_note(summaries: list[dict]) -> str:
    """The footnote for the models below full coverage ("" if none is)."""
    below = []
    for summary in summaries:
        if not _below_full(summary):
            continue
        images = summary.get("images")
        if isinstance(images, dict):
            below.append(
                f"{_label(summary)} has predictions for {images['predicted']} of {images['expected']} images "
                f"({images['rejected']} rejected, scored 0; {images['not_generated']} not generated, left out)"
            )
        else:
            below.append(f"{_label(summary)} has predictions for {summary['coverage']:.1%} of the images")
    if not below:
        return ""
    return f"{DAGGER} Coverage below 100%: " + "; ".join(below) + "."


def _cell(summary: dict, segment: str, metric: str, how: str) -> str:
    entry = summary["scores"].get(segment, {}).get(metric)
    return f"{entry[f'avg_of_{how}']:.3f}" if entry else "–"


def agreements(summaries: list[dict]) -> list[dict]:
    """The distinct annotator agreements of the summaries (one per release split and settings),
    each with the ``label`` of its row: "annotator agreement", with its release split when
    there are several."""
    found: dict[str, dict] = {}
    for summary in summaries:
        agreement = summary.get("agreement")
        if agreement:
            key = json.dumps(
                {k: agreement.get(k) for k in ("split_sha256", "pairs", "scores")}, sort_keys=True
            )
            found.setdefault(key, dict(agreement))
    distinct = list(found.values())
    for agreement in distinct:
        agreement["label"] = AGREEMENT_ROW + (
            f" ({agreement['dataset']} {agreement['split']})" if len(distinct) > 1 else ""
        )
    labels = [agreement["label"] for agreement in distinct]
    for k, agreement in enumerate(distinct):
        if labels.count(agreement["label"]) > 1:  # one split scored with other settings
            agreement["label"] += f" #{labels[:k].count(agreement['label']) + 1}"
    return distinct


def _agreement_coverage(agreement: dict) -> str:
    return f"{agreement['n_examples']} images, both references"


def table_rows(summaries: list[dict]) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, header, rows, footnote) for every table; cells are strings."""
    tables = []
    ceilings = agreements(summaries)
    for title, metrics in paper_tables().items():
        present = [m for m in metrics if any(m in s["scores"].get("full", {}) for s in summaries)]
        if not present:
            continue
        header = ["Model", "Coverage"] + [
            f"{METRICS[m].display} {how}" for m in present for how in ("Avg.", "Max")
        ]
        rows = [
            [_name(s), _coverage(s)] + [_cell(s, "full", m, how) for m in present for how in ("avg", "max")]
            for s in summaries
        ]
        rows += [
            [a["label"], _agreement_coverage(a)]
            + [_cell(a, "full", m, how) for m in present for how in ("avg", "max")]
            for a in ceilings
        ]
        tables.append((title, header, rows, _notes(summaries, ceilings)))
    for summary in summaries:
        title = f"{SEGMENT_TABLE} of {_name(summary)} (coverage {_coverage(summary)})"
        tables.append((title, *_segment_table(summary), coverage_note([summary])))
    for agreement in ceilings:  # Table 7 has a table per model: the agreement has its own
        title = f"{SEGMENT_TABLE} of {agreement['label']} ({', '.join(agreement['pairs'])})"
        tables.append((title, *_segment_table(agreement), AGREEMENT_NOTE))
    references = list(dict.fromkeys(r for s in summaries for r in s["label_accuracy"]["references"]))
    header = ["Model", "Coverage", "Answer names the class or a more specific one"] + [
        f"Reference {r}" for r in references
    ]
    rows = [
        [_name(s), _coverage(s), f"{s['label_accuracy']['model']:.3f}"]
        + [f"{s['label_accuracy']['references'].get(r, float('nan')):.3f}" for r in references]
        for s in summaries
    ]
    tables.append((ACCURACY_TITLE, header, rows, coverage_note(summaries)))
    verdict_rows = label_verdict_rows(summaries)
    if verdict_rows:
        header = ["Answers of", "Coverage", *KIND_NAMES.values(), "Correct (95% CI)", "Label score (95% CI)"]
        rows = [[who, coverage, *_verdict_cells(entry)] for who, coverage, entry, _ in verdict_rows]
        tables.append((VERDICT_TITLE, header, rows, coverage_note(summaries)))
    return tables


def _segment_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Table 7's header and rows for one model (or the agreement): a row per metric, segments in columns."""
    segments = [seg for seg in SEGMENT_NAMES if seg in summary["scores"]]
    header = ["Metric"] + [f"{SEGMENT_NAMES[seg]} {how}" for seg in segments for how in ("Avg.", "Max.")]
    rows = [
        [METRICS[m].display] + [_cell(summary, seg, m, how) for seg in segments for how in ("avg", "max")]
        for m in summary["scores"][segments[0]]
    ]
    return header, rows


def _notes(summaries: list[dict], ceilings: list[dict]) -> str:
    return " ".join(filter(None, [coverage_note(summaries), AGREEMENT_NOTE if ceilings else ""]))


def label_verdict_rows(summaries: list[dict]) -> list[tuple[str, str, dict, bool]]:
    """(row label, coverage, verdict statistics, whether a reference) for the verdict table and
    chart: each model, then each reference annotator once (per distinct set of images scored,
    named by the model whose images they are when the models were scored on different images)."""
    with_verdicts = [s for s in summaries if s.get("label_verdicts")]
    rows = [(_name(s), _coverage(s), s["label_verdicts"]["model"], False) for s in with_verdicts]
    seen: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for summary in with_verdicts:
        for annotator, entry in summary["label_verdicts"]["references"].items():
            if all(entry != known for known, _ in seen[annotator]):
                seen[annotator].append((entry, summary))
    for annotator, entries in seen.items():
        for entry, summary in entries:
            where = f", images of {_label(summary)}" if len(entries) > 1 else ""
            rows.append((f"{annotator} (reference{where})", _scored_images(summary), entry, True))
    return rows


def _scored_images(summary: dict) -> str:
    """The images a reference's verdicts are over: those the model was scored on."""
    images = summary.get("images")
    return f"{summary['n_examples']}/{images['expected']} images" if isinstance(images, dict) else "–"


def _interval(entry: dict) -> str:
    low, high = entry["ci"]
    return f"{entry['mean']:.3f} [{low:.3f}, {high:.3f}]"


def _verdict_cells(entry: dict) -> list[str]:
    shares = [f"{entry['verdicts'][kind]['mean']:.3f}" for kind in KIND_NAMES]
    return [*shares, _interval(entry["correct"]), _interval(entry["score"])]


def _markdown(tables) -> str:
    blocks = []
    for title, header, rows, note in tables:
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines += ["", note] if note else []
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _latex_escape(text: str) -> str:
    for plain, escaped in (("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), (DAGGER, r"$^\dagger$")):
        text = text.replace(plain, escaped)
    return text


def _latex(tables) -> str:
    blocks = []
    for title, header, rows, note in tables:
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{_latex_escape(title)}}}",
            r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
            r"\toprule",
            " & ".join(_latex_escape(h) for h in header) + r" \\",
            r"\midrule",
            *[" & ".join(_latex_escape(c) for c in row) + r" \\" for row in rows],
            r"\bottomrule",
            r"\end{tabular}",
            *([r"\par\smallskip{\footnotesize " + _latex_escape(note) + "}"] if note else []),
            r"\end{table}",
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _csv(tables, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["table", "row", "column", "value"])
        for title, header, rows, note in tables:
            for row in rows:
                for column, value in zip(header[1:], row[1:], strict=True):
                    writer.writerow([title, row[0], column, value])
            if note:
                writer.writerow([title, DAGGER, "footnote", note])


def bar_charts(summaries: list[dict], out: Path) -> list[Path]:
    """One PNG per metric family: Avg of Avg per model and metric, with bootstrap CIs.

    The legend gives each model's coverage (a dagger below 100%, with the footnote under the
    chart); the PNG's ``Description`` text chunk repeats both.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    ceilings = agreements(summaries)
    series = [*summaries, *ceilings]
    for chart, candidates in family_charts().items():
        metrics = [m for m in candidates if any(m in s["scores"].get("full", {}) for s in summaries)]
        if not metrics:
            continue
        figure, axis = plt.subplots(figsize=(1.6 + 1.4 * len(metrics) * max(1, len(series)) / 2, 3.6))
        width = 0.8 / len(series)
        for k, summary in enumerate(series):
            entries = [summary["scores"]["full"].get(m) for m in metrics]
            means = [e["avg_of_avg"] if e else 0.0 for e in entries]
            errors = np.array(
                [
                    [e["avg_of_avg"] - e["avg_of_avg_ci"][0], e["avg_of_avg_ci"][1] - e["avg_of_avg"]]
                    if e
                    else [0, 0]
                    for e in entries
                ]
            ).T
            positions = np.arange(len(metrics)) + (k - (len(series) - 1) / 2) * width
            ceiling = k >= len(summaries)
            axis.bar(
                positions,
                means,
                width,
                yerr=errors,
                capsize=3,
                label=summary["label"] if ceiling else legend_label(summary),
                **({"color": "lightgrey", "hatch": "//", "edgecolor": "grey"} if ceiling else {}),
            )
        axis.set_xticks(
            np.arange(len(metrics)),
            [METRICS[m].display.replace(" Similarity", "") for m in metrics],
            fontsize=8,
        )
        axis.set_ylim(0, 1)
        axis.set_ylabel("Avg of Avg (95% CI)")
        axis.set_title(f"{chart} metrics, full output")
        axis.legend(fontsize=7)
        note = _notes(summaries, ceilings)
        if note:
            figure.text(0.01, 0.01, note, fontsize=6, wrap=True, va="bottom")
        figure.tight_layout(rect=(0, 0.12 if note else 0, 1, 1))
        path = out / f"chart_{chart}.png"
        described = [legend_label(s) for s in summaries] + [a["label"] for a in ceilings]
        description = "; ".join(described) + (f". {note}" if note else "")
        figure.savefig(path, dpi=110, metadata={"Description": description})
        plt.close(figure)
        written.append(path)
    verdicts = label_verdict_chart(summaries, out)
    return written + ([verdicts] if verdicts else [])


def label_verdict_chart(summaries: list[dict], out: Path) -> Path | None:
    """``chart_labels.png``: per model and reference, the share of each verdict kind (stacked) and
    the mean label score with its bootstrap interval; None when no summary has verdicts."""
    rows = label_verdict_rows(summaries)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [who for who, _, _, _ in rows]
    figure, (shares, scores) = plt.subplots(
        1, 2, figsize=(9, 1.6 + 0.35 * len(rows)), sharey=True, gridspec_kw={"width_ratios": [2, 1]}
    )
    positions = np.arange(len(rows))
    left = np.zeros(len(rows))
    for kind, colour in zip(
        KINDS, ("tab:green", "tab:olive", "tab:orange", "tab:red", "lightgrey"), strict=True
    ):
        values = np.array([entry["verdicts"][kind]["mean"] for _, _, entry, _ in rows])
        shares.barh(positions, values, left=left, color=colour, label=KIND_NAMES[kind])
        left += values
    shares.set_yticks(positions, names, fontsize=7)
    shares.invert_yaxis()
    shares.set_xlim(0, 1)
    shares.set_xlabel("share of answers")
    shares.legend(fontsize=6, ncols=5, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    means = np.array([entry["score"]["mean"] for _, _, entry, _ in rows])
    errors = np.array(
        [
            [
                entry["score"]["mean"] - entry["score"]["ci"][0],
                entry["score"]["ci"][1] - entry["score"]["mean"],
            ]
            for _, _, entry, _ in rows
        ]
    ).T
    colours = ["lightgrey" if reference else "tab:blue" for _, _, _, reference in rows]
    scores.barh(positions, means, xerr=errors, capsize=3, color=colours)
    scores.set_xlim(0, 1)
    scores.set_xlabel("mean label score (95% CI)")
    note = coverage_note(summaries)
    figure.suptitle("Label verdicts against the image's class (correct = exact or hyponym)", fontsize=9)
    if note:
        figure.text(0.01, 0.01, note, fontsize=6, wrap=True, va="bottom")
    figure.tight_layout(rect=(0, 0.1 if note else 0, 1, 1))
    path = out / "chart_labels.png"
    description = "; ".join(
        f"{who}: correct {entry['correct']['mean']:.3f}, label score {entry['score']['mean']:.3f}"
        for who, _, entry, _ in rows
    )
    figure.savefig(path, dpi=110, metadata={"Description": description + (f". {note}" if note else "")})
    plt.close(figure)
    return path


def legend_label(summary: dict) -> str:
    return f"{_name(summary)}, coverage {summary['coverage']:.1%}"


def _backbone_note(summaries: list[dict]) -> str:
    """Which backbone, layer and token limit each semantic metric used (the same for every model, or per model)."""
    described = set()
    for summary in summaries:
        scored = {name for segment in summary["scores"].values() for name in segment}
        for kind, b in summary["backbones"].items():
            whole = any(name.endswith("_full") and METRICS[name].backbone == kind for name in scored)
            reach = (
                f"whole text in windows of {b['max_tokens']} tokens"
                if whole
                else f"first {b['max_tokens']} tokens"
            )
            described.add(
                f"{kind}: {b['model']}" + (f", layer {b['layer']}" if b.get("layer") else "") + f", {reach}"
            )
    return "Backbones: " + "; ".join(sorted(described)) + ".\n\n" if described else ""


def write_report(summaries: list[dict], out: str | Path) -> list[Path]:
    """tables.md, tables.tex, tables.csv and the charts into ``out``.

    Rows are labelled by each summary's ``label`` (set by :func:`load_summaries`), else its model.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = table_rows(summaries)
    note = _backbone_note(summaries)
    (out / "tables.md").write_text(note + _markdown(tables), encoding="utf-8")
    (out / "tables.tex").write_text(_latex(tables), encoding="utf-8")
    _csv(tables, out / "tables.csv")
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
