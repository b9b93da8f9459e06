"""Model configs: one YAML per model, read into a :class:`VLMConfig`, shared by generation
(annotators) and eval (evaluated models).

``sampling`` is passed to vLLM's ``SamplingParams``, ``engine`` to ``vllm.LLM``, ``prompt`` names a
question of ``configs/prompts/imagenet_think.yaml``, ``model`` is a hub id, a local path or
``tiny:<arch>`` (:func:`common.model_refs.resolve_model`); ``on_truncation`` and the other keys are
documented in docs/generate.md. :func:`validate_model_config` checks a whole config (unknown keys at
every level against vLLM's own fields, types, ranges) before anything is written or an engine
starts; :func:`load_model_config` runs it, naming the file or ``--set`` item a mistake came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from common.model_refs import TINY_PREFIX
from generation.prompts import load_question
from generation.reasoning import STYLES
from generation.row_checks import annotator_problem
from imagenet_think_errors import InputError, MissingInputError

logger = logging.getLogger(__name__)

# Engine keys the config sets from its own top-level keys (vllm.LLM(model=..., revision=..., ...)).
TOP_LEVEL_ENGINE_KEYS = ("model", "revision", "trust_remote_code")
# Engine values vLLM only checks once the engine starts (minutes later, after run.json): checked here.
POSITIVE_ENGINE_KEYS = (
    "max_model_len",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "data_parallel_size",
    "max_num_seqs",
    "max_num_batched_tokens",
    "block_size",
)
NON_NEGATIVE_ENGINE_KEYS = ("cpu_offload_gb", "swap_space", "mm_processor_cache_gb", "kv_cache_memory_bytes")
ENGINE_ARGS_DOCS = "https://docs.vllm.ai/en/latest/configuration/engine_args.html"
ON_TRUNCATION = ("keep", "force_answer")  # VLMConfig.on_truncation


@dataclass
class VLMConfig:
    """A VLM run through vLLM: an annotator (``configs/generation/``) or an evaluated model
    (``configs/models/``). Not TRL's ``ModelConfig``, which configures a model to train."""

    annotator: str  # the dataset config name its records go to: glm, kimi, ...
    model: str
    revision: str | None = None
    parse_style: str = "think_tags"
    prompt: str | None = None  # a prompt name; None is the prompts file's default
    instruction: str = ""  # model-specific text appended to the question (e.g. a baseline's format request)
    # The question as a model's authors pose it: a text with one {question} (the question and instruction).
    question_template: str | None = None
    system_prompt: str | None = None
    sampling: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)
    chat_template_kwargs: dict = field(default_factory=dict)
    structured_output_regex: str | None = None  # constrain outputs with vLLM's structured outputs
    trust_remote_code: bool = False
    chunk_size: int = 256  # images handed to the engine at once; one shard per chunk
    # A generation that hits sampling.max_tokens with its think open: keep it (today's records), or
    # force_answer: append the style's closing delimiter and generate up to force_answer_max_tokens more.
    on_truncation: str = "keep"
    force_answer_max_tokens: int = 1024

    def __post_init__(self):
        if self.parse_style not in STYLES:
            raise InputError(
                f"parse_style {self.parse_style!r} is not one of {sorted(STYLES)}"
                + _did_you_mean(str(self.parse_style), STYLES)
            )
        if problem := annotator_problem(self.annotator):
            raise InputError(problem)
        if not isinstance(self.chunk_size, int) or isinstance(self.chunk_size, bool) or self.chunk_size < 1:
            raise InputError(f"chunk_size must be a whole number >= 1, not {self.chunk_size!r}")
        if self.on_truncation not in ON_TRUNCATION:
            raise InputError(
                f"on_truncation {self.on_truncation!r} is not one of {', '.join(ON_TRUNCATION)}"
                + _did_you_mean(str(self.on_truncation), ON_TRUNCATION)
            )
        template = self.question_template
        if template is not None and (not isinstance(template, str) or template.count("{question}") != 1):
            raise InputError(
                f"question_template must be a text with {{question}} once (where the question goes), not {template!r}"
            )
        tokens = self.force_answer_max_tokens
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            raise InputError(f"force_answer_max_tokens must be a whole number >= 1, not {tokens!r}")

    @property
    def question(self) -> str:
        question = load_question(self.prompt)
        question = f"{question} {self.instruction}".strip() if self.instruction else question
        return self.question_template.replace("{question}", question) if self.question_template else question


