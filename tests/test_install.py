"""A non-editable install (``pip install .``, ``pip install git+...``) of the toolkit.

It carries the code but not the checkout's ``configs/`` and ``dataset_card.md``, which the toolkit
reads where they stand (:mod:`common.checkout`). A real ``pip install --target`` of a copy of
this checkout, used from another folder: the modules import from the install, and the commands
that need a checkout file (``generate``, ``build``) fail at once with one line that says to install
from a checkout with ``pip install -e``, writing nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The toolkit installed non-editable into a folder, from a copy of the checkout."""
    source = tmp_path_factory.mktemp("checkout")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    for name in (
        "pyproject.toml",
        "README.md",
        "dataset_card.md",
        *(f"{m}.py" for m in setuptools["py-modules"]),
    ):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in {p.split(".")[0] for p in setuptools["packages"]} | {"configs"}:
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    target = tmp_path_factory.mktemp("site-packages")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-compile",
         "--target", str(target), str(source)],
        check=True,
    )  # fmt: skip
    return target


def _run(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_install_holds_the_code_and_no_checkout_file(installed, tmp_path):
    code = (
        "import generation.annotator, common.checkout, common.model_refs, generation.ray_pool, "
        "common.tiny.builder, release.card, imagenet_think_cli\n"
        "print(common.checkout.ROOT)"
    )
    done = _run(installed, tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == installed  # not the checkout this test runs from
    assert not (installed / "configs").exists() and not (installed / "dataset_card.md").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "--config", str(REPO / "configs" / "generation" / "tiny_glm.yaml"),
         "--manifest", "manifest.parquet", "--out", "run"],
        ["build", "--shards", "run", "--manifest", "manifest.parquet", "--out", "release"],
    ],
    ids=["generate", "build"],
)  # fmt: skip
def test_a_command_that_reads_a_checkout_file_says_to_install_from_a_checkout(installed, tmp_path, command):
    done = _run(installed, tmp_path, "-m", "imagenet_think_cli", *command)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"imagenet-think {command[0]}: error: ") and "Traceback" not in done.stderr
    assert "non-editable install" in done.stderr and "pip install -e" in done.stderr
    assert list(tmp_path.iterdir()) == []
