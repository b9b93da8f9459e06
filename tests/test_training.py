"""SFT on a tiny VLM on the CPU: targets, lengths, the template check, LoRA targets, errors a person
can act on, and real ``accelerate launch`` runs (one process; ZeRO-2 on two) through adapter reload,
merge and vLLM."""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset, load_dataset
from datasets import Image as ImageFeature
from peft import PeftModel, get_peft_model
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import ModelConfig

from common.model_refs import resolve_model
from generation.reasoning import parse_reasoning
from imagenet_think_errors import InputError
from tests.fixtures.small_release import labelled_release
from tests.fixtures.vllm_greedy import vllm_greedy
from training.formatting import (
    EACH,
    THINK_FORMATS,
    check_think_reaches_labels,
    format_target,
    make_collator,
    prepare_examples,
    select_traces,
    to_example,
    trained_text,
)
from training.merge import base_model_of
from training.merge import main as merge_main
from training.model import load_model, peft_config_for
from training.sft import build_trainer, parse_args
from training.sft import main as sft_main

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "configs" / "sft" / "tiny.yaml"
ACCELERATE = Path(sys.executable).with_name("accelerate")
QUESTION = "What is in the image?"
SENTENCES = "The bird sits on a branch. It has brown feathers! Is it a finch? The beak is short and thick. "
LOSS = re.compile(r"\{'loss': '([^']+)'")
# A Qwen-style template that, like GLM-4.1V's own, keeps only what follows </think> in assistant turns.
THINK_DROPPING_TEMPLATE = (
    "{%- for message in messages -%}<|im_start|>{{ message.role }}\n"
    "{%- for part in message.content -%}"
    "{%- if part.type == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif message.role == 'assistant' -%}{{ part.text.split('</think>')[-1].lstrip() }}"
    "{%- else -%}{{ part.text }}{%- endif -%}"
    "{%- endfor -%}<|im_end|>\n{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}"
)


@pytest.fixture(scope="module")
def processor(tiny_cache):
    return AutoProcessor.from_pretrained(resolve_model("tiny:qwen2_vl"))


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A release of 12 images (8 in train) with glm and kimi records; glm's answers name the class
    (all verified), kimi's are random words (none verified)."""
    return labelled_release(tmp_path_factory.mktemp("release"), kimi_answer="Some words.")


def _rows(images: list[Image.Image], thinks: list[str]) -> Dataset:
    n = len(images)
    columns = {"image": images, "question": [QUESTION] * n, "think": thinks, "answer": ["a finch"] * n}
    return Dataset.from_dict({**columns, "annotator": ["glm"] * n}).cast_column("image", ImageFeature())