# Types of the top-level keys (VLMConfig's annotations are strings under `from __future__`).
_TOP_LEVEL_TYPES: dict[str, tuple[type, ...]] = {
    "annotator": (str,),
    "model": (str,),
    "revision": (str, type(None)),
    "parse_style": (str,),
    "prompt": (str, type(None)),
    "instruction": (str,),
    "question_template": (str, type(None)),
    "system_prompt": (str, type(None)),
    "sampling": (dict,),
    "engine": (dict,),
    "chat_template_kwargs": (dict,),
    "structured_output_regex": (str, type(None)),
    "trust_remote_code": (bool,),
    "chunk_size": (int,),
    "on_truncation": (str,),
    "force_answer_max_tokens": (int,),
}


_TYPE_NAMES = {
    str: "a string",
    int: "a whole number",
    bool: "true or false",
    dict: "a mapping",
    type(None): "null",
}


def _did_you_mean(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _origin(key: str, source: str | None, overrides: dict[str, str]) -> str:
    """Where ``key`` (dotted) was set: the ``--set`` item that set it (or a parent of it), else the file."""
    parts = key.split(".")
    for depth in range(len(parts), 0, -1):
        item = overrides.get(".".join(parts[:depth]))
        if item is not None:
            return f"--set {item}"
    return source or "the model config"


def unpinned_remote_code(config: VLMConfig) -> str | None:
    """The warning for a config that runs a hub model's own code (``trust_remote_code: true``) without
    a pinned ``revision``: the code run is whatever the repository holds at load time. None otherwise
    (code of a local folder or a tiny model is the user's own)."""
    local = config.model.startswith(TINY_PREFIX) or Path(config.model).expanduser().exists()
    if not config.trust_remote_code or config.revision or local:
        return None
    source = getattr(config, "source", None) or f"the {config.annotator} config"
    return (
        f"{source}: trust_remote_code is true for {config.model} and no revision is pinned, so the code that "
        "runs is whatever that repository holds now; set revision to the commit sha whose code you reviewed"
    )


def validate_model_config(
    config: VLMConfig, source: str | None = None, overrides: dict[str, str] | None = None
) -> None:
    """Check every key and value of ``config`` as vLLM will read them; raise :class:`InputError`.

    ``source`` names the config file and ``overrides`` maps each dotted key set by ``--set`` to
    its ``KEY=VALUE`` item, so that the message names where a wrong key or value came from. Keys of
    ``sampling`` must be ``vllm.SamplingParams`` fields and their values its types and ranges;
    keys of ``engine`` must be ``vllm.EngineArgs`` fields (or ``vllm.LLM`` arguments), their values
    its types; ``chat_template_kwargs`` is free-form. Nothing is loaded or started.
    """
    source = source or getattr(config, "source", None)
    overrides = overrides if overrides is not None else getattr(config, "overrides", {})

    def fail(key: str, problem: str) -> InputError:
        return InputError(f"{_origin(key, source, overrides)}: {problem}")

    for name, types in _TOP_LEVEL_TYPES.items():
        value = getattr(config, name)
        if not isinstance(value, types) or (int in types and isinstance(value, bool)):
            expected = " or ".join(_TYPE_NAMES[t] for t in types)
            raise fail(name, f"{name} must be {expected}, not {value!r} ({type(value).__name__})")
    # VLMConfig.__post_init__ checked annotator, parse_style and chunk_size; a config changed
    # since (dataclasses.replace runs it again, attribute assignment does not) is checked again.
    try:
        dataclasses.replace(config)
    except InputError as error:
        raise fail("", str(error)) from None
    try:
        load_question(config.prompt)
    except MissingInputError:  # no prompts file at all (a non-editable install): its own message
        raise
    except (KeyError, ValueError, FileNotFoundError) as error:
        raise fail("prompt", f"prompt {config.prompt!r}: {error.args[0] if error.args else error}") from None
    if config.on_truncation == "force_answer":
        _validate_force_answer(config, fail)
    if config.structured_output_regex is not None:
        import re

        try:
            re.compile(config.structured_output_regex)
        except re.error as error:
            raise fail(
                "structured_output_regex", f"structured_output_regex is not a regular expression: {error}"
            ) from None
    try:
        import vllm  # noqa: F401
    except ImportError:  # a machine without vLLM cannot generate; the engine says so when it starts
        logger.warning("vLLM is not installed: the sampling and engine settings are not checked")
        return
    _validate_sampling(config, fail)
    _validate_engine(config, fail)


def _validate_force_answer(config: VLMConfig, fail) -> None:
    """``on_truncation: force_answer`` needs a think to close, an unconstrained continuation, and room
    in ``engine.max_model_len`` for both passes' tokens besides the prompt."""
    if STYLES[config.parse_style].force is None:
        raise fail(
            "on_truncation",
            f"on_truncation: force_answer closes the think of a truncated output, but parse_style "
            f"{config.parse_style!r} has no think; use keep, or a thinking parse_style",
        )
    if config.structured_output_regex is not None:
        raise fail(
            "on_truncation",
            "on_truncation: force_answer continues an output after the think's closing delimiter, which "
            "structured_output_regex (a pattern for the whole output) cannot follow; set one of them",
        )
    max_model_len, max_tokens = config.engine.get("max_model_len"), config.sampling.get("max_tokens")
    numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in (max_model_len, max_tokens))
    if numbers and max_model_len < max_tokens + config.force_answer_max_tokens:
        raise fail(
            "force_answer_max_tokens",
            f"engine.max_model_len {max_model_len} cannot hold sampling.max_tokens {max_tokens} plus "
            f"force_answer_max_tokens {config.force_answer_max_tokens} (and the prompt): raise "
            f"engine.max_model_len to at least {max_tokens + config.force_answer_max_tokens} plus the "
            "prompt's tokens, or lower force_answer_max_tokens",
        )


