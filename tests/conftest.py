"""Settings every test needs on a CPU machine with no hub access."""

import os
import tempfile

from generation.cpu_env import set_cpu_env_defaults

set_cpu_env_defaults()  # vLLM's CPU engine, tokenizers: for every test, whatever the machine
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    # A fresh datasets cache per run: results never come from an earlier run's cache.
    "HF_DATASETS_CACHE": tempfile.mkdtemp(prefix="hf-datasets-cache-"),
}.items():
    os.environ.setdefault(key, value)
