"""Settings every test needs on a CPU machine with no hub access, and the order of the test files.

``make test`` runs the files in parallel (pytest-xdist, ``--dist loadfile``: one file's tests in one
worker, in the order below); each worker then gets its share of the cores for torch and the
processes it starts, so that two workers never fight over the same ones.
"""

import os
import tempfile

import pytest

from common.model_refs import resolve_model
from common.vllm_cpu import set_cpu_env_defaults

# The files whose tests take the most CPU time, most first (measured on the 2-core machine): a worker
# that starts them early leaves the short files to fill in at the end. Others follow in their order.
LONGEST_FIRST = (
    "test_demo.py",  # the whole demo with GRPO: about two minutes on one worker
    "test_force_answer.py",
    "test_training.py",
    "test_grpo.py",
    "test_run_trust.py",
    "test_lmms.py",
    "test_remote_code.py",
    "test_release_trust.py",
    "test_eval.py",
    "test_release_integrity.py",
    "test_release.py",
    "test_gpu_check.py",
    "test_metrics.py",
    "test_tiny_models.py",
    "test_preflight.py",
    "test_cli.py",
    "test_generate.py",
)

set_cpu_env_defaults()  # vLLM's CPU engine, tokenizers: for every test, whatever the machine
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    # A fresh datasets cache per run: results never come from an earlier run's cache.
    "HF_DATASETS_CACHE": tempfile.mkdtemp(prefix="hf-datasets-cache-"),
}.items():
    os.environ.setdefault(key, value)

if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    # A parallel run: this worker's share of the cores, for torch here and in the processes it starts.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // workers)))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(items):
    """Run :data:`LONGEST_FIRST` first (a stable sort: each file's tests keep their order)."""
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A fresh tiny-model cache for the session, tiny Qwen2-VL built into it once."""
    root = tmp_path_factory.mktemp("tiny-models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMAGENET_THINK_CACHE", str(root))
        resolve_model("tiny:qwen2_vl")
    return root


@pytest.fixture(scope="module")
def tiny_cache(tiny_models):
    """The session's tiny-model cache for the requesting module (processes it launches inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMAGENET_THINK_CACHE", str(tiny_models))
        yield
