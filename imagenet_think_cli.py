"""``imagenet-think``: the toolkit's command line.

Each subcommand is a module exposing ``add_arguments(parser)``, ``run(args)``, an ``EXAMPLE``
string and, where a docs page holds its rules, a ``RULES`` line pointing there; it is imported only
when called, so ``--help`` is instant. From the command line, expected failures are reported by
:func:`imagenet_think_errors.run_reporting` (one line, exit status; docs/setup.md, "Commands and
errors"); called from Python with an ``argv`` list (tests, the demo), :func:`main` lets every
exception through.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from imagenet_think_errors import DEBUG_ENV, DEBUG_FLAG, run_reporting, take_debug_flag

COMMANDS: dict[str, tuple[str, str]] = {
    "sample": (
        "generation.sample",
        "sample and check images from an ImageNet-21K-P (or ImageFolder) tree into a manifest",
    ),
    "generate": (
        "generation.generate",
        "annotate a manifest's images with a thinking VLM through vLLM (resumable)",
    ),
    "build": ("release.build", "build a Hub-ready release (Parquet + dataset card) from generation shards"),
    "stats": ("release.stats", "print the paper's Table 1 / Table 2 statistics of a release"),
    "audit": (
        "release.audit",
        "find near-duplicate images in a manifest, and overlaps with a reference collection",
    ),
    "push": ("release.push", "upload a release folder to the Hugging Face Hub"),
    "eval": ("eval.cli", "evaluate models on a release: generate, score (the paper's metrics), report"),
    "demo": ("imagenet_think_demo", "run the whole pipeline on bundled photos with tiny models, on a CPU"),
    "preflight": (
        "preflight.cli",
        "check a model config or training recipe on a login node before booking GPUs",
    ),
    "tiny-model": ("common.tiny.builder", "build a tiny random-weight VLM locally (tests, demo)"),
}
# -q / -v before the command name set the level of the toolkit's loggers (default: INFO).
LOG_LEVELS = {
    "-q": logging.WARNING,
    "--quiet": logging.WARNING,
    "-v": logging.DEBUG,
    "--verbose": logging.DEBUG,
}
TOOLKIT_LOGGERS = (
    "common",
    "generation",
    "release",
    "eval",
    "training",
    "imagenet_think",
    "imagenet_think_demo",
    "preflight",
)


def _overview() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return (
        "usage: imagenet-think [--debug] [-q | -v] COMMAND [ARGS]\n\nMake, publish, train on and score ImageNet-Think.\n\n"
        "commands:\n" + "\n".join(lines) + "\n\n`imagenet-think COMMAND --help` shows a command's arguments; "
        f"{DEBUG_FLAG} (or {DEBUG_ENV}=1)\nshows the traceback of an error; -q shows warnings only, -v debug messages."
    )


def _run_command(name: str, rest: list[str]) -> int:
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(
        prog=f"imagenet-think {name}",
        description=COMMANDS[name][1],
        epilog="\n\n".join(
            filter(
                None,
                [
                    getattr(module, "RULES", ""),
                    f"example:\n  {module.EXAMPLE}",
                    f"{DEBUG_FLAG} (or {DEBUG_ENV}=1) shows the traceback of an error.",
                ],
            )
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(rest)) or 0)


def set_log_level(level: int) -> None:
    """Show the toolkit's messages at ``level`` and above on stderr (library code only logs)."""
    logging.basicConfig(format="%(message)s")  # a no-op where logging is configured already
    for name in TOOLKIT_LOGGERS:
        logging.getLogger(name).setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Run ``imagenet-think`` with ``argv`` (default: the command line).

    From the command line (``argv`` None) expected failures are printed in a line
    and exit 1 or 2; called with a list they are raised, for the caller to catch.
    """
    from_command_line = argv is None
    debug, argv = take_debug_flag(sys.argv[1:] if argv is None else list(argv))
    level = logging.INFO
    while argv and argv[0] in LOG_LEVELS:
        level, argv = LOG_LEVELS[argv[0]], argv[1:]
    set_log_level(level)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_overview())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"imagenet-think: unknown command {name!r}\n\n{_overview()}", file=sys.stderr)
        return 2
    if not from_command_line:
        return _run_command(name, rest)
    return run_reporting(f"imagenet-think {name}", lambda: _run_command(name, rest), debug)


if __name__ == "__main__":
    sys.exit(main())
