"""The demo's pages and pictures: the HTML preview of a demo folder (a few samples of the release,
the eval charts and tables) and the chart of GRPO's rewards per step, as TRL logged them."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from PIL import Image

from release.schema import ANNOTATORS, JOINT_CONFIG, joint_column


def _thumbnail(cell: dict) -> str:
    image = Image.open(io.BytesIO(cell["bytes"])).convert("RGB")
    image.thumbnail((220, 220))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return base64.b64encode(buffer.getvalue()).decode()


def write_preview(out: Path, report: Path, note: str) -> Path:
    """One HTML page: a few samples (image, think, answer per annotator) and the eval charts."""
    from datasets import load_dataset

    rows = load_dataset(str(out / "imagenet_think"), JOINT_CONFIG, split="train")
    rows = rows.cast_column("image", _raw_image())
    cards = []
    for row in rows.select(range(min(4, len(rows)))):
        blocks = "".join(
            f"<h4>{a} <small>label verdict: {html.escape(str(row[joint_column(a, 'label_verdict')]))} "
            f"({row[joint_column(a, 'label_score')]:.2f})</small></h4>"
            f"<p class=t><b>think</b> {html.escape(row[joint_column(a, 'think')])}</p>"
            f"<p><b>answer</b> {html.escape(row[joint_column(a, 'answer')])}</p>"
            for a in ANNOTATORS
        )
        cards.append(
            f"<div class=card><img src='data:image/jpeg;base64,{_thumbnail(row['image'])}'>"
            f"<h3>{html.escape(row['class_name'])} <small>{html.escape(row['wnid'])}</small></h3>{blocks}</div>"
        )
    charts = "".join(
        f"<img class=chart src='{p.relative_to(out)}'>" for p in sorted(report.glob("chart_*.png"))
    )
    rewards = out / "grpo_rewards.png"
    grpo = (
        f"<h2>GRPO on the student: reward per step</h2><img class=chart src='{rewards.name}'>"
        if rewards.is_file()
        else ""
    )
    tables = html.escape((report / "tables.md").read_text())
    page = f"""<!doctype html><html><head><meta charset=utf-8><title>ImageNet-Think demo</title><style>
body{{font-family:sans-serif;margin:2em;max-width:1200px}} .card{{border:1px solid #ccc;border-radius:8px;
padding:1em;margin:1em 0}} .card img{{float:right;margin-left:1em}} .t{{color:#555}} .chart{{margin:.5em}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>
<h1>ImageNet-Think demo</h1><p><b>{html.escape(note)}</b></p>
<h2>Samples (config <code>{JOINT_CONFIG}</code>, split train)</h2>{"".join(cards)}
{grpo}<h2>Evaluation: trained student vs untrained baseline (split test)</h2>{charts}<pre>{tables}</pre>
</body></html>"""
    path = out / "preview.html"
    path.write_text(page, encoding="utf-8")
    return path


def _raw_image():
    from datasets import Image as ImageFeature

    return ImageFeature(decode=False)


def reward_chart(state: Path, png: Path) -> Path:
    """Each reward's mean per step, as TRL logged it (``rewards/<name>/mean``), in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = json.loads(state.read_text())["log_history"]
    names = sorted(
        {key for entry in history for key in entry if key.startswith("rewards/") and key.endswith("/mean")}
    )
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for name in names:
        steps = [(entry["step"], entry[name]) for entry in history if name in entry]
        axes.plot(
            *zip(*steps, strict=True), marker="o", label=name.removeprefix("rewards/").removesuffix("/mean")
        )
    axes.set_xlabel("GRPO step")
    axes.set_ylabel("mean reward")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(png)
    plt.close(figure)
    return png
