"""``imagenet-think preflight`` on tiny models and on every shipped config (offline here): prompt length
against max_model_len, markers through the tokenizer, remote code of the transformers-4 era, memory."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common.model_refs import resolve_model
from imagenet_think_cli import main as cli
from preflight import memory
from preflight.checks import Report, check_markers
from tests.fixtures.remote_code import write_remote_code_model

REPO = Path(__file__).resolve().parent.parent
TINY_GLM = REPO / "configs" / "generation" / "tiny_glm.yaml"
SHIPPED = sorted(
    path.relative_to(REPO)
    for folder in ("configs/generation", "configs/models", "configs/sft", "configs/grpo")
    for path in (REPO / folder).glob("*.yaml")
)
QWEN25_VL_3B = {  # Qwen/Qwen2.5-VL-3B-Instruct's config.json sizes
    "text_config": {
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 2048,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
    "tie_word_embeddings": True,
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _preflight(capsys, *args) -> tuple[int, str]:
    status = cli(["preflight", *map(str, args)])
    return status, capsys.readouterr().out


def test_a_tiny_annotator_passes_and_its_length_is_what_bounds_max_model_len(tiny_cache, capsys):
    status, out = _preflight(capsys, "--config", TINY_GLM)
    assert status == 0, out
    for check in ("model", "processor", "length", "markers", "memory"):
        assert re.search(rf"^\| {check} \| ok \|", out, re.M), out
    needed = int(re.search(r"output = (\d+) <= engine.max_model_len", out).group(1))
    image_tokens = int(re.search(r"\((\d+) of them the 500x375 image's\)", out).group(1))
    assert 4 <= image_tokens <= 16  # the tiny processor's budget (common/tiny/builder.py)
    status, out = _preflight(capsys, "--config", TINY_GLM, "--set", f"engine.max_model_len={needed - 1}")
    assert status == 1
    assert f"fix: raise engine.max_model_len to at least {needed}" in out
    status, _ = _preflight(capsys, "--config", TINY_GLM, "--set", f"engine.max_model_len={needed}")
    assert status == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "no/such.yaml"], "config no/such.yaml not found"),
        (["--config", "{broken"], "is not valid YAML"),
        (["--config", TINY_GLM, "--image", "{broken"], "not an image"),
        (["--config", TINY_GLM, "--gpu-memory", "0"], "--gpu-memory must be > 0"),
        (
            ["--config", REPO / "configs" / "sft" / "tiny.yaml", "--set", "a=1"],
            "--set overrides model configs",
        ),
    ],
)
def test_a_users_mistake_is_one_line(args, message, tmp_path, monkeypatch):
    from imagenet_think_errors import ImageNetThinkError

    (tmp_path / "{broken").write_text("a: [unclosed\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ImageNetThinkError, match=re.escape(message)):
        cli(["preflight", *map(str, args)])


def test_markers_that_decoding_drops_are_an_error(tiny_cache):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny:glm4v"))
    dropped, kept = Report(), Report()
    check_markers(
        dropped, tokenizer, ["</think>", "<|begin_of_box|>"], True, "set sampling.skip_special_tokens: false"
    )
    check_markers(
        kept, tokenizer, ["</think>", "<|begin_of_box|>"], False, "set sampling.skip_special_tokens: false"
    )
    assert dropped.failed and "<|begin_of_box|> is dropped" in dropped.rows[0].detail
    assert "</think>" not in dropped.rows[0].detail  # a plain token survives
    assert not kept.failed


def test_memory_that_does_not_fit_is_an_error(tiny_cache, capsys):
    status, out = _preflight(capsys, "--config", TINY_GLM, "--gpu-memory", "0.001")
    assert status == 1 and "error: memory:" in out and "0 sequence(s)" in out
    status, out = _preflight(
        capsys, "--config", REPO / "configs" / "grpo" / "tiny.yaml", "--gpu-memory", "0.00001"
    )
    assert status == 1 and "fix: lower per_device_train_batch_size" in out


def test_a_remote_code_tokenizer_of_transformers_4_passes_with_an_unpinned_warning(tiny_cache, tmp_path):
    """In a fresh process: the tokenizer's import of bytes_to_unicode is found and served."""
    model = write_remote_code_model(tmp_path / "legacy")
    config = yaml.safe_load((REPO / "configs" / "generation" / "tiny_kimi.yaml").read_text(encoding="utf-8"))
    config.update(model=str(model), trust_remote_code=True)
    path = tmp_path / "remote.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "imagenet_think_cli", "preflight", "--config", str(path)],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "| processor | ok | Qwen2VLProcessor with LegacyTinyTokenizer |" in done.stdout
    assert (
        "LegacyTinyTokenizer imports transformers.models.gpt2.tokenization_gpt2.bytes_to_unicode"
        in done.stdout
    )
    assert "warn: remote code: trust_remote_code with revision null" in done.stdout
    assert "| markers | ok | ◁think▷, ◁/think▷ survive decoding" in done.stdout


