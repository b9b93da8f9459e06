"""The GPU environments of ``constraints/``: pins the toolkit accepts, the versions the suite ran on,
TRL's vLLM range, and (marked ``registry``) pip's resolution of each against the package index."""

import importlib
import importlib.util
import subprocess
import sys
import time
import tomllib
import warnings
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
FILES = {path.stem: path for path in sorted((ROOT / "constraints").glob("gpu-*.txt"))}
SCRIPT = ROOT / "tools" / "check_constraints.py"
# Pins that must be the versions this test suite runs on (torch is compared without its +cpu label).
TESTED = {
    "gpu-generate": ("transformers", "tokenizers", "datasets"),
    "gpu-train": (
        "torch",
        "torchvision",
        "transformers",
        "tokenizers",
        "trl",
        "peft",
        "accelerate",
        "deepspeed",
        "datasets",
    ),
}


def _script():
    spec = importlib.util.spec_from_file_location("check_constraints", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_constraints = _script()


def _toolkit_requirements(extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in extras.split(","):
        lines += project["optional-dependencies"][extra.strip()]
    return [Requirement(line) for line in lines]


def test_both_environments_are_there():
    assert set(FILES) == {"gpu-generate", "gpu-train"}


@pytest.mark.parametrize("name", ["gpu-generate", "gpu-train"])
def test_pins_satisfy_the_toolkits_own_requirements(name):
    extras, pins = check_constraints.read_constraints(FILES[name])
    assert {"torch", "transformers", "vllm"} <= set(pins)
    checked = 0
    for requirement in _toolkit_requirements(extras):
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is not None:
            assert requirement.specifier.contains(pinned, prereleases=True), (
                f"{name}: {pinned} vs {requirement}"
            )
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("name", ["gpu-generate", "gpu-train"])
def test_pins_are_the_versions_the_suite_runs_on(name):
    _, pins = check_constraints.read_constraints(FILES[name])
    for package in TESTED[name]:
        here = Version(installed_version(package))
        assert Version(here.public) == pins[package], (
            f"{name} pins {package}=={pins[package]}, the suite runs {here}"
        )


def test_training_vllm_is_in_trls_supported_range_and_generations_is_not(monkeypatch):
    """TRL's own check (trl.import_utils.is_vllm_available warns outside its range) on each pin."""
    import_utils = importlib.import_module("trl.import_utils")

    def warns_for(pinned: Version) -> bool:
        monkeypatch.setattr(import_utils, "_is_package_available", lambda *a, **k: (True, str(pinned)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert import_utils.is_vllm_available()
        return any("TRL currently supports vLLM" in str(w.message) for w in caught)

    train = check_constraints.read_constraints(FILES["gpu-train"])[1]["vllm"]
    generate = check_constraints.read_constraints(FILES["gpu-generate"])[1]["vllm"]
    assert not warns_for(train)
    assert warns_for(generate)  # why colocated GRPO has its own environment
    assert installed_version("trl") == str(check_constraints.read_constraints(FILES["gpu-train"])[1]["trl"])


def test_a_constraints_file_must_pin_exactly_and_name_its_extras(tmp_path):
    loose = tmp_path / "loose.txt"
    loose.write_text("# extras: vllm\ntorch>=2.13\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        check_constraints.read_constraints(loose)
    bare = tmp_path / "bare.txt"
    bare.write_text("torch==2.13.0\n")
    with pytest.raises(ValueError, match="extras"):
        check_constraints.read_constraints(bare)


def test_mismatches_name_each_pin_that_resolved_otherwise():
    pins = {"torch": Version("2.13.0"), "transformers": Version("5.19.0"), "trl": Version("1.16.0")}
    resolved = {"torch": Version("2.13.0+cu130"), "transformers": Version("5.23.0")}
    assert check_constraints.mismatches(pins, resolved) == [
        "transformers resolves to 5.23.0, not the pinned 5.19.0",
        "trl==1.16.0 is pinned but not installed by this environment's extras",
    ]


@pytest.mark.registry
@pytest.mark.timeout(900)
def test_pip_resolves_each_environment_to_its_pins():
    """``pip install --dry-run`` against the package index, both files at once: 2-7 minutes on the
    2-core machine (pip fetches ~240 projects' pages and metadata one at a time), so it runs on demand
    (`make check-constraints`, `pytest -m registry`) rather than in every suite run."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=ROOT, timeout=880, check=False
    )
    print(f"resolved {len(FILES)} environments in {time.monotonic() - start:.0f} s:\n{done.stdout}")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(
        line.startswith("gpu-generate.txt:") and "torch 2.14.0" in line and "vllm 0.33.0" in line
        for line in lines
    )
    assert any(
        line.startswith("gpu-train.txt:") and "trl 1.16.0" in line and "vllm 0.30.0" in line for line in lines
    )
