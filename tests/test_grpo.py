"""GRPO on a tiny VLM on the CPU: each reward on hand-written completions, the prompts, the image budget,
errors a person can act on, the direction of one policy-gradient step through the real trainer, and
real ``accelerate launch`` runs (one process with LoRA; ZeRO-3 on two, gloo) through reload and merge."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import load_dataset
from peft import PeftModel
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from common.classes import imagenet21k_classes
from common.model_refs import resolve_model
from eval.metrics import similarity
from generation.reasoning import parse_reasoning
from generation.verdicts.labels import label_verdicts
from generation.verdicts.quality import rejection_reason
from imagenet_think_errors import InputError
from tests.fixtures.small_release import labelled_release
from training.data import user_turn
from training.formatting import format_target, to_example
from training.grpo import PromptFormatter, build_trainer, main, parse_args, prompt_rows
from training.merge import main as merge_main
from training.model import cap_image, check_prompt_renders, load_processor
from training.rewards import (
    REWARDS,
    LabelReward,
    LengthReward,
    ReferenceSimilarityReward,
    RepetitionReward,
    ThinkFormatReward,
    build_rewards,
)

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "configs" / "grpo" / "tiny.yaml"
ACCELERATE = Path(sys.executable).with_name("accelerate")
LOG = re.compile(r"\{'loss': .*?\}")
END, PAD = 3002, 3000  # the tiny Qwen tokenizer's <|im_end|> and <|endoftext|>
ENDS = (END, PAD)
# A Qwen-style template that renders user and assistant turns only, as some families' templates do.
SYSTEM_DROPPING_TEMPLATE = (
    "{%- for message in messages if message.role != 'system' -%}<|im_start|>{{ message.role }}\n"
    "{%- for part in message.content -%}"
    "{%- if part.type == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- else -%}{{ part.text }}{%- endif -%}"
    "{%- endfor -%}<|im_end|>\n{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}"
)
# A loop as the release rejects it: one sentence repeated over the last 4,000 characters the check reads.
LOOP = "Wait, let me look at the beak again. " * 120
# Varied prose of about 1,100 characters (zlib keeps 57% of it).
PROSE = (
    "The photograph shows a small bird perched on a mossy branch against a blurred green background. "
    "Its breast is a warm orange that fades into a white belly, while the back carries dark streaks over "
    "buff feathers. The beak is short, conical and pale yellow, the kind of bill that cracks seeds rather "
    "than probing for insects. A black head with a faint grey collar suggests a male in breeding plumage. "
    "Wing bars are visible near the shoulder, and the rump looks whitish where the wings part slightly. "
    "Comparing these marks with finches of northern Europe, the chaffinch has a blue-grey crown and pink "
    "cheeks, which this bird lacks; the bullfinch is stockier with a rosy red chest. The orange shoulder "
    "patch and the white rump point instead to a brambling, a winter visitor that feeds on beech mast. "
    "Lighting comes from the upper left, so the colours are probably accurate, not a shadow artefact. "
    "Nothing in the scene contradicts that reading: the habitat, the size relative to the twigs, and the "
    "posture all fit. I am fairly confident, although a juvenile could look duller than this one does."
)


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _ids(n: int, ended: bool = True) -> list[int]:
    """Token ids of a completion of ``n`` tokens, ending with <|im_end|> or cut at the limit."""
    return [7] * (n - 1) + [END if ended else 7]


# Rewards on hand-written completions.


def test_label_reward_grades_each_verdict_kind_and_only_a_finished_answer():
    brambling, dog = "n01530575", "n02084071"
    cases = [  # (completion, wnid, expected kind)
        ("<think>\nSmall, orange breast.\n</think>\n\nA brambling.", brambling, "exact"),
        ("<think>\nFloppy ears.\n</think>\n\n<answer>a beagle</answer>", dog, "hyponym"),
        ("<think>\nA bird with a thick beak.\n</think>\n\nSome finch", brambling, "hypernym"),
        ("<think>\nWings.\n</think>\n\nIt is a bird", brambling, "hypernym"),
        ("<think>\nWhiskers.\n</think>\n\nA cat", dog, "other_class"),
        ("<think>\nHard to say.\n</think>\n\nxq zz", dog, "none"),
    ]
    texts, wnids, kinds = zip(*cases, strict=True)
    reward = LabelReward(ENDS)
    scores = reward([_assistant(t) for t in texts], wnid=list(wnids), completion_ids=[_ids(9)] * len(texts))
    verdicts = label_verdicts([t.split("</think>")[1] for t in texts], list(wnids))
    assert [v.kind for v in verdicts] == list(kinds)
    assert scores == [v.score for v in verdicts]
    assert scores[0] == scores[1] == 1.0 and scores[4] == scores[5] == 0.0
    assert 0 < scores[3] < scores[2] < 1  # "bird" is less specific than "finch"
    assert scores[2] == pytest.approx(13 / 14)

    named = "<think>\nIt is a brambling.\n</think>\n\nA brambling"
    unfinished = [
        (named, _ids(9, ended=False)),  # truncated at the length limit
        ("<think>\nIt is a brambling, a brambling", _ids(9)),  # think never closed
        ("A brambling", _ids(3)),  # no think at all: the answer is not in the format
    ]
    texts, ids = zip(*unfinished, strict=True)
    assert reward(list(texts), wnid=[brambling] * 3, completion_ids=list(ids)) == [0.0, 0.0, 0.0]
    logged = []
    reward([named], wnid=[brambling], completion_ids=[_ids(9)], log_metric=lambda k, v: logged.append((k, v)))
    assert logged == [("label/accuracy", 1.0)]


@pytest.mark.parametrize(
    ("text", "think_format", "score"),
    [
        ("<think>\nThe beak is short.\n</think>\n\na finch", "r1", 1.0),
        ("<think>The beak is short.</think><answer>a finch</answer>", "r1", 1.0),
        ("  <think>The beak is short.</think><answer>a finch</answer>", "glm", 1.0),
        ("<think>\nThe beak is short.\n</think>\n\na finch", "glm", 0.0),  # glm wants <answer>…</answer>
        ("The beak is short.\n</think>\n\na finch", "r1", 0.0),  # not opened
        ("a finch", "r1", 0.0),  # no think
        ("<think>\nThe beak is short.", "r1", 0.0),  # never closed
        ("<think>\n\n</think>\n\na finch", "r1", 0.0),  # empty think
        ("<think>\nThe beak is short.\n</think>\n\n", "r1", 0.0),  # empty answer
        ("<think>\nA.\n</think>\n<think>\nB.\n</think>\n\na finch", "r1", 0.0),  # two thinks
        ("Preamble <think>\nThe beak.\n</think>\n\na finch", "r1", 0.0),  # text before the think
    ],
)
def test_think_format_reward(text, think_format, score):
    reward = ThinkFormatReward(think_format, ENDS)
    assert reward([_assistant(text)], completion_ids=[_ids(12)]) == [score]
    assert reward([text], completion_ids=[_ids(12, ended=False)]) == [0.0]  # truncated: always 0


def test_think_format_reward_when_the_template_opens_the_think():
    text = "The beak is short.\n</think>\n\na finch"
    assert ThinkFormatReward("r1", ENDS, opened_in_prompt=True)([text], completion_ids=[_ids(9)]) == [1.0]
    assert ThinkFormatReward("r1", ENDS, opened_in_prompt=False)([text], completion_ids=[_ids(9)]) == [0.0]
    with pytest.raises(InputError, match="unknown think_format"):
        ThinkFormatReward("chatml")


def test_repetition_reward_is_the_releases_loop_check():
    completions = {
        "loop in the think": f"<think>\n{PROSE}{LOOP}\n</think>\n\na finch",
        "loop in the answer": f"<think>\n{PROSE}\n</think>\n\n{LOOP}",
        "loop, truncated": f"<think>\n{PROSE}{LOOP}",
        "no tags, looping": LOOP,
        "long prose": f"<think>\n{PROSE}\n</think>\n\na finch",
        "short repetition": "<think>\n" + "finch " * 30 + "\n</think>\n\nfinch",  # under 1,000 characters
    }
    scores = RepetitionReward()([_assistant(text) for text in completions.values()])
    assert dict(zip(completions, scores, strict=True)) == {
        "loop in the think": -1.0,
        "loop in the answer": -1.0,
        "loop, truncated": -1.0,
        "no tags, looping": -1.0,
        "long prose": 0.0,
        "short repetition": 0.0,
    }
    for text, score in zip(completions.values(), scores, strict=True):  # one definition with the release's
        parsed = parse_reasoning(text, "think_tags")
        release = rejection_reason(True, "stop", parsed.think, parsed.answer or "a finch")
        assert (release == "repetition_loop") == (score == -1.0)


def test_length_reward_is_dapos_soft_overlong_penalty():
    reward = LengthReward(max_completion_length=100, overlong_buffer=20)
    lengths = [1, 80, 85, 90, 100]
    scores = reward(["x"] * len(lengths), completion_ids=[[5] * n for n in lengths])
    assert scores == pytest.approx([0.0, 0.0, -0.25, -0.5, -1.0])
    with pytest.raises(InputError, match="overlong_buffer"):
        LengthReward(max_completion_length=100, overlong_buffer=101)


def test_reference_similarity_is_the_best_lexical_similarity_to_the_annotators_traces():
    references = [
        format_target("The bird has a short beak.", "a finch"),
        format_target("Grey wings.", "a goose"),
    ]
    completions = [references[0], "<think>\nGrey wings, a goose\n</think>\n\na goose", "xq zz"]
    reward = ReferenceSimilarityReward("rougeL")
    scores = reward([_assistant(c) for c in completions], references=[references] * 3)
    assert scores[0] == pytest.approx(1.0) and scores[2] == 0.0
    expected = max(similarity("rougeL", [completions[1]] * 2, references))
    assert scores[1] == pytest.approx(expected) and 0 < expected < 1
    assert reward(["a goose"], references=[[]]) == [0.0]  # an image without references
    with pytest.raises(InputError, match="lexical metric"):
        ReferenceSimilarityReward("bertscore_f1")


def test_build_rewards_names_and_errors():
    rewards = build_rewards(list(REWARDS), end_ids=ENDS, max_completion_length=64, overlong_buffer=16)
    assert [reward.__name__ for reward in rewards] == list(REWARDS)  # the names TRL logs them under
    with pytest.raises(InputError, match=r"unknown reward 'lable' \(did you mean 'label'\?\)"):
        build_rewards(["lable"])
    with pytest.raises(InputError, match="names a reward twice"):
        build_rewards(["label", "label"])
    with pytest.raises(InputError, match="reward_funcs is empty"):
        build_rewards([])


# Prompts and images.


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A release of 12 images of two classes (8 in train) with glm and kimi records; glm's answers name
    the class (all verified), kimi's are random words."""
    return labelled_release(tmp_path_factory.mktemp("release"))


