"""Resolve the GPU environments of ``constraints/`` with pip's dry run and compare them with their pins.

    python tools/check_constraints.py                     # every constraints/gpu-*.txt, in parallel
    python tools/check_constraints.py constraints/gpu-train.txt

Each ``constraints/gpu-*.txt`` names the extras it is installed with (``# extras: vllm,train,eval``)
and pins the tested versions as ``name==version``. This asks pip what ``pip install -e ".[EXTRAS]"
-c FILE`` would install on a fresh machine (``--dry-run --report --ignore-installed``), against the
package index only (the local pip configuration and ``PIP_FIND_LINKS`` are left out, so that a wheel
on this disk, the CPU build of torch, does not stand in for the registry's), for the running Python
and with its setuptools. pip reads the wheels' metadata and downloads none. A pin that does not
resolve, or resolves to another version, is one line of the output and exit status 1; each file
takes minutes (docs/setup.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
EXTRAS_PREFIX = "# extras:"
# Settings of this machine that would let a local wheel or constraint decide the resolution.
LOCAL_PIP_SETTINGS = ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_NO_INDEX", "PIP_REQUIREMENT")


def read_constraints(path: Path) -> tuple[str, dict[str, Version]]:
    """The extras a constraints file is installed with, and its pins (canonical name -> version)."""
    extras, pins = None, {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if line.startswith(EXTRAS_PREFIX):
            extras = line.removeprefix(EXTRAS_PREFIX).strip()
            continue
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            raise ValueError(f"{path}:{number}: {line!r} is not an exact pin (name==version)")
        name = canonicalize_name(requirement.name)
        if name in pins:
            raise ValueError(f"{path}:{number}: {requirement.name} is pinned twice")
        pins[name] = Version(specifiers[0].version)
    if not extras:
        raise ValueError(f"{path}: no `{EXTRAS_PREFIX} a,b,c` line naming the extras it is installed with")
    return extras, pins


def resolve(path: Path, extras: str) -> dict[str, Version]:
    """What pip would install for ``-e ".[extras]" -c path`` (canonical name -> version)."""
    env = {key: value for key, value in os.environ.items() if key not in LOCAL_PIP_SETTINGS}
    env["PIP_CONFIG_FILE"] = os.devnull
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--quiet",
        "--ignore-installed",
        "--no-build-isolation",
        "--disable-pip-version-check",
        "--report",
        "-",
        "-c",
        str(path),
        "-e",
        f"{ROOT}[{extras}]",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or [done.stderr]
        raise RuntimeError(f"pip could not resolve {path.name}: {' '.join(errors).strip()[:1500]}")
    report = json.loads(done.stdout)
    return {
        canonicalize_name(item["metadata"]["name"]): Version(item["metadata"]["version"])
        for item in report["install"]
    }


def mismatches(pins: dict[str, Version], resolved: dict[str, Version]) -> list[str]:
    """One line per pin that is missing from the resolution or resolved to another version."""
    problems = []
    for name, version in sorted(pins.items()):
        got = resolved.get(name)
        if got is None:
            problems.append(f"{name}=={version} is pinned but not installed by this environment's extras")
        elif got != version and Version(got.public) != version:  # 2.13.0+cu130 is torch==2.13.0
            problems.append(f"{name} resolves to {got}, not the pinned {version}")
    return problems


def check(path: Path) -> tuple[dict[str, Version], list[str]]:
    extras, pins = read_constraints(path)
    try:
        resolved = resolve(path, extras)
    except RuntimeError as error:
        return {}, [str(error)]
    return resolved, mismatches(pins, resolved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "files", nargs="*", type=Path, help="constraints files (default: constraints/gpu-*.txt)"
    )
    args = parser.parse_args(argv)
    files = args.files or sorted((ROOT / "constraints").glob("gpu-*.txt"))
    with ThreadPoolExecutor(max_workers=len(files) or 1) as pool:
        results = list(pool.map(check, files))
    failed = False
    for path, (resolved, problems) in zip(files, results, strict=True):
        shown = ", ".join(
            f"{n} {resolved[n]}" for n in ("torch", "transformers", "vllm", "trl") if n in resolved
        )
        print(f"{path.name}: {len(resolved)} packages; {shown or 'not resolved'}")
        for problem in problems:
            print(f"{path.name}: {problem}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
