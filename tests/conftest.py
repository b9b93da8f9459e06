"""Settings every test needs on a CPU machine with no hub access."""

import os
import tempfile

for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "TRANSFORMERS_VERBOSITY": "error",
    # A fresh datasets cache per run: results never come from an earlier run's cache.
    "HF_DATASETS_CACHE": tempfile.mkdtemp(prefix="hf-datasets-cache-"),
}.items():
    os.environ.setdefault(key, value)