def _validate_sampling(config: VLMConfig, fail) -> None:
    import msgspec
    from msgspec.structs import fields as struct_fields
    from vllm import SamplingParams

    allowed = sorted(f.name for f in struct_fields(SamplingParams) if not f.name.startswith("_"))
    for key in config.sampling:
        if key not in allowed:
            raise fail(
                f"sampling.{key}",
                f"sampling key {key!r} is not a vllm.SamplingParams field"
                + _did_you_mean(str(key), allowed)
                + f" (sampling keys: {', '.join(allowed)})",
            )
    if config.structured_output_regex and "structured_outputs" in config.sampling:
        raise fail(
            "sampling.structured_outputs",
            "set structured_output_regex or sampling.structured_outputs, not both",
        )
    try:
        msgspec.convert(dict(config.sampling), SamplingParams)  # types, then SamplingParams' own checks
    except msgspec.ValidationError as error:  # "Expected `int | null`, got `str` - at `$.max_tokens`"
        message, _, where = str(error).partition(" - at `$.")
        key = where.rstrip("`").split(".")[0].split("[")[0]
        value = config.sampling.get(key, "?")
        raise fail(f"sampling.{key}", f"sampling.{key} = {value!r}: {message}") from None
    except Exception as error:  # SamplingParams' own range checks (VLLMValidationError, ValueError)
        key = getattr(error, "parameter", None) or next(
            (k for k in config.sampling if str(k) in str(error)), ""
        )
        raise fail(f"sampling.{key}" if key else "sampling", f"sampling: {error}") from None


def _engine_fields() -> tuple[dict[str, object], set[str]]:
    """``EngineArgs``' fields with their types, and the keys ``vllm.LLM`` takes besides them."""
    import inspect

    from vllm import LLM, EngineArgs

    module = vars(sys.modules[EngineArgs.__module__])
    types = {}
    for f in dataclasses.fields(EngineArgs):
        if not f.init:
            continue
        annotation = f.type
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, module)  # noqa: S307 - vLLM's own annotation text
            except Exception:  # a name only imported for type checking: its type is not checked
                annotation = None
        types[f.name] = annotation
    extra = set(inspect.signature(LLM.__init__).parameters) - {"self", "kwargs"} - set(types)
    return types, extra


def _check_engine_type(key: str, annotation, value) -> str | None:
    """Why ``value`` is not of ``annotation`` (None when it is, or when the type cannot be checked)."""
    if annotation is None:
        return None
    from pydantic import ConfigDict, TypeAdapter, ValidationError

    try:
        try:
            adapter = TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
        except Exception:  # dataclasses and models take no config
            adapter = TypeAdapter(annotation)
    except Exception:
        return None
    try:
        adapter.validate_python(value, strict=True)
        return None
    except ValidationError as strict_error:
        problem = _pydantic_problem(strict_error)
    except Exception:  # a type pydantic cannot check
        return None
    if isinstance(value, dict):  # a nested config given as a mapping is converted by vLLM
        try:
            adapter.validate_python(value)
            return None
        except ValidationError as lax_error:
            problem = _pydantic_problem(lax_error)
        except Exception:
            return None
    return problem


def _pydantic_problem(error) -> str:
    """A pydantic ValidationError's messages, without its links."""
    lines = [line.strip() for line in str(error).splitlines()[1:] if not line.startswith("    ")]
    return "; ".join(line.split(" [type=")[0] for line in lines) or str(error)


