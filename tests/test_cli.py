"""``imagenet-think``'s errors: an expected failure is a line naming the input, without a traceback,
and an exit status (2 usage, 1 failed, 130 interrupted); ``--debug`` or ``IMAGENET_THINK_DEBUG=1``
brings the traceback back. The real entry point runs in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import imagenet_think_cli
from imagenet_think_errors import (
    InputError,
    MissingInputError,
    RefusedError,
    UsageError,
    describe_failure,
    run_reporting,
    take_debug_flag,
)

REPO = Path(__file__).resolve().parents[1]
TINY_GLM = REPO / "configs" / "generation" / "tiny_glm.yaml"


def _cli(cwd: Path, *args: str, debug_env: bool = False) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "IMAGENET_THINK_DEBUG"}
    if debug_env:
        env["IMAGENET_THINK_DEBUG"] = "1"
    command = [sys.executable, "-m", "imagenet_think_cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _assert_error_line(result: subprocess.CompletedProcess, command: str, *names: str, status: int = 1):
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"imagenet-think {command}: error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert all(name in errors[0] for name in names), errors[0]


def test_a_missing_manifest_is_named_without_a_traceback(tmp_path):
    args = ["build", "--shards", "does-not-exist", "--manifest", "missing.parquet", "--out", "x"]
    _assert_error_line(_cli(tmp_path, *args), "build", "missing.parquet")
    assert not (tmp_path / "x").exists()
    debug = _cli(tmp_path, *args[:1], "--debug", *args[1:])  # --debug after the command name
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "imagenet-think build: error: " in debug.stderr  # the message still ends the output


def test_a_missing_model_config_is_named_and_debug_brings_the_traceback_back(tmp_path):
    args = ["generate", "--config", "missing.yaml", "--manifest", "m.parquet", "--out", "run"]
    _assert_error_line(_cli(tmp_path, *args), "generate", "missing.yaml")
    for debug in (_cli(tmp_path, "--debug", *args), _cli(tmp_path, *args, debug_env=True)):
        assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
        assert "missing.yaml" in debug.stderr.strip().splitlines()[-1]


def test_an_unknown_key_in_a_model_config_is_named(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(TINY_GLM.read_text(encoding="utf-8") + "\nsampling_params: {max_tokens: 8}\n")
    args = ["generate", "--config", str(config), "--manifest", "m.parquet", "--out", "run"]
    _assert_error_line(_cli(tmp_path, *args), "generate", "typo.yaml", "sampling_params")


def test_usage_errors_exit_2_and_the_overview_names_debug(tmp_path):
    result = _cli(tmp_path, "--debug", "biuld")
    assert result.returncode == 2 and "unknown command 'biuld'" in result.stderr
    result = _cli(tmp_path, "build", "--manifest", "m.parquet")  # argparse's own error
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "imagenet-think build: error:" in result.stderr
    assert "--debug" in _cli(tmp_path, "--help").stdout


def test_called_with_an_argv_list_main_lets_errors_through(tmp_path):
    missing = str(tmp_path / "missing.yaml")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        imagenet_think_cli.main(["generate", "--config", missing, "--manifest", "m", "--out", "o"])


def test_debug_flag_is_taken_before_or_after_the_command():
    assert take_debug_flag(["--debug", "build", "--out", "x"]) == (True, ["build", "--out", "x"])
    assert take_debug_flag(["build", "--out", "x", "--debug"]) == (True, ["build", "--out", "x"])
    assert take_debug_flag(["build", "--", "--debug"]) == (False, ["build", "--", "--debug"])


@pytest.mark.parametrize(
    ("error", "message", "status"),
    [
        (InputError("config.yaml: unknown key 'x'"), "config.yaml: unknown key 'x'", 1),
        (MissingInputError("manifest m.parquet not found"), "manifest m.parquet not found", 1),
        (UsageError("give --a and --b together"), "give --a and --b together", 2),
        (RefusedError("run/ holds another config"), "run/ holds another config", 1),
        (FileNotFoundError(2, "No such file or directory", "m.parquet"), "cannot open m.parquet: No such", 1),
        (PermissionError(13, "Permission denied", "/out"), "cannot access /out: Permission denied", 1),
        (IsADirectoryError(21, "Is a directory", "runs"), "cannot open runs: Is a directory", 1),
        (NotADirectoryError(20, "Not a directory", "a/b"), "cannot open a/b: Not a directory", 1),
        (FileExistsError(17, "File exists", "a", None, "b"), "cannot create a -> b: File exists", 1),
    ],
)
def test_expected_failures_are_one_line_with_their_status(capsys, monkeypatch, error, message, status):
    monkeypatch.delenv("IMAGENET_THINK_DEBUG", raising=False)

    def fail():
        raise error

    assert describe_failure(error)[1] == status
    assert run_reporting("imagenet-think x", fail) == status
    err = capsys.readouterr().err
    assert err.startswith(f"imagenet-think x: error: {message}") and err.count("\n") == 1
    monkeypatch.setenv("IMAGENET_THINK_DEBUG", "1")
    assert run_reporting("imagenet-think x", fail) == status
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_interrupts_exit_130_and_bugs_keep_their_traceback(capsys, monkeypatch):
    monkeypatch.delenv("IMAGENET_THINK_DEBUG", raising=False)

    def interrupted():
        raise KeyboardInterrupt

    assert run_reporting("imagenet-think x", interrupted) == 130
    assert capsys.readouterr().err.strip() == "imagenet-think x: interrupted"
    for bug in (KeyError("k"), ValueError("v"), FileNotFoundError("no filename"), OSError(5, "I/O", "f")):

        def broken(bug=bug):
            raise bug

        with pytest.raises(type(bug)):
            run_reporting("imagenet-think x", broken)
    assert run_reporting("imagenet-think x", lambda: None) == 0


def test_torchelastic_gets_the_message_for_its_failure_summary(tmp_path, monkeypatch, capsys):
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))

    def fail():
        raise InputError("dataset_name x: no such folder")

    assert run_reporting("training/sft.py", fail) == 1
    capsys.readouterr()

    assert json.loads(error_file.read_text())["message"] == "dataset_name x: no such folder"


def test_quiet_and_verbose_set_the_toolkit_log_level(tmp_path):
    import logging

    from imagenet_think_cli import main

    for flag, level in (("-q", logging.WARNING), ("-v", logging.DEBUG), (None, logging.INFO)):
        with pytest.raises(MissingInputError):
            main([*([flag] if flag else []), "stats", str(tmp_path / "no-release")])
        assert all(logging.getLogger(name).level == level for name in ("generation", "release", "eval"))


def test_build_options_are_parsed_from_their_one_declaration_and_the_former_flag_still_works():
    import argparse

    from common.options import parse_options
    from release.build import BuildOptions, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    required = ["--shards", "runs/glm", "runs/kimi", "--manifest", "m.parquet", "--out", "release"]
    options = parse_options(parser.parse_args(required), BuildOptions)
    assert options == BuildOptions(["runs/glm", "runs/kimi"], "m.parquet", "release")
    for flag in ("--forced-answer-records", "--forced-answers"):
        chosen = parse_options(parser.parse_args([*required, flag, "reject"]), BuildOptions)
        assert chosen.forced_answer_records == "reject"
        assert chosen.config_fields()["forced_answers"] == "reject"
    sized = parse_options(
        parser.parse_args([*required, "--max-shard-mb", "3", "--allow-other-manifest"]), BuildOptions
    )
    assert sized.max_shard_bytes == 3 * 2**20 and sized.allow_other_manifest
    with pytest.raises(SystemExit):
        parser.parse_args([*required, "--forced-answers", "force_answer"])
