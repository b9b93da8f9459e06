"""The trace report's chart (``trace_quality.png`` beside the card), drawn with Pillow.

Two panels of grouped bars, one colour per annotator: the think length quantiles in words, and the
rate measures (shares of traces). Pillow, not matplotlib as the toolkit's other charts: the build
draws this one on every run, and importing and starting matplotlib costs half a CPU second, a fifth
of a 5,000-image build (``benchmarks/RESULTS.md``, "Release build").
"""

from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw, ImageFont

RATES = (
    "reflection_share",
    "repeated_4gram_share",
    "template_share",
    "answer_in_think",
    "class_in_think_share",
    "near_duplicate_trace_share",
    "forced_share",
)
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_SIZE = (1000, 350)
_TOP, _BOTTOM = 40, 260  # the plots' vertical extent
_PANELS = ((70, 480), (560, 985))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _ticks(top: float) -> list[float]:
    """Round tick values from 0 to at least ``top``, five or so."""
    if top <= 0:
        return [0.0, 1.0]
    step = 10 ** math.floor(math.log10(top / 5))
    step *= next(m for m in (1, 2, 5, 10) if top / (step * m) <= 6)
    return [step * k for k in range(math.ceil(top / step - 1e-9) + 1)]


def _panel(draw, panel, title, groups, series, colours, ticks, tick_label) -> list[float]:
    """Axes, ticks, title and the bars of ``series`` (one list per annotator) over ``groups``; returns
    the groups' centres."""
    left, right = panel
    small = _font(12)
    top = ticks[-1] or 1
    draw.rectangle((left, _TOP, right, _BOTTOM), outline="black")
    for tick in ticks:
        y = _BOTTOM - (_BOTTOM - _TOP) * tick / top
        draw.line((left - 4, y, left, y), fill="black")
        draw.text((left - 6, y), tick_label(tick), fill="black", font=small, anchor="rm")
    draw.text(((left + right) / 2, _TOP - 8), title, fill="black", font=_font(14), anchor="md")
    slot = (right - left) / max(len(groups), 1)
    width = 0.8 * slot / max(len(series), 1)
    centres = []
    for g in range(len(groups)):
        start = left + slot * (g + 0.1)
        centres.append(left + slot * (g + 0.5))
        for s, values in enumerate(series):
            height = (_BOTTOM - _TOP) * min(max(values[g] / top, 0.0), 1.0)
            x = start + s * width
            draw.rectangle((x, _BOTTOM - height, x + width - 1, _BOTTOM), fill=colours[s])
    return centres


def _rotated(text: str, font, degrees: int = 30) -> Image.Image:
    """``text`` turned ``degrees`` counter-clockwise, on a transparent ground."""
    box = font.getbbox(text)
    label = Image.new("RGBA", (box[2] + 4, box[3] + 4), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((2, 2), text, fill="black", font=font)
    return label.rotate(degrees, expand=True, resample=Image.Resampling.BICUBIC)


def trace_quality_chart(quality: dict) -> bytes:
    """A PNG of ``stats.json``'s ``trace_quality`` (annotator -> measures)."""
    annotators = list(quality)
    colours = [_COLOURS[i % len(_COLOURS)] for i in range(len(annotators))]
    image = Image.new("RGB", _SIZE, "white")
    draw = ImageDraw.Draw(image)
    small = _font(12)
    points = list(next(iter(quality.values()))["think_words"]) if quality else []
    lengths = [[quality[a]["think_words"][p] for p in points] for a in annotators]
    top = max((max(row) for row in lengths if row), default=0)
    centres = _panel(
        draw, _PANELS[0], "think length", points, lengths, colours, _ticks(top), lambda t: f"{t:,.0f}"
    )
    for centre, point in zip(centres, points, strict=True):
        draw.text((centre, _BOTTOM + 6), point, fill="black", font=small, anchor="mt")
    words = _rotated("words", small, 90)
    image.paste(words, (8, (_TOP + _BOTTOM - words.height) // 2), words)
    rates = [[quality[a][name] for name in RATES] for a in annotators]
    title = "shares of traces (answer in think: of answer words)"
    ticks = [k / 5 for k in range(6)]
    centres = _panel(draw, _PANELS[1], title, RATES, rates, colours, ticks, lambda t: f"{t:.1f}")
    for centre, name in zip(centres, RATES, strict=True):
        label = _rotated(name.replace("_share", "").replace("_", " "), small)
        image.paste(label, (int(centre - label.width), _BOTTOM + 4), label)
    legend = 24 + max((small.getbbox(a)[2] for a in annotators), default=0)
    left = _PANELS[0][1] - 8 - legend
    draw.rectangle((left, _TOP + 6, left + legend, _TOP + 12 + 18 * len(annotators)), "white", "#cccccc")
    for index, (annotator, colour) in enumerate(zip(annotators, colours, strict=True)):
        y = _TOP + 10 + 18 * index
        draw.rectangle((left + 4, y, left + 16, y + 12), fill=colour)
        draw.text((left + 20, y + 6), annotator, fill="black", font=small, anchor="lm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
