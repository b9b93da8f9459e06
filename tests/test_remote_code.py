"""Remote code of the transformers-4 era under transformers 5 (Kimi-VL's tokenizer): the break is real,
the shim is narrow, and the annotator's load path (vLLM's engine, in a fresh process) gets past it."""

import json
import os
import subprocess
import sys
import textwrap
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


@pytest.mark.slow
def test_the_annotator_loads_remote_code_of_transformers_4_in_vllm(remote_model, tmp_path):
    """``imagenet-think generate`` with ``trust_remote_code: true`` on that model: vLLM's engine loads
    the legacy tokenizer (and the processor that wraps it) and the run writes its records."""
    manifest, _ = write_manifest_tree(tmp_path / "data", classes=1, per_class=2)
    config = yaml.safe_load(TINY_KIMI.read_text(encoding="utf-8"))
    config.update(model=str(remote_model), trust_remote_code=True)
    config_path = tmp_path / "remote_kimi.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "imagenet_think_cli", "generate", "--config", str(config_path)]
        + ["--manifest", str(manifest), "--out", str(out), "--set", "sampling.max_tokens=8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [
        row for shard in sorted(out.glob("records-c*.parquet")) for row in pq.read_table(shard).to_pylist()
    ]
    assert len(records) == 2
    assert {record["model_id"] for record in records} == {str(remote_model)}
    assert all(record["num_output_tokens"] == 8 for record in records)
