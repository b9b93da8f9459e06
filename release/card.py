"""Render a release's README.md (the dataset card) from the ``dataset_card.md`` template.

The card is a standalone page on the Hub, where the toolkit's docs cannot be reached: the template
states this release's facts and includes the rules it was built by, each a ``## `` section of
``docs/release.md`` (the one place they are written), picked by heading when the card is rendered.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jinja2

from common.checkout import checkout_file
from imagenet_think_errors import MissingInputError
from release.schema import CITATION, JOINT_CONFIG
from release.stats import stats_markdown

TEMPLATE = "dataset_card.md"  # a file of the checkout (common.checkout)
RULES_PAGE = "docs/release.md"  # the page whose sections the template includes (docs_section)
IMAGENET_TERMS = "https://image-net.org/download.php"  # ImageNet's terms of access
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]


def size_category(images: int) -> str:
    return next((name for bound, name in SIZE_CATEGORIES if images < bound), "1M<n<10M")


def card_template() -> Path:
    """The checkout's dataset card template (:func:`common.checkout.checkout_file`), after checking
    that the rules page it includes is there too (the build calls this before any work)."""
    checkout_file(RULES_PAGE)
    return checkout_file(TEMPLATE)


def doc_sections(page: str) -> dict[str, str]:
    """A Markdown page's ``## `` sections by heading: each its heading line and the text up to the
    next ``## `` heading (lines of fenced code blocks are never headings)."""
    sections: dict[str, list[str]] = {}
    current, fenced = None, False
    for line in page.splitlines():
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        if current is not None:
            sections[current].append(line)
    return {heading: "\n".join(lines).strip() + "\n" for heading, lines in sections.items()}


def docs_section(sections: dict[str, str], heading: str) -> str:
    """The section ``heading`` of :data:`RULES_PAGE`, its headings one level down (the card puts it under
    its own ``## `` heading); :class:`MissingInputError` where the page has no such section."""
    if heading not in sections:
        raise MissingInputError(
            f"{RULES_PAGE} has no section '## {heading}', which {TEMPLATE} includes; restore the heading "
            f"(`git checkout -- {RULES_PAGE}`) or name one of its sections in {TEMPLATE}: {', '.join(sections)}"
        )
    fenced, lines = False, []
    for line in sections[heading].splitlines():
        fenced ^= line.startswith("```")
        lines.append("#" + line if not fenced and re.match(r"#+ ", line) else line)
    return "\n".join(lines) + "\n"


def render_card(summary, stats: dict, annotators: tuple[str, ...], demo_note: str | None = None) -> str:
    """The card: Hub YAML metadata (licence, tasks, ``configs:`` with data files) and the body."""
    present = [a for a in annotators if a in summary.rows]  # an annotator without good records has no config
    default = JOINT_CONFIG if JOINT_CONFIG in summary.rows else (present[0] if present else None)
    configs = [
        {"name": name, "splits": list(splits), "default": name == default}
        for name, splits in summary.rows.items()
    ]
    configs.sort(key=lambda config: not config["default"])
    template = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(
        card_template().read_text(encoding="utf-8")
    )
    return template.render(
        size_category=size_category(stats["images"]),
        configs=configs,
        rows=summary.rows,
        arrow_bytes=summary.arrow_bytes,
        parquet_bytes=summary.parquet_bytes,
        annotators=annotators,
        present=present,
        default_config=default,
        models=summary.models,
        load_name=summary.out.name,
        questions=summary.questions,
        rejected_by_reason=sorted(summary.rejected_by_reason.items()),
        stats_markdown=stats_markdown(stats),
        fractions=summary.fractions,
        demo_note=demo_note,
        provenance=summary.published_inputs(),
        citation=CITATION,
        license=summary.license,
        imagenet_terms=IMAGENET_TERMS,
        model_ids=sorted({model["model_id"] for models in summary.models.values() for model in models}),
        docs_section=functools.partial(
            docs_section, doc_sections(checkout_file(RULES_PAGE).read_text(encoding="utf-8"))
        ),
    )
