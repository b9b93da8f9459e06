"""``imagenet-think eval``: run baselines, score them against the two references, report."""

from __future__ import annotations

import argparse
import importlib

EXAMPLE = "imagenet-think eval generate --model configs/models/r1_onevision_7b.yaml --dataset imagenet_think --out pred"
RULES = "rules (what is scored, metrics, label verdicts, the agreement ceiling, tables): docs/eval.md"
SUBCOMMANDS = {
    "generate": ("eval.predict", "run a model over a release split (resumable, through vLLM)"),
    "score": (
        "eval.score",
        "score predictions against the references: metrics, label verdicts, the annotator agreement "
        "(ceiling), tables, charts",
    ),
    "report": ("eval.report", "combine several models' scores into one set of tables and charts"),
    "lmms-task": (
        "eval.harness.lmms",
        "print the folder of the lmms-eval task imagenet_think (for --include_path), or write one that "
        "runs it on another release",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(
        dest="eval_command", required=True, metavar="{generate,score,report,lmms-task}"
    )
    for name, (module_name, summary) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog="\n\n".join(filter(None, [getattr(module, "RULES", ""), f"example:\n  {module.EXAMPLE}"])),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)


def run(args: argparse.Namespace) -> int:
    return importlib.import_module(SUBCOMMANDS[args.eval_command][0]).run(args)