def test_prompt_rows_one_per_image_with_the_annotators_references(release):
    both = load_dataset(str(release), "both", split="train")
    rows = prompt_rows(both, "each", "r1")
    assert rows.column_names == ["image", "question", "wnid", "references"] and len(rows) == len(both)
    assert rows["wnid"] == both["wnid"]
    first = both[0]
    assert rows[0]["references"] == [
        format_target(first["glm_think"], first["glm_answer"]),
        format_target(first["kimi_think"], first["kimi_answer"]),
    ]
    kimi = prompt_rows(both, "kimi", "glm")
    assert kimi[0]["references"] == [format_target(first["kimi_think"], first["kimi_answer"], "glm")]
    glm = load_dataset(str(release), "glm", split="train")
    assert prompt_rows(glm, "glm")[0]["references"] == [format_target(glm[0]["think"], glm[0]["answer"])]
    with pytest.raises(InputError, match="holds traces of"):
        prompt_rows(glm, "kimi")
    verified = load_dataset(str(release), "verified", split="train")  # a row per verified trace
    assert len(prompt_rows(verified, "glm")) == len(prompt_rows(verified)) == len(glm)
    with pytest.raises(InputError, match="annotator must be one of"):
        prompt_rows(both, "qwen")
    with pytest.raises(InputError, match=r"not ImageNet-Think rows: the columns \['wnid'"):
        prompt_rows(both.remove_columns("wnid"))


