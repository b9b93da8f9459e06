"""The lmms-eval task imagenet_think and harness prediction files, scored by `eval score`'s code.

lmms-eval runs as its own CLI (`python -m lmms_eval`) in a subprocess, on the tiny release of
tests/test_eval.py: with its `from_log` backend (outputs of every style, replayed) and its `vllm`
backend (a tiny Qwen2-VL through vLLM's CPU engine). Select with `-k lmms`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from common.model_refs import resolve_model
from eval.aggregate import score_against_references, segments, summarize
from eval.harness.lmms import AGGREGATIONS, METRIC_KEYS, TASK_DIR, TASK_FILE, metric_values
from eval.harness.outputs import HarnessOutput, split_output
from eval.metrics import PAPER_METRICS
from eval.predict import load_references
from generation.reasoning import detect_style
from imagenet_think_cli import main as cli
from imagenet_think_errors import InputError, MissingInputError, RefusedError, UsageError
from tests.test_eval import REFERENCES, release  # noqa: F401  (the tiny release fixture)

REPO = Path(__file__).resolve().parents[1]
lmms_eval = pytest.importorskip("lmms_eval")  # the `lmms` extra (make install has it)


@pytest.fixture(scope="module", autouse=True)
def _pil_left_as_found():
    """Importing ``lmms_eval.api.task`` sets PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` for the whole
    process; put back after this module, so that tests run after it in the same process still see
    truncated images refused (the sampler's ``truncated_file``)."""
    from PIL import ImageFile

    before = ImageFile.LOAD_TRUNCATED_IMAGES
    yield
    ImageFile.LOAD_TRUNCATED_IMAGES = before


# One output per test image (3), each in another style, with blank lines inside think and answer.
OUTPUTS = [
    "<think>Feathers and a long neck.\n\nIt stands in water.</think>\n<answer><|begin_of_box|>A goose."
    "<|end_of_box|></answer>",
    "◁think▷Four legs.\n\nA tail.◁/think▷It is a dog.\n\nA brown one, lying on grass.",
    "<think>It could be a bird, or a plane, and the budget ran out before",
]
THINKS = [
    "Feathers and a long neck.\n\nIt stands in water.",
    "Four legs.\n\nA tail.",
    "It could be a bird, or a plane, and the budget ran out before",
]
ANSWERS = ["A goose.", "It is a dog.\n\nA brown one, lying on grass.", ""]


def run_lmms_eval(cwd: Path, *args: str) -> tuple[dict, Path]:
    """lmms-eval's CLI with ``args``; its results and samples file (it exits 0 on errors too)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "lmms_eval", *args, "--log_samples", "--output_path", "out"]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    results = sorted((cwd / "out").rglob("*_results.json"))
    assert done.returncode == 0 and len(results) == 1, done.stdout[-3000:] + done.stderr[-3000:]
    samples = sorted((cwd / "out").rglob("*_samples_imagenet_think.jsonl"))
    assert len(samples) == 1
    return json.loads(results[0].read_text())["results"]["imagenet_think"], samples[0]


def task_folder(release_folder: Path, out: Path) -> Path:  # noqa: F811
    assert cli(["eval", "lmms-task", "--dataset", str(release_folder), "--out", str(out)]) == 0
    return out


def eval_score_values(samples: Path, out: Path, *extra: str) -> dict:
    assert (
        cli(["eval", "score", "--predictions", str(samples), "--out", str(out), "--no-agreement", *extra])
        == 0
    )
    return json.loads((out / "summary.json").read_text())


def test_lmms_outputs_split_by_detected_style():
    assert [detect_style(text) for text in OUTPUTS] == ["glm", "kimi", "glm"]
    assert detect_style("A goose.\n\nSurely.") == "plain" and detect_style("<answer>x</answer>") == "glm"
    split = [split_output(text) for text in OUTPUTS]
    assert [(p.think, p.answer) for p, _ in split] == list(zip(THINKS, ANSWERS, strict=True))
    assert [status for _, status in split] == ["closed", "closed", "open"]
    assert split_output("A goose.\n\nSurely.")[1] == "none" and split_output(None)[0].answer == ""
    assert split_output("<answer>A goose.</answer>")[0].answer == "A goose."


def test_lmms_glm_answers_decoded_without_special_tokens_split_alike(tiny_cache):
    """lmms-eval's vllm backend decodes with vLLM's default skip_special_tokens: GLM-4.1V's box
    markers (special tokens, as in the tiny GLM's tokenizer) are dropped, its think tags are not;
    the split output is the same either way."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny:glm4v"))
    ids = tokenizer.encode(OUTPUTS[0], add_special_tokens=False)
    kept, skipped = (tokenizer.decode(ids, skip_special_tokens=skip) for skip in (False, True))
    assert "<|begin_of_box|>" in kept and "<|begin_of_box|>" not in skipped and "</think>" in skipped
    assert split_output(kept) == split_output(skipped) == split_output(OUTPUTS[0])


def test_lmms_task_yaml_keeps_the_raw_output_and_lists_every_metric():
    """lmms-eval's own loader: no stop at blank lines, no think stripping (whatever the CLI's
    --reasoning_tags), one aggregation per metric of the task, named after it."""
    from lmms_eval.api.reasoning import parse_reasoning_tags_config
    from lmms_eval.api.task import TaskConfig
    from lmms_eval.utils import load_yaml_config

    config = load_yaml_config(str(TASK_DIR / TASK_FILE))
    task = TaskConfig(**config)
    assert task.generation_kwargs["until"] == []
    assert parse_reasoning_tags_config('[["<think>", "</think>"]]', task.reasoning_tags) is None
    assert [m["metric"] for m in config["metric_list"]] == list(METRIC_KEYS)
    for entry in config["metric_list"]:
        assert entry["aggregation"].__name__ == entry["metric"]
        assert entry["higher_is_better"] is METRIC_KEYS[entry["metric"]]
    assert task.dataset_name == "both" and task.test_split == "test"
    with pytest.raises(RefusedError, match="not of one split this process loaded"):
        AGGREGATIONS["coverage"]([HarnessOutput("n01_1", "n01", "text", "a split no process_docs saw")])


def test_lmms_task_folder_from_the_cli(release, tmp_path, capsys):  # noqa: F811
    assert cli(["eval", "lmms-task"]) == 0
    assert Path(capsys.readouterr().out.strip()) == TASK_DIR.resolve()
    folder = task_folder(release / "imagenet_think", tmp_path / "tasks")
    written = (folder / TASK_FILE).read_text()
    assert json.dumps(str(TASK_DIR / TASK_FILE)) in written
    assert json.dumps(str((release / "imagenet_think").resolve())) in written
    task_folder(release / "imagenet_think", folder)  # its own file: rewritten
    with pytest.raises(MissingInputError, match="not a release written by `imagenet-think build`"):
        cli(["eval", "lmms-task", "--dataset", str(tmp_path), "--out", str(tmp_path / "other")])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / TASK_FILE).write_text("task: my_own\n")
    with pytest.raises(RefusedError, match="was not written by `imagenet-think eval lmms-task`"):
        task_folder(release / "imagenet_think", tmp_path / "mine")
    assert (tmp_path / "mine" / TASK_FILE).read_text() == "task: my_own\n"
    with pytest.raises(UsageError, match="--dataset and --out together"):
        cli(["eval", "lmms-task", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "other").exists() and not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def replayed(release, tmp_path_factory):  # noqa: F811
    """lmms-eval with its from_log backend replaying OUTPUTS on the test split (the CLI's default
    --reasoning_tags on): its results and samples file."""
    work = tmp_path_factory.mktemp("lmms_from_log")
    task_folder(release / "imagenet_think", work / "tasks")
    log = {
        "args": {"model": "replayed", "model_args": "", "limit": None},
        "model_configs": {"task": "imagenet_think"},
        "time": "1207_1000",
        "logs": [{"doc_id": k, "resps": [[text]]} for k, text in enumerate(OUTPUTS)],
    }
    (work / "logs").mkdir()
    (work / "logs" / "replayed.json").write_text(json.dumps(log))
    return run_lmms_eval(
        work,
        "--include_path",
        "tasks",
        "--tasks",
        "imagenet_think",
        "--model",
        "from_log",
        "--model_args",
        "logs=logs",
    )


def test_lmms_task_scores_raw_outputs_of_every_style_as_eval_score_does(replayed, release, tmp_path):  # noqa: F811
    results, samples = replayed
    assert {key.partition(",")[0] for key in results if "_stderr" not in key and key != "alias"} == set(
        METRIC_KEYS
    )
    got = {key: results[f"{key},none"] for key in METRIC_KEYS}
    assert (
        got["coverage"] == 1.0
        and got["think_not_closed"] == pytest.approx(1 / 3)
        and got["think_absent"] == 0
    )

    # The same numbers from the metric suite on the outputs split by hand: the think and the blank
    # lines reached the task.
    rows = load_references(str(release / "imagenet_think"), "test")
    expected = summarize(
        score_against_references(
            segments(THINKS, ANSWERS),
            [segments(rows[f"{a}_think"], rows[f"{a}_answer"]) for a in REFERENCES],
            PAPER_METRICS,
        )
    )["scores"]
    for segment, by_metric in expected.items():
        for metric, entry in by_metric.items():
            assert got[f"{segment}_{metric}_avg"] == pytest.approx(entry["avg_of_avg"], abs=1e-6)
            assert got[f"{segment}_{metric}_max"] == pytest.approx(entry["avg_of_max"], abs=1e-6)
    assert got["answer_rougeL_avg"] > 0 and got["think_rougeL_avg"] > 0

    # `eval score` on the run's --log_samples file (release and split from the results file beside it).
    summary = eval_score_values(samples, tmp_path / "report")
    assert summary["images"] == {"expected": 3, "predicted": 3, "rejected": 0, "not_generated": 0}
    assert summary["outputs"] == {"closed": 2 / 3, "open": 1 / 3, "none": 0.0}
    assert (tmp_path / "report" / "tables.md").is_file() and (
        tmp_path / "report" / "per_example.parquet"
    ).is_file()
    for key, value in metric_values(summary).items():
        assert abs(value - got[key]) <= 1e-9, key


def test_lmms_vlmevalkit_prediction_files_score_like_the_lmms_log(replayed, release, tmp_path):  # noqa: F811
    """VLMEvalKit's file of the same outputs (SPLIT_THINK: think in `thinking`) gives the log's numbers."""
    _, samples = replayed
    dataset = str(release / "imagenet_think")
    from_log = eval_score_values(samples, tmp_path / "lmms")
    ids = load_references(dataset, "test")["image_id"]
    table = pd.DataFrame(
        {
            "index": range(3),
            "image_id": ids,
            "prediction": [OUTPUTS[0].partition("</think>")[2], OUTPUTS[1].partition("◁/think▷")[2], ""],
            "thinking": THINKS,
        }
    )
    table.to_excel(tmp_path / "model_ImageNetThink.xlsx", index=False)
    summary = eval_score_values(
        tmp_path / "model_ImageNetThink.xlsx", tmp_path / "vlmevalkit", "--dataset", dataset
    )
    assert summary["scores"] == from_log["scores"] and summary["label_accuracy"] == from_log["label_accuracy"]
    assert summary["model"] == "model_ImageNetThink"
    # Without SPLIT_THINK the raw outputs are in `prediction` (here a .tsv).
    table.assign(prediction=OUTPUTS).drop(columns="thinking").to_csv(
        tmp_path / "raw.tsv", sep="\t", index=False
    )
    raw = eval_score_values(tmp_path / "raw.tsv", tmp_path / "raw", "--dataset", dataset)
    assert raw["scores"] == from_log["scores"] and raw["outputs"] == from_log["outputs"]

    # A user's mistakes: another split's images, a file without image ids, no --dataset.
    table.to_csv(tmp_path / "three.csv", index=False)
    with pytest.raises(
        RefusedError, match=r"3 of its 3 images \(first [^)]+\) are not images of .* split 'train'"
    ):
        eval_score_values(tmp_path / "three.csv", tmp_path / "bad", "--dataset", dataset, "--split", "train")
    table.drop(columns="image_id").to_csv(tmp_path / "noid.csv", index=False)
    with pytest.raises(InputError, match="has no image_id column"):
        eval_score_values(tmp_path / "noid.csv", tmp_path / "bad", "--dataset", dataset)
    with pytest.raises(UsageError, match="pass --dataset"):
        eval_score_values(tmp_path / "raw.tsv", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_lmms_samples_files_that_are_not_the_tasks_are_refused(replayed, release, tmp_path):  # noqa: F811
    _, samples = replayed
    other = tmp_path / "20261207_000000_samples_imagenet_think.jsonl"
    other.write_text(json.dumps({"doc_id": 0, "filtered_resps": "text", "exact_match": 1.0}) + "\n")
    with pytest.raises(InputError, match="line 1 is not a document of the imagenet_think task"):
        eval_score_values(other, tmp_path / "bad", "--dataset", str(release / "imagenet_think"))
    moved = tmp_path / samples.name  # without the results file beside it that names the release
    moved.write_text(samples.read_text())
    with pytest.raises(UsageError, match="pass --dataset, the release the imagenet_think task ran on"):
        eval_score_values(moved, tmp_path / "bad")
    twice = tmp_path / "twice_samples_imagenet_think.jsonl"
    twice.write_text(samples.read_text() + samples.read_text())
    with pytest.raises(InputError, match="has two outputs for image"):
        eval_score_values(twice, tmp_path / "bad", "--dataset", str(release / "imagenet_think"))
    with pytest.raises(MissingInputError, match="does not exist"):
        eval_score_values(tmp_path / "gone.jsonl", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_lmms_eval_runs_a_tiny_model_through_vllm_and_eval_score_agrees(release, tiny_cache, tmp_path):  # noqa: F811
    """lmms-eval's vllm backend (vLLM's CPU engine) on 2 of the 3 test images: every metric in its
    results file, and `eval score` on its --log_samples file gives them to 1e-9."""
    task_folder(release / "imagenet_think", tmp_path / "tasks")
    model_args = ",".join(
        [
            f"model={resolve_model('tiny:qwen2_vl')}",
            "dtype=float32",
            "enforce_eager=True",
            "max_model_len=1024",
            "max_new_tokens=24",
            'limit_mm_per_prompt={"image":1,"video":0}',
        ]
    )
    results, samples = run_lmms_eval(
        tmp_path,
        *(
            "--include_path",
            "tasks",
            "--tasks",
            "imagenet_think",
            "--model",
            "vllm",
            "--model_args",
            model_args,
        ),
        *("--gen_kwargs", "max_new_tokens=24", "--limit", "2"),
    )
    got = {key: results[f"{key},none"] for key in METRIC_KEYS}
    assert got["coverage"] == pytest.approx(2 / 3)
    summary = eval_score_values(samples, tmp_path / "report")
    assert summary["images"] == {"expected": 3, "predicted": 2, "rejected": 0, "not_generated": 1}
    for key, value in metric_values(summary).items():
        assert abs(value - got[key]) <= 1e-9, key
