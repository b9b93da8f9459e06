"""Remote code of the transformers-4 era under transformers 5 (Kimi-VL's tokenizer): the break is real,
the shim is narrow, and the annotator's load path (vLLM's engine, in a fresh process) gets past it."""

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.fixtures.remote_code import write_remote_code_model
from tests.fixtures.synthetic import write_manifest_tree

REPO = Path(__file__).resolve().parent.parent
TINY_KIMI = REPO / "configs" / "generation" / "tiny_kimi.yaml"


@pytest.fixture(scope="module")
def remote_model(tiny_cache, tmp_path_factory):
    return write_remote_code_model(tmp_path_factory.mktemp("remote") / "legacy-tokenizer-model")


def _python(code: str, **env) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter: no earlier test's shim is in it."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_shim_is_what_lets_the_tokenizer_load_and_changes_nothing_else(remote_model):
    done = _python(
        f"""
        import json, transformers
        from transformers import AutoTokenizer
        from transformers.convert_slow_tokenizer import bytes_to_unicode
        import transformers.models.gpt2.tokenization_gpt2 as gpt2
        from common.remote_code_compat import restore_moved_names
        try:
            AutoTokenizer.from_pretrained({str(remote_model)!r}, trust_remote_code=True)
            before = "loaded"
        except ImportError as error:
            before = str(error)
        first, second = restore_moved_names(), restore_moved_names()
        tokenizer = AutoTokenizer.from_pretrained({str(remote_model)!r}, trust_remote_code=True)
        ids = tokenizer.encode("◁think▷ a red fox ◁/think▷ fox", add_special_tokens=False)
        print(json.dumps({{
            "before": before, "first": first, "second": second,
            "same_function": gpt2.bytes_to_unicode is bytes_to_unicode,
            "class": type(tokenizer).__name__, "round_trip": tokenizer.decode(ids),
            "symbols": tokenizer.byte_symbols("a b"),
        }}))
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "cannot import name 'bytes_to_unicode'" in result["before"]  # transformers 5 as installed here
    assert result["first"] == ["transformers.models.gpt2.tokenization_gpt2.bytes_to_unicode"]
    assert result["second"] == []  # idempotent
    assert result["same_function"]
    assert result["class"] == "LegacyTinyTokenizer"
    assert result["round_trip"] == "◁think▷ a red fox ◁/think▷ fox"
    assert result["symbols"] == "aĠb"  # GPT-2's byte table: the space is Ġ


def _vllm_plugins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["entry-points"]["vllm.general_plugins"]


def test_the_shim_is_a_vllm_general_plugin():
    """vLLM runs ``vllm.general_plugins`` in each process it starts: the shim is declared there."""
    plugins = _vllm_plugins()
    loaded = [EntryPoint(name, value, "vllm.general_plugins").load() for name, value in plugins.items()]
    from common.remote_code_compat import restore_moved_names

    assert loaded == [restore_moved_names]


def _run_generate(remote_model, tmp_path, env=None) -> subprocess.CompletedProcess:
    manifest, _ = write_manifest_tree(tmp_path / "data", classes=1, per_class=2)
    config = yaml.safe_load(TINY_KIMI.read_text(encoding="utf-8"))
    config.update(model=str(remote_model), trust_remote_code=True)
    config_path = tmp_path / "remote_kimi.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "imagenet_think_cli", "generate", "--config", str(config_path)]
        + ["--manifest", str(manifest), "--out", str(tmp_path / "run"), "--set", "sampling.max_tokens=8"],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=800,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_spawned_vllm_engine_gets_the_shim_through_the_plugin(remote_model, tmp_path):
    """``imagenet-think generate`` with ``trust_remote_code: true`` on that model, with vLLM's engine
    core in a *spawned* process (as on a GPU node where CUDA is initialized first): the front end
    loads the legacy tokenizer (and the processor that wraps it) in the annotator's process, the
    engine core inherits nothing from it and gets the shim from the plugin entry point (registered
    as `pip install -e .` registers it: a dist-info on the path), and the run writes its records."""
    dist = tmp_path / "plugins" / "imagenet_think_plugins-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: imagenet-think-plugins\nVersion: 0\n")
    entries = "".join(f"{name} = {value}\n" for name, value in _vllm_plugins().items())
    (dist / "entry_points.txt").write_text(f"[vllm.general_plugins]\n{entries}")
    env = {
        "PYTHONPATH": os.pathsep.join([str(dist.parent), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
    }
    done = _run_generate(remote_model, tmp_path, env)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [
        row
        for shard in (tmp_path / "run").glob("records-c*.parquet")
        for row in pq.read_table(shard).to_pylist()
    ]
    assert len(records) == 2
    assert {record["model_id"] for record in records} == {str(remote_model)}
    assert all(record["num_output_tokens"] == 8 for record in records)
