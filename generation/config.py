"""Model configs: one YAML per model, shared by generation (annotators) and eval (baselines).

Every key maps to something users know: ``sampling`` is passed to vLLM's
``SamplingParams``, ``engine`` to ``vllm.LLM`` (its engine arguments), ``prompt``
names a question of ``configs/prompts/imagenet_think.yaml``. ``model`` is a hub
id, a local path, or ``tiny:<arch>`` (generation.tiny_models). Remote code is
trusted only where a config says ``trust_remote_code: true``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from generation.prompts import load_question
from generation.reasoning import STYLES


@dataclass
class ModelConfig:
    annotator: str  # the dataset config name its records go to: glm, kimi, ...
    model: str
    revision: str | None = None
    parse_style: str = "think_tags"
    prompt: str | None = None  # a prompt name; None is the prompts file's default
    instruction: str = ""  # model-specific text appended to the question (e.g. a baseline's format request)
    system_prompt: str | None = None
    sampling: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)
    chat_template_kwargs: dict = field(default_factory=dict)
    structured_output_regex: str | None = None  # constrain outputs with vLLM's structured outputs
    trust_remote_code: bool = False
    chunk_size: int = 256  # images handed to the engine at once; one shard per chunk

    def __post_init__(self):
        if self.parse_style not in STYLES:
            raise ValueError(f"parse_style {self.parse_style!r} is not one of {sorted(STYLES)}")
        if not self.annotator.isidentifier():
            raise ValueError(f"annotator {self.annotator!r} must be an identifier: it names a dataset config")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")

    @property
    def question(self) -> str:
        question = load_question(self.prompt)
        return f"{question} {self.instruction}".strip() if self.instruction else question

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _parse_override(item: str) -> tuple[list[str], object]:
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"override {item!r} is not KEY=VALUE (e.g. sampling.max_tokens=1024)")
    return key.split("."), yaml.safe_load(value)


def load_model_config(path: str | Path, overrides: list[str] = ()) -> ModelConfig:
    """Read a model YAML, applying ``a.b=value`` overrides (values parsed as YAML)."""
    spec = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    for item in overrides:
        keys, value = _parse_override(item)
        target = spec
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    known = {f.name for f in fields(ModelConfig)}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; a model config has {sorted(known)}")
    return ModelConfig(**spec)
