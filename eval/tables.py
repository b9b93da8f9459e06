"""The report's tables in the layout of the paper's Tables 3–7 and the label tables, as rows, and
written as Markdown, LaTeX and CSV (the layout: docs/eval.md, "Tables and charts").
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from eval.metrics import METRICS, SEGMENT_TABLE, paper_tables
from generation.verdicts.labels import KINDS

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


def _label(summary: dict) -> str:
    return summary.get("label") or summary["model"]


def _below_full(summary: dict) -> bool:
    return summary["coverage"] < 1


def display_name(summary: dict) -> str:
    """The model's label, with a dagger if it is below full coverage."""
    return _label(summary) + (DAGGER if _below_full(summary) else "")


def _coverage(summary: dict) -> str:
    images = summary.get("images")
    counts = f" ({images['predicted']}/{images['expected']})" if isinstance(images, dict) else ""
    return f"{summary['coverage']:.1%}{counts}"


def _think_closed(summary: dict) -> str:
    """The share of the model's predictions whose think is closed ("–" in summaries made before)."""
    share = summary.get("think_closed")
    return f"{share:.3f}" if isinstance(share, int | float) else "–"


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
            [display_name(s), _coverage(s)]
            + [_cell(s, "full", m, how) for m in present for how in ("avg", "max")]
            for s in summaries
        ]
        rows += [
            [a["label"], _agreement_coverage(a)]
            + [_cell(a, "full", m, how) for m in present for how in ("avg", "max")]
            for a in ceilings
        ]
        tables.append((title, header, rows, table_notes(summaries, ceilings)))
    for summary in summaries:
        title = f"{SEGMENT_TABLE} of {display_name(summary)} (coverage {_coverage(summary)})"
        tables.append((title, *_segment_table(summary), coverage_note([summary])))
    for agreement in ceilings:  # Table 7 has a table per model: the agreement has its own
        title = f"{SEGMENT_TABLE} of {agreement['label']} ({', '.join(agreement['pairs'])})"
        tables.append((title, *_segment_table(agreement), AGREEMENT_NOTE))
    references = list(dict.fromkeys(r for s in summaries for r in s["label_accuracy"]["references"]))
    header = ["Model", "Coverage", "Think closed", "Answer names the class or a more specific one"] + [
        f"Reference {r}" for r in references
    ]
    rows = [
        [display_name(s), _coverage(s), _think_closed(s), f"{s['label_accuracy']['model']:.3f}"]
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


def table_notes(summaries: list[dict], ceilings: list[dict]) -> str:
    return " ".join(filter(None, [coverage_note(summaries), AGREEMENT_NOTE if ceilings else ""]))


def label_verdict_rows(summaries: list[dict]) -> list[tuple[str, str, dict, bool]]:
    """(row label, coverage, verdict statistics, whether a reference) for the verdict table and
    chart: each model, then each reference annotator once (per distinct set of images scored,
    named by the model whose images they are when the models were scored on different images)."""
    with_verdicts = [s for s in summaries if s.get("label_verdicts")]
    rows = [(display_name(s), _coverage(s), s["label_verdicts"]["model"], False) for s in with_verdicts]
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


def markdown(tables) -> str:
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


def latex(tables) -> str:
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


def write_csv(tables, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["table", "row", "column", "value"])
        for title, header, rows, note in tables:
            for row in rows:
                for column, value in zip(header[1:], row[1:], strict=True):
                    writer.writerow([title, row[0], column, value])
            if note:
                writer.writerow([title, DAGGER, "footnote", note])


def backbone_note(summaries: list[dict]) -> str:
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