def test_a_model_without_an_image_processor_is_counted_as_text_with_a_warning(tiny_cache, tmp_path, capsys):
    """InternVL's original repo has no transformers processor (vLLM brings its own)."""
    import shutil

    model = tmp_path / "text-only"
    shutil.copytree(resolve_model("tiny:qwen2_vl"), model)
    (model / "processor_config.json").unlink()
    status, out = _preflight(
        capsys, "--config", REPO / "configs" / "models" / "tiny_baseline.yaml", "--set", f"model={model}"
    )
    assert status == 0, out
    assert "(tokenizer only)" in out and "prompt tokens (text only)" in out
    assert "warn: image:" in out and "image's tokens are not in the count" in out


@pytest.mark.parametrize("config", SHIPPED, ids=str)
def test_every_shipped_config_is_checked_or_says_in_one_line_what_it_could_not_fetch(
    config, tiny_cache, capsys
):
    status, out = _preflight(capsys, "--config", REPO / config)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    spec = yaml.safe_load((REPO / config).read_text(encoding="utf-8"))
    model = spec.get("model") or spec.get("model_name_or_path")
    if model.startswith("tiny:"):
        assert status == 0 and not errors, out
    else:  # offline, the hub model is not here: one line names it and the fix
        assert status == 1 and len(errors) == 1, out
        assert errors[0].startswith(f"error: model: {model}: could not fetch") and "fix:" in errors[0]


def test_the_memory_plan_of_the_3b_recipes_matches_their_comments():
    """Qwen2.5-VL-3B built on the meta device from its config: the GRPO recipe needs its 80 GB GPU,
    and the 40 GB settings its comment gives fit; the SFT recipe's 24 GB settings fit 24 GB."""
    from transformers import Qwen2_5_VLConfig

    shape = memory.model_shape(Qwen2_5_VLConfig(**QWEN25_VL_3B))
    assert 3.70e9 < shape.parameters < 3.80e9  # 3.75 B
    lora = memory.lora_parameters(shape, 64, LORA_TARGETS)

    def grpo(gpu, micro, vllm):
        return memory.training_plan(
            shape,
            dtype=2,
            micro_batch=micro,
            sequence=3072,
            loss_tokens=2048,
            checkpointing=True,
            lora=lora,
            logit_bytes=memory.GRPO_LOGIT_BYTES,
            vllm_gib=gpu * vllm,
        ).total_gib

    assert grpo(80, 16, 0.35) < 80 * 0.95
    assert grpo(40, 16, 0.35) > 40
    assert grpo(40, 4, 0.3) < 40 * 0.9

    def sft(micro):
        return memory.training_plan(
            shape,
            dtype=2,
            micro_batch=micro,
            sequence=4096,
            loss_tokens=4096,
            checkpointing=True,
            lora=memory.lora_parameters(shape, 32, LORA_TARGETS),
        ).total_gib

    assert 22 < sft(4) < 30 and sft(2) < 22


def test_kv_cache_of_latent_attention_is_the_latent():
    """DeepSeek-V3-style MLA (Kimi-VL's language model) caches kv_lora_rank + qk_rope_head_dim per layer."""
    from transformers import DeepseekV3Config, Qwen2Config

    assert memory.kv_values_per_token(DeepseekV3Config()) == 61 * (512 + 64)
    qwen = Qwen2Config(num_hidden_layers=28, hidden_size=3584, num_attention_heads=28, num_key_value_heads=4)
    assert memory.kv_values_per_token(qwen) == 28 * 2 * 4 * 128
