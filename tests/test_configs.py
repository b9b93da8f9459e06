"""What the shipped configs and launch scripts promise: a baseline's question in its authors' order,
a config's question template checked like any other key, and a one-node launch whose failed worker
fails the launch."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from generation.config import load_model_config
from generation.prompts import load_question
from imagenet_think_errors import InputError

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "configs" / "launch" / "generate_one_node.sh"


def test_r1_onevision_gets_its_authors_hint_before_the_question():
    config = load_model_config(REPO / "configs" / "models" / "r1_onevision_7b.yaml")
    hint = "Hint: Please answer the question and provide the final answer at the end."
    assert config.question == f"{hint} Question: {load_question('paper')}"


@pytest.mark.parametrize("template", ["no placeholder", "'Q: {question} and {question}'"])
def test_a_question_template_needs_exactly_one_placeholder(template):
    with pytest.raises(InputError, match=r"--set question_template=.*must be a text with \{question\} once"):
        load_model_config(
            REPO / "configs" / "models" / "tiny_baseline.yaml", [f"question_template={template}"]
        )


def _fake_cli(folder: Path, failing_shard: str) -> Path:
    """An ``imagenet-think`` on PATH that logs its arguments and fails for one shard index."""
    calls = folder / "calls.txt"
    script = folder / "imagenet-think"
    script.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {calls}\n'
        'for ((i = 1; i <= $#; i++)); do if [[ "${!i}" == --shard-index ]]; then j=$((i + 1)); shard=${!j}; fi; done\n'
        f'if [[ "$shard" == "{failing_shard}" && "$*" != *"--num-shards 1 "* ]]; then echo boom >&2; exit 3; fi\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return calls


@pytest.mark.parametrize("failing", ["1", "none"])
def test_one_node_launch_fails_when_a_worker_fails(tmp_path, failing):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = _fake_cli(bin_dir, failing)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "NUM_GPUS": "3"}
    done = subprocess.run(
        ["bash", str(LAUNCH), "c.yaml", "m.parquet", str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = calls.read_text().splitlines()
    if failing == "none":
        assert done.returncode == 0, done.stderr
        assert len(lines) == 4 and "--num-shards 1 --shard-index 0" in lines[-1]  # 3 workers, then the check
        return
    assert done.returncode == 1
    assert f"worker 1 (GPUs 1+) exited with status 3; see {tmp_path / 'run'}/logs/worker-1.log" in done.stderr
    assert "1 of 3 worker(s) failed" in done.stderr
    assert len(lines) == 3  # no final pass over a run with a failed worker
    assert (tmp_path / "run" / "logs" / "worker-1.log").read_text() == "boom\n"
