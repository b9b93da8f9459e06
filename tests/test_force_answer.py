"""Answer forcing (``on_truncation: force_answer``) on the real vLLM CPU engine with the tiny models:
truncated generations get their think closed with the style's delimiter and an answer from a second,
batched pass over the same image; a chunk is committed only with both passes, so a run SIGKILLed
between them or at any moment resumes exactly (the suite's kill-and-resume test); the config keys are
checked like every other."""

import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from generation.annotator import Annotator
from generation.config import load_model_config
from generation.generate import generate
from generation.images import load_rgb
from generation.reasoning import STYLES
from generation.records import RECORD_SCHEMA, REJECT_SCHEMA, Reject, iter_rows, read_manifest, to_table
from generation.run_check import check_run, completed_chunks
from generation.runs import RUN_FILE, chunk_files, claim_run_dir, commit_chunk, plan_run
from imagenet_think_errors import InputError, RefusedError
from tests.fixtures.synthetic import write_manifest_tree

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs" / "generation"
# A budget the tiny random models always hit with the think open (they rarely close it at all); the
# first pass's min_tokens is above the second pass's budget, which the second pass does not inherit.
FORCING = [
    "sampling.max_tokens=8",
    "sampling.min_tokens=8",
    "on_truncation=force_answer",
    "force_answer_max_tokens=6",
]
RECORD_FIELDS = (
    "image_id",
    "output",
    "think",
    "answer",
    "think_closed",
    "finish_reason",
    "num_output_tokens",
    "forced_answer",
    "num_first_pass_tokens",
    "num_second_pass_tokens",
    "second_pass_finish_reason",
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    path, _ = write_manifest_tree(tmp_path_factory.mktemp("force-answer"), classes=2, per_class=3)
    return path


@pytest.fixture(scope="module")
def engines() -> dict[str, Annotator]:
    """One forcing annotator per tiny config, started when first needed and shared by the tests."""
    return {}


def _annotator(engines: dict[str, Annotator], name: str) -> Annotator:
    if name not in engines:
        engines[name] = Annotator(load_model_config(CONFIGS / f"{name}.yaml", FORCING))
    return engines[name]


def _records(run_dir: Path) -> list[dict]:
    return list(iter_rows(check_run(run_dir).record_files))


@pytest.mark.parametrize("name", ["tiny_glm", "tiny_kimi"])
def test_truncated_thinks_are_closed_and_answered_from_the_same_image(manifest, tmp_path, engines, name):
    config = load_model_config(CONFIGS / f"{name}.yaml", [*FORCING, "chunk_size=4"])
    force = STYLES[config.parse_style].force
    annotator = _annotator(engines, name)
    summary = generate(config, manifest, tmp_path / "run", limit=4, annotator=annotator)
    records = _records(tmp_path / "run")
    assert len(records) == 4 and summary.forced == 4
    assert any(line.startswith("answers forced (on_truncation: force_answer): 4") for line in summary.lines())
    table, root = read_manifest(manifest)
    paths = dict(zip(table["image_id"].to_pylist(), table["image_path"].to_pylist(), strict=True))
    others = 0
    for record in records:
        # The first pass hit max_tokens with the think open; the forcing closed it and an answer followed.
        assert record["finish_reason"] == "length" and record["forced_answer"]
        assert record["think_closed"] and record["think"] and record["answer"]
        assert record["num_first_pass_tokens"] == 8
        assert 1 <= record["num_second_pass_tokens"] <= 6
        assert record["num_output_tokens"] == 8 + record["num_second_pass_tokens"]
        assert record["second_pass_finish_reason"] in {"stop", "length"}
        first_text, delimiter, second_text = record["output"].partition(force)
        assert delimiter and record["think"] == first_text.strip()
        # The first pass is the generation `keep` records: the same conversation, unchanged.
        image = load_rgb(root / paths[record["image_id"]])
        first = annotator._chat([annotator._messages(image)])[0]
        assert first.outputs[0].text == first_text and first.outputs[0].finish_reason == "length"
        # The second pass continued it with the same image: redone by hand it gives the same text,
        # and with another image (the next record's) it would have given another.
        from vllm.inputs import TokensPrompt

        prompt = [*first.prompt_token_ids, *first.outputs[0].token_ids, *annotator.force_ids]
        other = load_rgb(root / paths[next(r["image_id"] for r in records if r is not record)])
        same, swapped = annotator.llm.generate(
            [
                TokensPrompt(prompt_token_ids=prompt, multi_modal_data={"image": image}),
                TokensPrompt(prompt_token_ids=prompt, multi_modal_data={"image": other}),
            ],
            annotator.force_params,
            use_tqdm=False,
        )
        assert same.outputs[0].text == second_text
        others += swapped.outputs[0].text != second_text
    assert others, "another image never changed the continuation: the check above cannot tell images apart"


def _kill_between_passes(command: list[str], passes_before_kill: int) -> tuple[int, str]:
    """Run ``command`` and SIGKILL it as soon as its ``passes_before_kill``-th second pass starts
    (the annotator logs each before it runs it); returns the exit status and what it printed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seen, lines = 0, []
    deadline = time.monotonic() + 300
    for line in process.stderr:
        lines.append(line)
        if "forcing their answers" in line:
            seen += 1
            if seen == passes_before_kill:
                process.send_signal(signal.SIGKILL)
                break
        if time.monotonic() > deadline:
            break
    process.kill()
    process.wait()
    return process.returncode, "".join(lines)


def _stop_after_a_commit(command: list[str], run: Path, delay: float, signum: int, log: Path) -> int:
    """Run ``command`` and send it ``signum`` ``delay`` seconds after it commits a chunk: inside the
    next chunk's first or second pass, or while it writes it. Its stderr goes to ``log`` (a pipe
    would fill with the progress bar); returns its exit status."""
    before = len(completed_chunks(run))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None and len(completed_chunks(run)) <= before:
            time.sleep(0.05)
        time.sleep(delay)
        assert process.poll() is None, f"generate ended before it was stopped: {log.read_text()[-2000:]}"
        process.send_signal(signum)
        return process.wait(timeout=120)


def _resume_words(log: Path) -> list[str]:
    """The resume command of the one line SIGTERM makes `generate` log (after the progress bar's last
    state, which ends in a carriage return), without a traceback."""
    stderr = log.read_text()
    assert "Traceback" not in stderr, stderr[-2000:]
    (line,) = [line for line in stderr.splitlines() if "SIGTERM" in line]
    resume = re.search(
        r"stopped by SIGTERM \(a pre-emption\?\): the committed chunks are kept; resume with `(.*)`$", line
    )
    assert resume, line
    words = shlex.split(resume.group(1))
    assert words[:2] == ["imagenet-think", "generate"]
    return words


def test_a_run_killed_between_the_passes_and_at_random_moments_resumes_exactly(tmp_path, engines):
    """The kill-and-resume test: `imagenet-think generate` with answer forcing is SIGKILLed as a
    chunk's second pass starts, then stopped at random moments by SIGKILL and by SIGTERM (SLURM's
    pre-emption: one line naming the resume command, exit 143); that command resumes it, redoing no
    committed chunk, and writes exactly what an uninterrupted run writes, each image once, no
    temporary file or torn shard left."""
    # 12 images in 12 chunks: a run cannot finish the half dozen or more left in the tenth of a second a kill waits.
    manifest, _ = write_manifest_tree(tmp_path, classes=3, per_class=4)
    run = tmp_path / "run"
    overrides = [*FORCING, "chunk_size=1"]
    arguments = ["--config", str(CONFIGS / "tiny_glm.yaml"), "--manifest", str(manifest), "--out", str(run)]
    arguments += ["--set", *overrides]
    command = [sys.executable, "-m", "imagenet_think_cli", "generate", *arguments]
    status, printed = _kill_between_passes(command, passes_before_kill=2)
    assert status == -signal.SIGKILL, printed[-2000:]
    # Chunk 0 is committed; chunk 1 had its first pass done, its second running: nothing of it is written.
    assert completed_chunks(run) == {0}
    assert not any(path.exists() for path in chunk_files(run, 1))
    assert _stop_after_a_commit(command, run, 0.0, signal.SIGTERM, tmp_path / "term.log") == 143
    words = _resume_words(tmp_path / "term.log")
    delay = random.Random(1234).uniform(0.0, 0.1)  # a chunk commits every 50-100 ms here
    assert _stop_after_a_commit(command, run, delay, signal.SIGKILL, tmp_path / "kill.log") == -signal.SIGKILL
    assert shlex.join(arguments) in shlex.join(words)  # the command that was stopped (and its defaults)
    committed = {
        index: os.stat(run / f"commit-c{index:07d}.json").st_mtime_ns for index in completed_chunks(run)
    }
    assert committed and len(committed) < 12
    # The resume, by the command it named (in another process: a second engine here would tear down
    # the distributed state this process's engines share).
    resumed = subprocess.run(
        [sys.executable, "-m", "imagenet_think_cli", *words[1:]], cwd=REPO, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    state = check_run(run)
    assert sorted(state.done) == list(range(12)) and not state.not_counted and state.images_done == 12
    assert all(os.stat(run / f"commit-c{i:07d}.json").st_mtime_ns == when for i, when in committed.items())
    ids = [r["image_id"] for r in _records(run)] + [r["image_id"] for r in iter_rows(state.reject_files)]
    assert sorted(ids) == sorted(read_manifest(manifest)[0]["image_id"].to_pylist())  # each image once
    assert not list(run.glob(".tmp-*"))
    for shard in run.glob("*.parquet"):
        pq.read_table(shard)  # no torn shard
    # Exactly what an uninterrupted run writes (greedy decoding: the same texts and counts).
    config = load_model_config(CONFIGS / "tiny_glm.yaml", overrides)  # the command's config
    generate(config, manifest, tmp_path / "reference", annotator=_annotator(engines, "tiny_glm"))
    rows = lambda run: sorted(tuple(r[f] for f in RECORD_FIELDS) for r in _records(run))  # noqa: E731
    assert rows(run) == rows(tmp_path / "reference")
    assert all(record["forced_answer"] for record in _records(run))


FORCE_MISTAKES = [
    # (overrides, text the message must hold)
    (
        ["on_truncation=force_anwser"],
        ["--set on_truncation=force_anwser", "not one of keep, force_answer", "did you mean 'force_answer'"],
    ),
    (["force_answer_max_tokens=0"], ["force_answer_max_tokens must be a whole number >= 1"]),
    (["force_answer_max_tokens=many"], ["force_answer_max_tokens must be a whole number >= 1"]),
    (["on_truncation=force_answer", "parse_style=plain"], ["parse_style 'plain' has no think"]),
    (
        ["on_truncation=force_answer", "structured_output_regex=<think>[a-z]+</think>"],
        ["structured_output_regex (a pattern for the whole output) cannot follow"],
    ),
    (
        ["on_truncation=force_answer", "force_answer_max_tokens=1000"],
        ["engine.max_model_len 1024 cannot hold sampling.max_tokens 48 plus force_answer_max_tokens 1000"],
    ),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), FORCE_MISTAKES, ids=[" ".join(o) for o, _ in FORCE_MISTAKES]
)
def test_force_answer_settings_are_checked_before_anything_runs(overrides, expected):
    with pytest.raises(InputError) as raised:
        load_model_config(CONFIGS / "tiny_glm.yaml", overrides)
    for text in expected:
        assert text in str(raised.value)


def test_a_run_pinned_before_the_keys_existed_resumes_with_their_defaults(manifest, tmp_path):
    config = load_model_config(CONFIGS / "tiny_glm.yaml")
    plan = plan_run(manifest, 2)
    run = tmp_path / "run"
    claim_run_dir(run, config, plan)
    spec = json.loads((run / RUN_FILE).read_text())
    for key in ("on_truncation", "force_answer_max_tokens"):
        del spec["config"][key]  # as an older toolkit wrote it
    (run / RUN_FILE).write_text(json.dumps(spec))
    chunk = plan.chunks[0]  # committed (all rejects, no engine needed): the folder is pinned now
    rejects = [Reject(t.image_id, t.image_path, "generate", "glm", "engine_error", "x") for t in chunk.tasks]
    commit_chunk(run, 0, to_table([], RECORD_SCHEMA), to_table(rejects, REJECT_SCHEMA), chunk.image_ids)
    claim_run_dir(run, config, plan)  # the same config: keep and 1024 are the defaults
    forcing = load_model_config(CONFIGS / "tiny_glm.yaml", FORCING)
    with pytest.raises(RefusedError, match="another config"):
        claim_run_dir(run, forcing, plan)
