"""Settings every test needs on a CPU machine with no hub access."""

import os
import tempfile

import pytest

from common.model_refs import resolve_model
from common.vllm_cpu import set_cpu_env_defaults

set_cpu_env_defaults()  # vLLM's CPU engine, tokenizers: for every test, whatever the machine
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    # A fresh datasets cache per run: results never come from an earlier run's cache.
    "HF_DATASETS_CACHE": tempfile.mkdtemp(prefix="hf-datasets-cache-"),
}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """A fresh tiny-model cache for the requesting module, holding tiny Qwen2-VL (processes it
    launches inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMAGENET_THINK_CACHE", str(tmp_path_factory.mktemp("tiny-models")))
        resolve_model("tiny:qwen2_vl")
        yield
