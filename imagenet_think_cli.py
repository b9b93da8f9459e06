"""``imagenet-think``: the toolkit's command line.

Each subcommand is a module exposing ``add_arguments(parser)``, ``run(args)`` and
an ``EXAMPLE`` string; it is imported only when called, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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
    "push": ("release.push", "upload a release folder to the Hugging Face Hub"),
    "eval": ("eval.cli", "evaluate models on a release: generate, score (the paper's metrics), report"),
    "demo": ("imagenet_think_demo", "run the whole pipeline on bundled photos with tiny models, on a CPU"),
    "tiny-model": ("generation.tiny_models", "build a tiny random-weight VLM locally (tests, demo)"),
}


def _overview() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return (
        "usage: imagenet-think COMMAND [ARGS]\n\nMake, publish, train on and score ImageNet-Think.\n\n"
        "commands:\n" + "\n".join(lines) + "\n\n`imagenet-think COMMAND --help` shows a command's arguments."
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"}:
        print(_overview())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"imagenet-think: unknown command {name!r}\n\n{_overview()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(
        prog=f"imagenet-think {name}",
        description=COMMANDS[name][1],
        epilog=f"example:\n  {module.EXAMPLE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