def test_capped_image_makes_the_same_tokens_under_a_larger_budget(tiny_cache):
    """An image resized by ``cap_image`` is kept as it is by the capped processor and by the model's
    own (the budget a vLLM engine built from the model folder has), so both count the same image tokens."""
    path = resolve_model("tiny:qwen2_vl")
    capped = load_processor(path, 6272, None)  # 8 merged patches of 28 x 28 pixels
    larger = load_processor(path, None, None)  # 12,544 pixels
    for size in ((640, 480), (75, 300), (97, 61), (20, 20), (900, 30)):
        image = cap_image(Image.new("CMYK", size, (10, 20, 30, 0)), capped.image_processor)
        width, height = image.size
        assert image.mode == "RGB" and width % 28 == 0 and height % 28 == 0 and 3136 <= width * height <= 6272
        grid = capped.image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
        assert torch.equal(
            grid, larger.image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
        )
        assert grid[0, 1] * 14 == height and grid[0, 2] * 14 == width
    assert user_turn("What is it?", "Think first.")[0] == {
        "role": "system",
        "content": [{"type": "text", "text": "Think first."}],
    }
    assert [m["role"] for m in user_turn("What is it?", "")] == ["user"]


def test_the_grpo_prompt_is_the_sft_user_turn(tiny_cache, release):
    """One user turn for both recipes: an SFT student is asked in GRPO what it was trained on."""
    processor = load_processor(resolve_model("tiny:qwen2_vl"), 12544, None)
    rows = prompt_rows(load_dataset(str(release), "both", split="train"))
    bare = rows.with_transform(PromptFormatter(processor.image_processor, ""))[0]
    assert bare["prompt"] == to_example(bare["image"], rows[0]["question"], "t", "a")["prompt"]
    system = rows.with_transform(PromptFormatter(processor.image_processor, "Think first."))[0]
    assert system["prompt"] == [user_turn("", "Think first.")[0], *bare["prompt"]]
    text = check_prompt_renders(system["prompt"], system["image"], processor)
    assert "Think first." in text and rows[0]["question"] in text
    with pytest.raises(InputError, match="drops the system turn's text"):
        processor.chat_template = SYSTEM_DROPPING_TEMPLATE
        check_prompt_renders(system["prompt"], system["image"], processor)


