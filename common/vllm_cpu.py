"""The environment a CPU run needs: vLLM's CPU engine, tokenizers and transformers (tests, the demo).

:func:`set_cpu_env_defaults` sets each of :data:`CPU_ENV_DEFAULTS` that is not set already, so
a value given on the command line or by a launcher wins. The annotator calls it where no GPU is
used, the test suite for every test; the Ray pool forwards these variables to its actors.
"""

from __future__ import annotations

import os

CPU_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache vLLM's CPU engine reserves (else it sizes it itself)
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the engine core in the calling process: no fork
    "TOKENIZERS_PARALLELISM": "false",  # no tokenizer threads that a later fork would deadlock
}


def set_cpu_env_defaults() -> None:
    """Set each of :data:`CPU_ENV_DEFAULTS` that is unset (a no-op for the ones set already)."""
    for key, value in CPU_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
