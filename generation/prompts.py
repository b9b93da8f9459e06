"""The question asked of the models: it lives in ``configs/prompts/``, not in code."""

from __future__ import annotations

from pathlib import Path

import yaml

from common.checkout import checkout_file

PROMPTS_FILE = "configs/prompts/imagenet_think.yaml"  # a file of the checkout (common.checkout)


def load_question(name: str | None = None, path: str | Path | None = None) -> str:
    """The prompt called ``name`` (the file's ``default`` when None) in ``path`` (default: the
    checkout's :data:`PROMPTS_FILE`)."""
    path = Path(path) if path is not None else checkout_file(PROMPTS_FILE)
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    name = name or spec["default"]
    try:
        return " ".join(spec["prompts"][name].split())
    except KeyError:
        raise KeyError(f"no prompt {name!r} in {path}; it has {sorted(spec['prompts'])}") from None
