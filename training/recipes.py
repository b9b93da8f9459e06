"""What the SFT and GRPO recipes share: recipes and arguments, and running a recipe.

Both ``training/sft.py`` and ``training/grpo.py`` read a recipe (``--config configs/<stage>/*.yaml``)
with command-line overrides through :func:`parse_recipe_args`, then use the data side
(:mod:`training.data`: a release split, the user turn) and the model side (:mod:`training.model`:
processor, model, LoRA targets). Every expected failure is an :mod:`imagenet_think_errors` error
whose message names the input and the fix; :func:`run_script` prints it as one ``PROG: error: ...``
line.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from trl import TrlParser

from imagenet_think_errors import InputError, MissingInputError, UsageError, run_reporting


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def check_recipe(path: str, parser: TrlParser, prog: str, recipes: str) -> None:
    """Fail with the fix if the recipe is missing, is not a YAML mapping or has a key no argument has."""
    recipe = Path(path)
    if not recipe.is_file():
        raise MissingInputError(
            f"recipe {path} (--config): no such file; the recipes are {recipes}"
            if not recipe.exists()
            else f"recipe {path} (--config): not a file; give one of {recipes}"
        )
    try:
        spec = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or " ".join(str(error).split())
        raise InputError(f"recipe {path}: not valid YAML{where}: {problem}") from error
    if not isinstance(spec, dict):
        raise InputError(f"recipe {path}: expected a mapping of argument names to values (key: value lines)")
    known = {action.dest for action in parser._actions} | {"env"}  # TRL reads `env:` itself
    unknown = [key for key in spec if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise InputError(
            f"recipe {path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; the keys are "
            f"the arguments `python {prog} --help` lists"
        )


def skip_cpu_shm_build() -> None:
    """On the CPU, DeepSpeed compiles its shared-memory allreduce op (minutes) when it sets up the process
    group; only its inference allreduce uses it, so training (gloo) goes without."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true" and not torch.cuda.is_available():
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def parse_recipe_args(
    argv: list[str] | None, types: tuple[type, ...], prog: str, recipes: str, description: str | None = None
) -> tuple:
    """The recipe (``--config FILE.yaml``) with command-line overrides, parsed into ``types``. A missing
    recipe, an unknown key or argument, or a value that TRL or transformers reject raises an
    :class:`InputError` (a :class:`UsageError` for the command line). ``description`` heads ``--help``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser(types, prog=prog, description=description)
    source = "the arguments"
    if "--config" in argv:
        at = argv.index("--config") + 1
        if at == len(argv) or argv[at].startswith("--"):
            raise UsageError(f"--config needs a recipe file, one of {recipes}")
        check_recipe(argv[at], parser, prog, recipes)
        source = f"recipe {argv[at]} (or the arguments)"
    skip_cpu_shm_build()  # before the training config, which sets up the process group
    try:
        *parsed, unused = parser.parse_args_and_config(argv, return_remaining_strings=True)
    except ValueError as error:  # the configs' and TrainingArguments' checks of the values
        raise InputError(f"{source}: {first_line(error)}") from error
    if unused:
        raise UsageError(f"unknown arguments {unused}; `python {prog} --help` lists the arguments")
    return tuple(parsed)


def run_script(prog: str, call: Callable[[], int | None]) -> int:
    """``call()``'s exit status; an expected failure prints ``PROG: error: ...`` (one per process,
    ``[rank N]`` when there are several) and returns 1 (2 for a usage error)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    name = f"{prog} [rank {os.environ.get('RANK', '0')}]" if world_size > 1 else prog
    return run_reporting(name, call)
