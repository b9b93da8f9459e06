"""Names transformers 5 moved, made importable again where hub remote code of the transformers-4 era
imports them (Kimi-VL's tokenizer).

Moonshot's tiktoken tokenizers import ``bytes_to_unicode`` from
``transformers.models.gpt2.tokenization_gpt2``, which transformers 5 moved to
``transformers.convert_slow_tokenizer`` (huggingface/transformers#43726).
:func:`restore_moved_names` sets each name of :data:`MOVED` on its old module where that module
lacks it: idempotent, a no-op under transformers 4, the same function object (tokenization is
unchanged). The annotator calls it before vLLM loads a remote-code model, ``pyproject.toml``
registers it as a vLLM general plugin (run in every process vLLM starts) and ``preflight`` says
when it was needed. Why a shim and not a pinned revision: docs/generate.md, "Kimi-VL under
transformers 5".
"""

from __future__ import annotations

import importlib
import logging

logger = logging.getLogger(__name__)

# old module -> {name: the module that has it now}
MOVED = {
    "transformers.models.gpt2.tokenization_gpt2": {"bytes_to_unicode": "transformers.convert_slow_tokenizer"},
}


def restore_moved_names() -> list[str]:
    """Make each :data:`MOVED` name importable from its old module where it is missing; the dotted
    names restored by this call (empty when nothing was missing)."""
    restored = []
    for old, names in MOVED.items():
        try:
            module = importlib.import_module(old)
        except ImportError:  # the old module itself is gone: remote code importing it fails as it would
            continue
        for name, new in names.items():
            if hasattr(module, name):
                continue
            setattr(module, name, getattr(importlib.import_module(new), name))
            restored.append(f"{old}.{name}")
    if restored:
        logger.debug("made importable for remote code: %s", ", ".join(restored))
    return restored