def _image_tokens(batch, processor) -> int:
    return int((batch["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())


def _expected_image_tokens(batch, processor) -> int:
    return int(batch["image_grid_thw"].prod(dim=-1).sum()) // processor.image_processor.merge_size**2


@pytest.mark.parametrize("think_format", sorted(THINK_FORMATS))
def test_targets_read_back_with_the_projects_parser(think_format):
    target = format_target(" The bird is small.\n", " a finch ", think_format)
    parsed = parse_reasoning(target, "think_tags")
    assert (parsed.think, parsed.answer, parsed.closed) == ("The bird is small.", "a finch", True)
    if think_format == "r1":
        assert target == "<think>\nThe bird is small.\n</think>\n\na finch"
    with pytest.raises(ValueError, match="unknown think_format"):
        format_target("t", "a", "chatml")


def test_select_traces_per_config_and_annotator(release):
    both = load_dataset(str(release), "both", split="train")
    each = select_traces(both, EACH)
    assert len(each) == 2 * len(both) and sorted(set(each["annotator"])) == ["glm", "kimi"]
    pairs = zip(both["glm_think"], both["kimi_think"], strict=True)
    assert list(each["think"]) == [think for pair in pairs for think in pair]  # image by image
    assert each["annotator"][:2] == ["glm", "kimi"]
    kimi = select_traces(both, "kimi")
    assert list(kimi["answer"]) == list(both["kimi_answer"])
    assert kimi.column_names == ["image", "question", "think", "answer", "annotator"]
    glm_config = load_dataset(str(release), "glm", split="train")
    assert len(select_traces(glm_config, "glm")) == len(select_traces(glm_config, EACH)) == len(glm_config)
    with pytest.raises(ValueError, match="holds traces of"):
        select_traces(glm_config, "kimi")
    with pytest.raises(ValueError, match="annotator must be one of"):
        select_traces(both, "qwen")
    verified = load_dataset(str(release), "verified", split="train")
    assert set(verified["annotator"]) == {"glm"} and len(verified) == len(glm_config)
    assert set(verified["label_verdict"]) == {"exact"}
    assert select_traces(verified, "glm")["think"] == verified["think"]


def test_rows_without_imagenet_think_columns_are_named():
    rows = Dataset.from_dict({"image_id": ["a"], "text": ["a finch"]})
    with pytest.raises(InputError, match=r"not ImageNet-Think rows: the columns \['image', 'question'"):
        select_traces(rows, EACH)


def _sft(*args: str) -> subprocess.CompletedProcess:
    """``python training/sft.py ARGS`` (no accelerate), without IMAGENET_THINK_DEBUG."""
    env = {key: value for key, value in os.environ.items() if key != "IMAGENET_THINK_DEBUG"}
    command = [sys.executable, str(REPO / "training" / "sft.py"), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _one_error_line(result: subprocess.CompletedProcess, prog: str, *names: str) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1 and all(name in errors[0] for name in names), result.stderr[-3000:]


def test_sft_names_a_recipe_typo_and_a_missing_dataset_without_a_traceback(tmp_path, capsys, monkeypatch):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(TINY_RECIPE.read_text(encoding="utf-8").replace("learning_rate:", "lerning_rate:"))
    typo = _sft("--config", str(recipe))
    _one_error_line(typo, "training/sft.py", str(recipe), "'lerning_rate'", "did you mean 'learning_rate'")
    # The script's entry again, in this process (the run above shows the script itself starts).
    missing = tmp_path / "no-such-release"
    monkeypatch.delenv("IMAGENET_THINK_DEBUG", raising=False)
    status = sft_main(
        ["--config", str(TINY_RECIPE), "--dataset_name", str(missing), "--output_dir", str(tmp_path)]
    )
    result = subprocess.CompletedProcess([], status, "", capsys.readouterr().err)
    _one_error_line(result, "training/sft.py", f"dataset_name {missing}: no such folder")
    monkeypatch.setenv("IMAGENET_THINK_DEBUG", "1")
    assert sft_main(["--config", str(recipe)]) == 1
    debug = capsys.readouterr().err
    assert "Traceback (most recent call last)" in debug
    assert "training/sft.py: error: " in debug.strip().splitlines()[-1]


def test_merge_names_a_folder_that_is_no_adapter(tmp_path, capsys):
    assert merge_main(["--adapter", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.startswith(f"training/merge.py: error: --adapter {tmp_path / 'nothing'}:")
    assert merge_main(["--adapter", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "is not a LoRA adapter" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_overlong_example_is_dropped_not_cut_and_labels_are_the_assistant_turn(processor):
    big, small = Image.new("RGB", (448, 448), "blue"), Image.new("RGB", (64, 48), "red")
    long_one = _rows([big], ["The bird is small."])
    long_example = to_example(big, QUESTION, "The bird is small.", "a finch")
    full = make_collator(processor)([dict(long_example)])
    assert _image_tokens(full, processor) == _expected_image_tokens(full, processor) == 16
    first_image_token = int(
        full["input_ids"][0].tolist().index(processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    )
    limit = first_image_token + 8  # a cut here would fall inside the image tokens ...
    cut = make_collator(processor, max_length=limit)([dict(long_example)])
    assert _image_tokens(cut, processor) < _expected_image_tokens(cut, processor)  # ... as TRL would truncate
    kept, counts = prepare_examples(long_one, processor, max_length=limit)
    assert len(kept) == 0 and counts == {"rows": 1, "shortened": 0, "dropped": 1}  # dropped instead

    rows = _rows([small, big], ["The bird is small.", SENTENCES * 8])
    short_length = make_collator(processor)(
        [dict(to_example(small, QUESTION, "The bird is small.", "a finch"))]
    )
    max_length = short_length["input_ids"].shape[1]
    kept, counts = prepare_examples(rows, processor, max_length=max_length)
    assert counts["dropped"] == 1 and list(kept["num_tokens"]) == [max_length]
    batch = make_collator(processor, max_length=max_length)([dict(kept[0])])  # the trainer's collator
    assert batch["input_ids"].shape[1] == max_length
    assert _image_tokens(batch, processor) == _expected_image_tokens(batch, processor)
    target = format_target("The bird is small.", "a finch")
    # The tokens with labels decode to the assistant turn and nothing else: no system, user or image token.
    assert trained_text(kept[0], make_collator(processor), processor.tokenizer) == target + "<|im_end|>\n"


def test_shorten_think_cuts_at_a_sentence_boundary(processor):
    image = Image.new("RGB", (448, 448), "blue")
    rows = _rows([image], [SENTENCES * 8])
    max_length = 120
    kept, counts = prepare_examples(rows, processor, max_length=max_length, policy="shorten_think")
    assert counts == {"rows": 1, "shortened": 1, "dropped": 0} and kept["num_tokens"][0] <= max_length
    think = parse_reasoning(kept[0]["completion"][0]["content"], "think_tags").think
    assert (SENTENCES * 8).startswith(think) and len(think) < len(SENTENCES * 8)
    assert think.endswith((".", "!", "?"))  # a whole number of sentences
    batch = make_collator(processor, max_length=max_length)([dict(kept[0])])
    assert _image_tokens(batch, processor) == _expected_image_tokens(batch, processor)
    kept, counts = prepare_examples(
        _rows([image], ["One long sentence " * 80]), processor, 120, "shorten_think"
    )
    assert len(kept) == 0 and counts["dropped"] == 1  # no sentence boundary fits: dropped


def test_template_check_catches_a_template_that_drops_the_think(processor, release, tmp_path):
    example = to_example(Image.new("RGB", (64, 48)), QUESTION, "The bird is small.", "a finch")
    check_think_reaches_labels(example, processor)
    template = tmp_path / "drops_think.jinja"
    template.write_text(THINK_DROPPING_TEMPLATE)
    args = parse_args(
        [
            *["--config", str(TINY_RECIPE), "--dataset_name", str(release)],
            *["--chat_template_path", str(template), "--output_dir", str(tmp_path / "out")],
        ]
    )
    with pytest.raises(ValueError, match="drops the think content from the assistant turn"):
        build_trainer(*args)


def test_lora_adapts_the_language_model_only(tiny_cache):
    path = resolve_model("tiny:qwen2_5_vl")  # its vision MLP has gate_proj/up_proj/down_proj too
    model_args = ModelConfig(
        model_name_or_path=path,
        use_peft=True,
        lora_target_modules=["gate_proj", "up_proj", "down_proj", "q_proj"],
    )
    peft_model = get_peft_model(
        AutoModelForImageTextToText.from_pretrained(path), peft_config_for(model_args, False)
    )
    adapted = {name for name, module in peft_model.named_modules() if hasattr(module, "lora_A")}
    assert len(adapted) == 2 * 4 and all(".language_model." in name for name in adapted)
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)

    for names, expected in ((["q_proj"], 2), (["all-linear"], None)):  # TRL passes one name as a string
        one = ModelConfig(model_name_or_path=path, use_peft=True, lora_target_modules=names)
        model = get_peft_model(AutoModelForImageTextToText.from_pretrained(path), peft_config_for(one, False))
        adapted = {name for name, module in model.named_modules() if hasattr(module, "lora_A")}
        assert adapted and all(".language_model." in name for name in adapted)
        assert len(adapted) == expected if expected else len(adapted) > 2 * 4

    with_vision = get_peft_model(
        AutoModelForImageTextToText.from_pretrained(path), peft_config_for(model_args, True)
    )
    assert any(".visual." in name for name, p in with_vision.named_parameters() if p.requires_grad)

    training_args = parse_args(["--config", str(TINY_RECIPE)])[1]
    full = load_model(path, ModelConfig(model_name_or_path=path), training_args, train_vision_tower=False)
    frozen = {name for name, p in full.named_parameters() if not p.requires_grad}
    assert frozen == {name for name, _ in full.named_parameters() if ".visual." in name} and frozen


def _launch(config: str, sft_args: list[str], *accelerate_args: str, env: dict | None = None) -> str:
    """``accelerate launch`` (fp32, a free port) of training/sft.py with the tiny recipe; its output."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    command = [str(ACCELERATE), "launch", "--main_process_port", port, "--mixed_precision", "no"]
    command += ["--config_file", str(REPO / "configs" / "accelerate" / config), *accelerate_args]
    command += [str(REPO / "training" / "sft.py"), "--config", str(TINY_RECIPE), *sft_args]
    result = subprocess.run(
        command, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def _losses(output: str) -> list[float]:
    losses = [float(value) for value in LOSS.findall(output)]
    assert losses and all(math.isfinite(loss) for loss in losses)
    return losses


def _greedy(model, processor, image, tokens: int = 12) -> list[int]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.slow
def test_one_process_trains_reloads_merges_and_serves(tiny_cache, release, tmp_path):

    out, merged = tmp_path / "adapter", tmp_path / "merged"
    output = _launch("single_gpu.yaml", ["--dataset_name", str(release), "--output_dir", str(out)])
    losses = _losses(output)
    assert len(losses) == 24 and sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.5, losses
    assert "train: 4 rows -> 4 examples; 0 dropped" in output

    image = Image.new("RGB", (64, 48), "red")
    processor = AutoProcessor.from_pretrained(out)
    assert processor.image_processor.size["longest_edge"] == 12544  # the recipe's max_pixels, saved
    base = AutoModelForImageTextToText.from_pretrained(base_model_of(out))
    base_tokens = _greedy(base, processor, image)
    adapter_tokens = _greedy(PeftModel.from_pretrained(base, out), processor, image)
    assert adapter_tokens and adapter_tokens != base_tokens  # the reloaded adapter is in effect
    assert merge_main(["--adapter", str(out), "--out", str(merged)]) == 0
    merged_tokens = _greedy(
        AutoModelForImageTextToText.from_pretrained(merged), AutoProcessor.from_pretrained(merged), image
    )
    assert merged_tokens == adapter_tokens

    result = vllm_greedy(merged, image, QUESTION, len(merged_tokens))
    assert list(result.outputs[0].token_ids) == merged_tokens


@pytest.mark.slow
def test_zero2_on_two_processes_without_the_shm_build(tiny_cache, release, tmp_path):
    extensions = tmp_path / "torch_extensions"  # empty: a compiled op would have to be built here
    # the label-verified subset: the recipe trains on the `verified` config as on any other
    sft = [
        "--dataset_name",
        str(release),
        "--dataset_config",
        "verified",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    sft += ["--max_steps", "6"]
    env = {"OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": str(extensions)}
    output = _launch("zero2.yaml", [*sft, "--ddp_backend", "gloo"], "--num_processes", "2", env=env)
    assert len(_losses(output)) == 6
    assert "train: 4 rows -> 4 examples" in output  # max_train_samples of the verified glm traces
    assert "shm_comm" not in output and not extensions.exists()
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "out" / "chat_template.jinja").is_file()
