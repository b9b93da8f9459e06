"""``benchmarks/gpu_check.sh`` end to end at tiny size on the CPU: the script a lent GPU runs in one call."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_end_to_end_at_tiny_size(tmp_path):
    out = tmp_path / "figures.json"
    env = {**os.environ, "SIZE": "tiny", "PYTHON": sys.executable, "JSON": str(out), "LIMIT": "400"}
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=450,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["size"] == "tiny" and report["device"] == "cpu"
    sft, grpo, metrics = report["sft"], report["grpo"], report["metrics"]
    assert 0 < sft["trainable"] < sft["parameters"]  # LoRA only
    assert sft["tokens_per_s"] > 0 and sft["step_s"] > 0 and sft["mfu"] is None  # no GPU peak on a CPU
    assert (
        grpo["steps"] == 2 and grpo["completion_tokens"] == 2 * 4 * 8
    )  # 2 prompts x 2 generations x 8 tokens
    assert grpo["completion_tokens_per_s"] > 0 and grpo["update_s"] > 0
    assert metrics["bertscore_pairs_per_s"] > 0 and metrics["sbert_pairs_per_s"] > 0
    assert -1 <= metrics["sbert_check"] <= 1
    assert "| sft | tokens_per_s |" in done.stdout and "| metrics | sbert_pairs_per_s |" in done.stdout