# Errors a person can act on.


def test_mistakes_are_one_error_line_naming_the_input(tmp_path, capsys, release):
    def error(*argv: str) -> str:
        assert main(["--config", str(TINY_RECIPE), "--output_dir", str(tmp_path / "out"), *argv]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert (
            lines and lines[-1].startswith("training/grpo.py: error: ") and "Traceback" not in "".join(lines)
        )
        return lines[-1]

    dataset = ["--dataset_name", str(release)]
    assert "unknown reward 'lable' (did you mean 'label'?)" in error(
        *dataset, "--reward_funcs", "lable", "think_format", "--reward_weights", "1", "1"
    )
    assert "reward_weights [1.0, 1.0] has 2 values for the 3 reward_funcs" in error(
        *dataset, "--reward_funcs", "label", "think_format", "repetition", "--reward_weights", "1", "1"
    )
    missing = tmp_path / "no-such-release"
    assert f"dataset_name {missing}: no such folder" in error("--dataset_name", str(missing))
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(TINY_RECIPE.read_text(encoding="utf-8").replace("reward_weights:", "reward_weight:"))
    assert main(["--config", str(recipe)]) == 1
    assert "unknown key 'reward_weight' (did you mean 'reward_weights'?)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# The direction of one policy-gradient step, through the real trainer.


def _completion_logps(model, processor, prompt, image, completions: list[list[int]]) -> list[float]:
    """log p(completion | prompt, image) under ``model``, summed over the completion's tokens."""
    text = processor.apply_chat_template(prompt, add_generation_prompt=True)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    prompt_length = inputs["input_ids"].shape[1]
    logps = []
    model.eval()
    with torch.no_grad():
        for ids in completions:
            completion = torch.tensor([ids])
            input_ids = torch.cat([inputs["input_ids"], completion], dim=1)
            logits = model(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                mm_token_type_ids=torch.cat(
                    [inputs["mm_token_type_ids"], torch.zeros_like(completion)], dim=1
                ),
                pixel_values=inputs["pixel_values"],
                image_grid_thw=inputs["image_grid_thw"],
            ).logits[0, prompt_length - 1 : -1]
            logps.append(
                float(torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(ids)[:, None]).sum())
            )
    return logps


