"""Model references: what a config's ``model`` (or a recipe's ``model_name_or_path``) may name.

A hub id or a local folder is handed to vLLM and transformers as it is. ``tiny:<arch>`` or
``tiny:<arch>@seed=<n>`` names a tiny random-weight model for tests and the demo
(:mod:`common.tiny`), built once into ``$IMAGENET_THINK_CACHE/tiny-models`` (default
``~/.cache/imagenet_think``); its builder is imported only for such a reference.
"""

from __future__ import annotations

TINY_PREFIX = "tiny:"


def resolve_model(ref: str) -> str:
    """The folder of a ``tiny:<arch>[@seed=<n>]`` reference (built on first use); other references unchanged."""
    if not ref.startswith(TINY_PREFIX):
        return ref
    arch, _, option = ref.removeprefix(TINY_PREFIX).partition("@")
    key, _, value = option.partition("=")
    if option and (key != "seed" or not value.isdigit()):
        raise ValueError(f"bad tiny model reference {ref!r}; expected tiny:<arch> or tiny:<arch>@seed=<n>")
    from common.tiny.builder import cached_tiny_model

    return str(cached_tiny_model(arch, int(value) if option else 0))
