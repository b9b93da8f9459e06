"""Names transformers 5 moved, made importable again where hub remote code of the transformers-4 era
imports them (Kimi-VL's tokenizer).

Moonshot's tiktoken tokenizers (Kimi-VL's ``tokenization_moonlight.py``, Kimi-K2's and Kimi-Linear's
``tokenization_kimi.py``) import ``bytes_to_unicode`` from
``transformers.models.gpt2.tokenization_gpt2``. transformers 5 keeps the function in
``transformers.convert_slow_tokenizer`` only, so loading such a tokenizer raises ``ImportError``
(huggingface/transformers#43726), in vLLM as in transformers. :func:`restore_moved_names` sets each
name of :data:`MOVED` on its old module where that module lacks it: nothing changes where the name
is still there (transformers 4), nothing else is touched, and it is idempotent.

It is a shim rather than a pinned hub revision because the break is in transformers, not in the
model: the shim serves every revision of every such model (a reviewed revision stays pinnable), and
it is the same function object, so tokenization is unchanged. The annotator calls it before vLLM
loads a remote-code model, and ``pyproject.toml`` registers it as a vLLM general plugin, which vLLM
runs in every process it starts (an engine core spawned rather than forked inherits nothing);
``imagenet-think preflight`` calls it and says when it was needed.
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
