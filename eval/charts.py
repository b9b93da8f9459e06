"""The report's bar charts (PNG): one per metric family (:func:`~eval.metrics.family_charts`) and
the label verdicts' chart; each carries the models' coverage in its legend and its footnotes."""

from __future__ import annotations

from pathlib import Path

from eval.metrics import METRICS, family_charts
from eval.tables import KIND_NAMES, agreements, coverage_note, display_name, label_verdict_rows, table_notes
from generation.verdicts.labels import KINDS


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
        _family_bars(axis, series, len(summaries), metrics)
        axis.set_xticks(
            np.arange(len(metrics)),
            [METRICS[m].display.replace(" Similarity", "") for m in metrics],
            fontsize=8,
        )
        axis.set_ylim(0, 1)
        axis.set_ylabel("Avg of Avg (95% CI)")
        axis.set_title(f"{chart} metrics, full output")
        axis.legend(fontsize=7)
        note = table_notes(summaries, ceilings)
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


def _family_bars(axis, series: list[dict], models: int, metrics: list[str]) -> None:
    """One group of bars per metric, a bar per series (the first ``models`` the models, then the
    agreement ceilings, greyed): Avg of Avg with its bootstrap interval."""
    import numpy as np

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
        ceiling = k >= models
        axis.bar(
            positions,
            means,
            width,
            yerr=errors,
            capsize=3,
            label=summary["label"] if ceiling else legend_label(summary),
            **({"color": "lightgrey", "hatch": "//", "edgecolor": "grey"} if ceiling else {}),
        )


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
    return f"{display_name(summary)}, coverage {summary['coverage']:.1%}"
