"""The checks of ``preflight``: load a model's parts as a run does, render a prompt, test markers.

Each check adds :class:`Row` s to a :class:`Report`: ``ok``, ``warn`` (the run goes, but not as the
config says it should) or ``error`` (the run would crash or produce nothing usable), each problem with
its fix. A model that cannot be fetched is one error row, not a traceback.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field

from PIL import Image

from common.remote_code_compat import MOVED, restore_moved_names

STATUSES = ("ok", "warn", "error")
DEFAULT_IMAGE_SIZE = (500, 375)  # ImageNet's most common photo size (4:3)


@dataclass
class Row:
    check: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, check: str, status: str, detail: str, fix: str = "") -> None:
        assert status in STATUSES, status
        self.rows.append(Row(check, status, detail, fix))

    @property
    def failed(self) -> bool:
        return any(row.status == "error" for row in self.rows)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def default_image() -> Image.Image:
    """A 500x375 RGB photo stand-in: the size, not the content, sets the image tokens."""
    width, height = DEFAULT_IMAGE_SIZE
    gradient = Image.linear_gradient("L").resize((width, height))
    return Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient))


def load_parts(report: Report, model: str, path: str, revision: str | None, trust_remote_code: bool):
    """The model's config and processor (or tokenizer alone), loaded as vLLM and transformers load
    them, with the remote-code shim applied first; None where a part cannot be loaded (an error row)."""
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    restore_moved_names()
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(path, **kwargs)
    except (OSError, ValueError, ImportError) as error:
        report.add(
            "model",
            "error",
            f"{model}: could not fetch or load its config ({first_line(error)})",
            "run preflight where the Hub is reachable (a login node), or download the model first "
            f"(`hf download {model}`), and check the id and revision",
        )
        return None, None
    report.add("model", "ok", f"{model} ({type(config).__name__}, revision {revision or 'unpinned'})")
    try:
        processor = AutoProcessor.from_pretrained(path, **kwargs)
    except (OSError, ValueError, ImportError, TypeError) as error:
        try:  # a text-only model has a tokenizer and no processor
            processor = AutoTokenizer.from_pretrained(path, **kwargs)
        except (OSError, ValueError, ImportError, TypeError):
            report.add(
                "processor",
                "error",
                f"{model}: its processor does not load ({first_line(error)})",
                "install what the message names, or fix the model's processor files",
            )
            return config, None
    tokenizer = getattr(processor, "tokenizer", processor)
    parts = "(tokenizer only)" if tokenizer is processor else f"with {type(tokenizer).__name__}"
    report.add("processor", "ok", f"{type(processor).__name__} {parts}")
    _report_moved_imports(report, tokenizer)
    return config, processor


def _report_moved_imports(report: Report, tokenizer) -> None:
    """Say when the tokenizer's remote code imports a name transformers 5 moved (and the shim serves)."""
    module = sys.modules.get(type(tokenizer).__module__)
    if module is None or not type(tokenizer).__module__.startswith("transformers_modules"):
        return
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return
    used = [
        f"{old}.{name}" for old, names in MOVED.items() for name in names if old in source and name in source
    ]
    if used:
        report.add(
            "remote code",
            "ok",
            f"{type(tokenizer).__name__} imports {', '.join(used)}, gone in transformers 5: it loads through "
            "common/remote_code_compat.py, which the annotator applies before vLLM starts",
        )


def render_prompt(processor, messages: list[dict], image: Image.Image, processor_kwargs: dict | None = None):
    """The prompt as the chat template renders it, its token count and its image tokens (None where the
    model has no transformers image processor, as InternVL's original repo: vLLM brings its own, and
    only the text is rendered and counted here)."""
    if not hasattr(processor, "image_processor"):
        text_only = [
            {**m, "content": " ".join(p["text"] for p in m["content"] if p.get("type") == "text")}
            if isinstance(m["content"], list)
            else m
            for m in messages
        ]
        ids = processor.apply_chat_template(text_only, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        return None, len(ids), None
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[image], return_tensors="pt", **(processor_kwargs or {}))
    ids = batch["input_ids"][0]
    token = getattr(processor, "image_token", None)
    tokenizer = getattr(processor, "tokenizer", processor)
    image_tokens = int((ids == tokenizer.convert_tokens_to_ids(token)).sum()) if token else 0
    return text, int(ids.shape[-1]), image_tokens


def check_markers(report: Report, tokenizer, markers: list[str], skip_special_tokens: bool, fix: str) -> None:
    """Each marker the parser needs must come back from decoding as the run decodes."""
    lost, split = [], []
    for marker in markers:
        ids = tokenizer.encode(marker, add_special_tokens=False)
        if marker not in tokenizer.decode(ids, skip_special_tokens=skip_special_tokens):
            lost.append(marker)
        elif len(ids) > 1:
            split.append(f"{marker} ({len(ids)} tokens)")
    if lost:
        report.add(
            "markers",
            "error",
            f"{', '.join(lost)} {'is' if len(lost) == 1 else 'are'} dropped when decoding with "
            f"skip_special_tokens={str(skip_special_tokens).lower()}: the parser would never see "
            f"{'it' if len(lost) == 1 else 'them'}",
            fix,
        )
        return
    detail = f"{', '.join(markers)} survive decoding (skip_special_tokens={str(skip_special_tokens).lower()})"
    report.add(
        "markers", "ok", detail + (f"; spelled in several tokens: {', '.join(split)}" if split else "")
    )
