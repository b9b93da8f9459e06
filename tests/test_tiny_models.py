"""Tiny local VLMs: deterministic builds, their tokens and templates, and real transformers and vLLM runs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from common.model_refs import resolve_model
from common.tiny.builder import ARCHS, BUILD_VERSION, REASONING_TOKENS, build_tiny_model
from imagenet_think_cli import main
from tests.fixtures.vllm_greedy import vllm_greedy

QUESTION = "What is in the image?"
IMAGE_MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
QWEN_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{QUESTION}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
EXPECTED_PROMPTS = {
    "glm4v": f"[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>{QUESTION}<|assistant|>\n",
    "qwen2_vl": QWEN_PROMPT,
    "qwen2_5_vl": QWEN_PROMPT,
}
IMAGE_TOKENS = {"glm4v": "<|image|>", "qwen2_vl": "<|image_pad|>", "qwen2_5_vl": "<|image_pad|>"}
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh model cache for this module, through ``IMAGENET_THINK_CACHE``."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMAGENET_THINK_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def models(cache) -> dict[str, Path]:
    return {arch: Path(resolve_model(f"tiny:{arch}")) for arch in ARCHS}


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray(data.chelsea())  # a 451x300 photo of a cat


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def _transformers_greedy(folder: Path, image: Image.Image) -> tuple[list[int], list[int]]:
    """The prompt ids and the greedy continuation of transformers for the image question."""
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    prompt = processor.apply_chat_template(IMAGE_MESSAGES, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    prompt_ids = inputs["input_ids"][0].tolist()
    return prompt_ids, output[0, len(prompt_ids) :].tolist()


def test_resolve_model_builds_once_into_the_cache(models, cache):
    folder = models["glm4v"]
    assert folder == cache / "tiny-models" / f"glm4v-seed0-v{BUILD_VERSION}"
    built = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny:glm4v") == str(folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == built


def test_resolve_model_passes_other_references_through_and_rejects_bad_tiny_ones(cache):
    for ref in ("zai-org/GLM-4.1V-9B-Thinking", "/models/local-copy", "tinyllama/x"):
        assert resolve_model(ref) == ref
    for bad in ("tiny:gpt2", "tiny:glm4v@seed=x", "tiny:glm4v@temperature=1"):
        with pytest.raises(ValueError):
            resolve_model(bad)


def test_concurrent_resolves_agree_on_one_complete_folder(cache, tmp_path):
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(resolve_model, ["tiny:qwen2_vl@seed=3"] * 2))
    assert folders[0] == folders[1] and folders[0].endswith(f"qwen2_vl-seed3-v{BUILD_VERSION}")
    assert _files(Path(folders[0])) == _files(build_tiny_model("qwen2_vl", tmp_path, seed=3))
    assert not [path for path in (cache / "tiny-models").iterdir() if path.name.startswith(".")]


def test_same_seed_gives_identical_files_another_seed_other_weights(models, tmp_path):
    cached = _files(models["glm4v"])
    assert _files(build_tiny_model("glm4v", tmp_path / "again", seed=0)) == cached
    other = _files(build_tiny_model("glm4v", tmp_path / "seed1", seed=1))
    assert other["model.safetensors"] != cached["model.safetensors"]
    assert other["tokenizer.json"] == cached["tokenizer.json"]


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_keeps_reasoning_delimiters_whole(models, arch):
    tokenizer = AutoProcessor.from_pretrained(models[arch]).tokenizer
    for delimiter in REASONING_TOKENS:
        assert len(tokenizer.encode(delimiter, add_special_tokens=False)) == 1
    text = "◁think▷ hm ◁/think▷<think>a red bird</think><answer>cardinal</answer>"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("arch", ARCHS)
def test_config_token_ids_match_the_tokenizer(models, arch):
    processor = AutoProcessor.from_pretrained(models[arch])
    config = AutoConfig.from_pretrained(models[arch])
    tokens = processor.tokenizer.convert_ids_to_tokens
    assert tokens(config.image_token_id) == IMAGE_TOKENS[arch]
    assert config.text_config.vocab_size == len(processor.tokenizer)
    assert config.vision_config.patch_size == processor.image_processor.patch_size
    assert config.vision_config.spatial_merge_size == processor.image_processor.merge_size


@pytest.mark.parametrize("arch", ARCHS)
def test_chat_template_renders_the_family_prompt(models, arch):
    processor = AutoProcessor.from_pretrained(models[arch])
    render = processor.apply_chat_template
    assert render(IMAGE_MESSAGES, add_generation_prompt=True, tokenize=False) == EXPECTED_PROMPTS[arch]
    answer = "<think>A cat.</think><answer>tabby</answer>"
    turns = [
        {"role": "system", "content": "Be brief."},
        *IMAGE_MESSAGES,
        {"role": "assistant", "content": answer},
    ]
    rendered = render(turns, tokenize=False)
    assert rendered.count("Be brief.") == 1 and answer in rendered
    assert "You are a helpful assistant." not in rendered


@pytest.mark.parametrize("arch", ARCHS)
def test_transformers_generates_for_an_image(models, image, arch):
    prompt_ids, new_ids = _transformers_greedy(models[arch], image)
    config = AutoConfig.from_pretrained(models[arch])
    assert 4 <= prompt_ids.count(config.image_token_id) <= 16
    assert len(new_ids) >= 1


@pytest.mark.parametrize("arch", ARCHS)
def test_vllm_generates_what_transformers_generates(models, image, arch):
    output = vllm_greedy(models[arch], image, QUESTION, NEW_TOKENS)
    prompt_ids, new_ids = _transformers_greedy(models[arch], image)
    assert output.prompt_token_ids == prompt_ids
    assert list(output.outputs[0].token_ids[: len(new_ids)]) == new_ids


def test_cli_builds_a_model(tmp_path, capsys):
    out = tmp_path / "tiny-qwen"
    assert main(["tiny-model", "qwen2_vl", "--out", str(out), "--seed", "1"]) == 0
    assert str(out) in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(_files(out))