def _one_step_on_fixed_completions(release, tmp_path, weights: list[str]):
    """One GRPO step of the tiny recipe on one prompt whose group of 4 completions is fixed (TRL's
    ``rollout_func`` returns them instead of sampling), rewarded by ``label`` and ``think_format``."""
    args = parse_args(
        [
            *["--config", str(TINY_RECIPE), "--dataset_name", str(release), "--output_dir", str(tmp_path)],
            *["--max_train_samples", "1", "--max_steps", "1", "--per_device_train_batch_size", "4"],
            *["--reward_funcs", "label", "think_format", "--reward_weights", *weights],
            *["--learning_rate", "1e-3", "--logging_steps", "1"],
        ]
    )
    holder = {}

    def rollout(prompts, trainer):
        ids = trainer.processing_class.apply_chat_template(
            prompts, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        group = holder["group"]
        return {
            "prompt_ids": ids,
            "completion_ids": [group[i % 4] for i in range(len(prompts))],
            "logprobs": None,
        }

    trainer = build_trainer(*args, rollout_func=rollout)
    tokenizer = trainer.processing_class.tokenizer
    row = trainer.train_dataset[0]
    name = imagenet21k_classes().name(row["wnid"])

    def encode(text: str, ended: bool = True) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] + (
            [tokenizer.eos_token_id] if ended else []
        )

    holder["group"] = [
        encode(f"<think>\nIt has feathers.\n</think>\n\n{name}"),  # best: label 1, format 1
        encode("<think>\nIt has feathers.\n</think>\n\nxq zz"),  # label 0 (none), format 1
        encode(name),  # no think: label 0, format 0
        encode("<think>\nIt has feathers and", ended=False),  # truncated: 0, 0
    ]
    model = trainer.model
    before = _completion_logps(model, trainer.processing_class, row["prompt"], row["image"], holder["group"])
    trainer.train()
    after = _completion_logps(model, trainer.processing_class, row["prompt"], row["image"], holder["group"])
    logs = trainer.state.log_history[0]
    trainer.end()
    return before, after, logs


def test_one_grpo_step_raises_the_best_completion_over_the_worst(tiny_cache, release, tmp_path):
    before, after, logs = _one_step_on_fixed_completions(release, tmp_path / "a", ["1.0", "1.0"])
    assert logs["rewards/label/mean"] == pytest.approx(0.25) and logs["rewards/think_format/mean"] == 0.5
    assert logs["reward"] == pytest.approx(0.75) and logs["grad_norm"] > 0
    gain = [a - b for a, b in zip(after, before, strict=True)]
    assert gain[0] > gain[1] > max(gain[2], gain[3]), gain  # rewards 2, 1, 0, 0
    assert gain[0] - gain[3] > 0.05, gain

    # Negative weights reward the opposite: the same step lowers the best completion below the worst.
    before, after, logs = _one_step_on_fixed_completions(release, tmp_path / "b", ["-1.0", "-1.0"])
    assert logs["reward"] == pytest.approx(-0.75)
    gain = [a - b for a, b in zip(after, before, strict=True)]
    assert gain[0] < gain[1] < min(gain[2], gain[3]), gain


# Real launches.


