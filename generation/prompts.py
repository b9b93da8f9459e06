"""The question asked of the models: it lives in ``configs/prompts/``, not in code."""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
PROMPTS_FILE = CONFIGS_DIR / "prompts" / "imagenet_think.yaml"


def load_question(name: str | None = None, path: str | Path = PROMPTS_FILE) -> str:
    """The prompt called ``name`` (the file's ``default`` when None)."""
    spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    name = name or spec["default"]
    try:
        return " ".join(spec["prompts"][name].split())
    except KeyError:
        raise KeyError(f"no prompt {name!r} in {path}; it has {sorted(spec['prompts'])}") from None