def _validate_engine(config: VLMConfig, fail) -> None:
    from vllm import EngineArgs

    types, extra = _engine_fields()
    allowed = sorted((set(types) | extra) - set(TOP_LEVEL_ENGINE_KEYS))
    for key, value in config.engine.items():
        if key in TOP_LEVEL_ENGINE_KEYS:
            raise fail(
                f"engine.{key}",
                f"engine.{key} is set by the config's top-level `{key}:`; move it there",
            )
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise fail(
                f"engine.{key}",
                f"engine key {key!r} is not an argument of vllm.LLM / vllm.EngineArgs{hint} "
                f"(engine keys: the {len(allowed)} fields of vllm.EngineArgs, {ENGINE_ARGS_DOCS})",
            )
        problem = _check_engine_type(key, types.get(key), value)
        if problem:
            raise fail(f"engine.{key}", f"engine.{key} = {value!r}: {problem}")
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if key in POSITIVE_ENGINE_KEYS and value < 1:
            raise fail(f"engine.{key}", f"engine.{key} must be >= 1, not {value!r}")
        if key in NON_NEGATIVE_ENGINE_KEYS and value < 0:
            raise fail(f"engine.{key}", f"engine.{key} must be >= 0, not {value!r}")
        if key == "gpu_memory_utilization" and not 0 < value <= 1:
            raise fail(
                f"engine.{key}", f"engine.{key} is a fraction of the GPU's memory in (0, 1], not {value!r}"
            )
    # EngineArgs turns nested mappings into vLLM's config classes, checking their keys. It is given
    # an existing folder for the model (and no tokenizer), which it then takes as is: the model and
    # tokenizer are neither resolved nor read here (offline, it would look for them in the cache).
    checked = {k: v for k, v in config.engine.items() if k in types and k not in ("tokenizer",)}
    try:
        EngineArgs(
            model=str(Path(__file__).resolve().parent), trust_remote_code=config.trust_remote_code, **checked
        )
    except Exception as error:
        key = next((k for k in config.engine if str(k) in str(error)), "")
        raise fail(
            f"engine.{key}" if key else "engine", f"engine settings rejected by vLLM: {error}"
        ) from None


def _parse_override(item: str) -> tuple[list[str], object]:
    key, sep, value = item.partition("=")
    keys = key.strip().split(".")
    if not sep or not all(keys):
        raise InputError(f"--set {item!r} is not KEY=VALUE (e.g. --set sampling.max_tokens=1024)")
    try:
        return keys, yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise InputError(f"--set {item!r}: the value is not valid YAML ({error})") from None


def load_model_config(path: str | Path, overrides: list[str] = ()) -> VLMConfig:
    """Read a model YAML, apply ``a.b=value`` overrides (values parsed as YAML), and validate it
    (:func:`validate_model_config`): a wrong key or value names the file or the ``--set`` item."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"model config {path} not found; pick one of configs/generation/*.yaml or configs/models/*.yaml"
        )
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise InputError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(spec, dict):
        raise InputError(f"{path} must be a mapping of keys (annotator:, model:, sampling:, ...)")
    origins: dict[str, str] = {}
    for item in overrides:
        keys, value = _parse_override(item)
        target = spec
        for depth, key in enumerate(keys[:-1]):
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise InputError(
                    f"--set {item}: {'.'.join(keys[: depth + 1])} is {target!r} in {path}, not a mapping"
                )
        target[keys[-1]] = value
        origins[".".join(keys)] = item
    known = [f.name for f in fields(VLMConfig)]
    for key in spec:
        if key not in known:
            raise InputError(
                f"{_origin(str(key), str(path), origins)}: unknown key {key!r}"
                + _did_you_mean(str(key), known)
                + f" (a model config has {', '.join(known)})"
            )
    missing = [name for name in ("annotator", "model") if name not in spec]
    if missing:
        raise InputError(f"{path}: {' and '.join(missing)} must be set")
    try:
        config = VLMConfig(**spec)
    except InputError as error:
        keys = (
            "parse_style",
            "annotator",
            "chunk_size",
            "on_truncation",
            "force_answer_max_tokens",
            "question_template",
        )
        key = next((k for k in keys if k in str(error)), "")
        raise InputError(f"{_origin(key, str(path), origins)}: {error}") from None
    config.source, config.overrides = str(path), origins  # not fields: not part of run.json's pin
    validate_model_config(config)
    return config