def _launch(config: str, grpo_args: list[str], *accelerate_args: str, env: dict | None = None) -> str:
    """``accelerate launch`` (fp32, a free port) of training/grpo.py with the tiny recipe; its output."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    command = [str(ACCELERATE), "launch", "--main_process_port", port, "--mixed_precision", "no"]
    command += ["--config_file", str(REPO / "configs" / "accelerate" / config), *accelerate_args]
    command += [str(REPO / "training" / "grpo.py"), "--config", str(TINY_RECIPE), *grpo_args]
    result = subprocess.run(
        command, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def _step_logs(output: str, out: Path, steps: int) -> list[dict]:
    """The per-step logs, printed and saved (trainer_state.json): every reward, every step."""
    printed = [log for log in LOG.findall(output) if "rewards/" in log]
    saved = [
        log for log in json.loads((out / "trainer_state.json").read_text())["log_history"] if "reward" in log
    ]
    assert len(printed) == len(saved) == steps
    for log in saved:
        for name in REWARDS:
            assert math.isfinite(log[f"rewards/{name}/mean"]) and math.isfinite(log[f"rewards/{name}/std"])
    assert all(log["rewards/length/mean"] <= 0 and log["rewards/repetition/mean"] <= 0 for log in saved)
    assert any(log["grad_norm"] > 0 for log in saved)  # some group's rewards differed: an update
    return saved


def _logits(model, processor, image) -> torch.Tensor:
    prompt = user_turn("What is in the image?")
    text = processor.apply_chat_template(prompt, add_generation_prompt=True)
    with torch.no_grad():
        return model(**processor(text=[text], images=[image], return_tensors="pt")).logits


@pytest.mark.slow
def test_one_process_trains_logs_each_reward_reloads_and_merges(tiny_cache, release, tmp_path):
    out, merged = tmp_path / "adapter", tmp_path / "merged"
    output = _launch("single_gpu.yaml", ["--dataset_name", str(release), "--output_dir", str(out)])
    assert "train: 8 prompts" in output
    _step_logs(output, out, steps=4)

    image = Image.new("RGB", (64, 48), "red")
    processor = AutoProcessor.from_pretrained(out)
    assert processor.image_processor.size["longest_edge"] == 12544  # the recipe's max_pixels, saved
    base = AutoModelForImageTextToText.from_pretrained(resolve_model("tiny:qwen2_vl")).eval()
    base_logits = _logits(base, processor, image)
    adapter = PeftModel.from_pretrained(base, out).eval()
    adapter_logits = _logits(adapter, processor, image)
    assert (adapter_logits - base_logits).abs().max() > 1e-4  # the reloaded adapter is in effect
    assert merge_main(["--adapter", str(out), "--out", str(merged)]) == 0
    merged_model = AutoModelForImageTextToText.from_pretrained(merged).eval()
    assert torch.allclose(_logits(merged_model, processor, image), adapter_logits, atol=1e-4)


@pytest.mark.slow
def test_zero3_on_two_processes_trains_the_full_model(tiny_cache, release, tmp_path):
    out, extensions = tmp_path / "out", tmp_path / "torch_extensions"
    grpo = [
        "--dataset_name",
        str(release),
        "--output_dir",
        str(out),
        "--use_peft",
        "false",
        "--ddp_backend",
        "gloo",
    ]
    env = {"OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": str(extensions)}
    output = _launch("zero3.yaml", grpo, "--num_processes", "2", env=env)
    _step_logs(output, out, steps=4)
    assert "shm_comm" not in output and not extensions.exists()

    image = Image.new("RGB", (64, 48), "red")
    processor = AutoProcessor.from_pretrained(out)
    trained = AutoModelForImageTextToText.from_pretrained(out).eval()  # one 16-bit checkpoint, gathered
    base = AutoModelForImageTextToText.from_pretrained(resolve_model("tiny:qwen2_vl")).eval()
    assert (_logits(trained, processor, image) - _logits(base, processor, image)).abs().max() > 1e-4
    frozen = [name for name, _ in base.named_parameters() if ".visual." in name]
    trained_state, base_state = trained.state_dict(), base.state_dict()
    assert frozen and all(torch.equal(trained_state[name], base_state[name]) for name in frozen)
