"""Tables in the layout of the paper's Tables 3–7 (Markdown, LaTeX, CSV) and bar charts (PNG).

Input: one or more ``summary.json`` written by ``eval score`` (one per model). Tables 3–6
put the models in rows and, per metric, Avg of Avg / Avg of Max on the full output;
Table 7 puts segments (full output, thinking tokens, answer tokens) in columns for each
model, with its two vector-space rows labelled as Table 6 labels them ("TF-IDF Cosine
Similarity" for TF-IDF, "Cosine Similarity" for raw term frequencies; the paper's Table 7
swaps them). A label-accuracy table adds what the paper does not measure.

``imagenet-think eval report REPORT [REPORT ...] --out DIR`` combines several models.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from eval.metrics import METRICS

EXAMPLE = "imagenet-think eval report reports/openvlthinker reports/internvl35 --out reports/all"
PAPER_TABLES = {
    "Table 3: Semantic Similarity Metrics": (
        "bertscore_f1",
        "sbert_cosine",
        "bertscore_f1_full",
        "sbert_cosine_full",
    ),
    "Table 4: N-gram Overlap Metrics": ("rouge1", "rougeL"),
    "Table 5: Lexical Set-Overlap Metrics": ("jaccard", "overlap"),
    "Table 6: Vector Space Metrics": ("tfidf_cosine", "tf_cosine"),
}
SEGMENT_NAMES = {"full": "Full Output", "think": "Thinking Tokens", "answer": "Answer Tokens"}
FAMILY_CHARTS = {
    "semantic": ("bertscore_f1", "sbert_cosine", "bertscore_f1_full", "sbert_cosine_full"),
    "lexical": ("rouge1", "rougeL", "jaccard", "overlap"),
    "vector": ("tfidf_cosine", "tf_cosine", "tfidf_cosine_corpus"),
}


def load_summary(report: str | Path) -> dict:
    path = Path(report)
    path = path / "summary.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: write it with `imagenet-think eval score`")
    return json.loads(path.read_text())


def _cell(summary: dict, segment: str, metric: str, how: str) -> str:
    entry = summary["scores"].get(segment, {}).get(metric)
    return f"{entry[f'avg_of_{how}']:.3f}" if entry else "–"


def table_rows(summaries: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table; cells are strings."""
    tables = []
    for title, metrics in PAPER_TABLES.items():
        present = [m for m in metrics if any(m in s["scores"].get("full", {}) for s in summaries)]
        if not present:
            continue
        header = ["Model"] + [f"{METRICS[m].display} {how}" for m in present for how in ("Avg.", "Max")]
        rows = [
            [s["model"]] + [_cell(s, "full", m, how) for m in present for how in ("avg", "max")]
            for s in summaries
        ]
        tables.append((title, header, rows))
    for summary in summaries:
        segments = [seg for seg in SEGMENT_NAMES if seg in summary["scores"]]
        header = ["Metric"] + [f"{SEGMENT_NAMES[seg]} {how}" for seg in segments for how in ("Avg.", "Max.")]
        metrics = list(summary["scores"][segments[0]])
        rows = [
            [METRICS[m].display] + [_cell(summary, seg, m, how) for seg in segments for how in ("avg", "max")]
            for m in metrics
        ]
        tables.append((f"Table 7: Thinking Tokens vs Answer Tokens of {summary['model']}", header, rows))
    references = list(summaries[0]["label_accuracy"]["references"])
    header = ["Model", "Answer names the class"] + [f"Reference {r}" for r in references]
    rows = [
        [s["model"], f"{s['label_accuracy']['model']:.3f}"]
        + [f"{s['label_accuracy']['references'].get(r, float('nan')):.3f}" for r in references]
        for s in summaries
    ]
    tables.append(("Label-grounded answer accuracy", header, rows))
    return tables


def _markdown(tables) -> str:
    blocks = []
    for title, header, rows in tables:
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _latex_escape(text: str) -> str:
    return text.replace("&", r"\&").replace("%", r"\%").replace("_", r"\_").replace("#", r"\#")


def _latex(tables) -> str:
    blocks = []
    for title, header, rows in tables:
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
            r"\end{table}",
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _csv(tables, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["table", "row", "column", "value"])
        for title, header, rows in tables:
            for row in rows:
                for column, value in zip(header[1:], row[1:], strict=True):
                    writer.writerow([title, row[0], column, value])


def bar_charts(summaries: list[dict], out: Path) -> list[Path]:
    """One PNG per metric family: Avg of Avg per model and metric, with bootstrap CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    for family, candidates in FAMILY_CHARTS.items():
        metrics = [m for m in candidates if any(m in s["scores"].get("full", {}) for s in summaries)]
        if not metrics:
            continue
        figure, axis = plt.subplots(figsize=(1.6 + 1.4 * len(metrics) * max(1, len(summaries)) / 2, 3.6))
        width = 0.8 / len(summaries)
        for k, summary in enumerate(summaries):
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
            positions = np.arange(len(metrics)) + (k - (len(summaries) - 1) / 2) * width
            axis.bar(positions, means, width, yerr=errors, capsize=3, label=summary["model"])
        axis.set_xticks(
            np.arange(len(metrics)),
            [METRICS[m].display.replace(" Similarity", "") for m in metrics],
            fontsize=8,
        )
        axis.set_ylim(0, 1)
        axis.set_ylabel("Avg of Avg (95% CI)")
        axis.set_title(f"{family} metrics, full output")
        axis.legend(fontsize=7)
        figure.tight_layout()
        path = out / f"chart_{family}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


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
    return "Backbones: " + "; ".join(sorted(described)) + ".\n\n"


def write_report(summaries: list[dict], out: str | Path) -> list[Path]:
    """tables.md, tables.tex, tables.csv and the charts into ``out``."""
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
    parser.add_argument("reports", nargs="+", help="folders written by `eval score` (or their summary.json)")
    parser.add_argument("--out", required=True, help="folder for the combined tables and charts")


def run(args: argparse.Namespace) -> int:
    written = write_report([load_summary(r) for r in args.reports], args.out)
    print(Path(written[0]).read_text())
    print("written: " + ", ".join(str(p) for p in written))
    return 0
