"""The lmms-eval task ``imagenet_think``: its functions, its folder, and ``imagenet-think eval lmms-task``.

The task folder :data:`TASK_DIR` (``imagenet_think.yaml`` and a ``utils.py`` that imports the
functions below) is given to lmms-eval with ``--include_path``. Per image the task asks the
release's own question (``question`` of the ``both`` config) with the image; the YAML keeps the
raw output whole (``until: []``: else lmms-eval stops at the first blank line;
``reasoning_tags: none``: else it strips ``<think>`` blocks before ``process_results``).

Scoring is ``eval score``'s own: :func:`process_results` passes each image's raw output on
(:class:`~eval.harness.outputs.HarnessOutput`), and the first of the task's metrics that lmms-eval
aggregates scores the whole run with :func:`eval.score.score` against the split that
:func:`process_docs` saw (in batches, as ``eval score`` does), with the paper's metrics
(``PAPER_METRICS``); every other metric reads that run's summary (:func:`metric_values`).
``eval score`` on the run's ``--log_samples`` file gives the same numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
from pathlib import Path

from eval.aggregate import SEGMENTS
from eval.harness.outputs import HarnessOutput, HarnessPredictions
from eval.metrics import PAPER_METRICS
from eval.predict import split_fingerprint
from eval.score import ScoreOptions, score
from imagenet_think_errors import RefusedError, UsageError
from release.folder import read_marker
from release.schema import joint_annotators, joint_column

TASK_DIR = Path(__file__).with_name("lmms_task")
TASK_FILE = "imagenet_think.yaml"
FINGERPRINT_COLUMN = "split_sha256"  # added to every document by process_docs
WRITTEN_BY = "# written by `imagenet-think eval lmms-task`"
SCORE_KEYS = tuple(
    f"{segment}_{metric}_{how}" for segment in SEGMENTS for metric in PAPER_METRICS for how in ("avg", "max")
)
# Per metric key: whether higher is better.
METRIC_KEYS: dict[str, bool] = {
    **dict.fromkeys(SCORE_KEYS, True),
    "label_accuracy": True,
    "coverage": True,
    "think_not_closed": False,
    "think_absent": False,
}
EXAMPLE = "imagenet-think eval lmms-task --dataset imagenet_think --out lmms_tasks"
RULES = "rules (the task, what lmms-eval reports, how outputs are split): docs/eval.md"
log = logging.getLogger(__name__)

_splits: dict[str, object] = {}  # split fingerprint -> the split's documents, as process_docs saw them
_last_run: tuple[str, dict[str, float]] | None = None  # (items digest, metric values) of the run scored last


def process_docs(dataset):
    """Keep the split for the aggregation and give each document the split's fingerprint."""
    fingerprint = split_fingerprint(dataset["image_id"], dataset["wnid"])
    _splits[fingerprint] = dataset
    return dataset.add_column(FINGERPRINT_COLUMN, [fingerprint] * len(dataset))


def doc_to_visual(doc) -> list:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None) -> str:
    """The release's question, between the model's ``pre_prompt`` and ``post_prompt`` if set."""
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def doc_to_target(doc) -> list[str]:
    """The references' answers (what lmms-eval logs as the target)."""
    return [doc[joint_column(a, "answer")] for a in joint_annotators(list(doc))]


def process_results(doc, results) -> dict[str, HarnessOutput]:
    """The raw output under every metric key (one object: each metric's aggregation gets it)."""
    text = results[0] if results and isinstance(results[0], str) else ""
    output = HarnessOutput(doc["image_id"], doc["wnid"], text, doc[FINGERPRINT_COLUMN])
    return dict.fromkeys(METRIC_KEYS, output)


def metric_values(summary: dict) -> dict[str, float]:
    """The task's metrics from a summary of :func:`eval.score.score` (of harness predictions)."""
    values = {
        f"{segment}_{metric}_{how}": summary["scores"][segment][metric][f"avg_of_{how}"]
        for segment in SEGMENTS
        for metric in PAPER_METRICS
        for how in ("avg", "max")
    }
    values.update(
        label_accuracy=summary["label_accuracy"]["model"],
        coverage=summary["coverage"],
        think_not_closed=summary["outputs"]["open"],
        think_absent=summary["outputs"]["none"],
    )
    return values


def _digest(items: list[HarnessOutput]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.split_sha256, item.image_id, item.text]).encode())
    return digest.hexdigest()


def _model_name(args) -> str:
    model, model_args = getattr(args, "model", None), getattr(args, "model_args", None)
    return " ".join(str(part) for part in (model, model_args) if part) or "lmms-eval"


def score_run(items: list[HarnessOutput], args=None) -> dict[str, float]:
    """Every metric of the run whose outputs are ``items``, scored once (kept for the next call)."""
    global _last_run
    digest = _digest(items)
    if _last_run is not None and _last_run[0] == digest:
        return _last_run[1]
    fingerprints = {item.split_sha256 for item in items}
    split = _splits.get(next(iter(fingerprints))) if len(fingerprints) == 1 else None
    if split is None:
        raise RefusedError(
            "the imagenet_think outputs to aggregate are not of one split this process loaded; run the "
            "task through lmms-eval (its process_docs keeps the split), or score the --log_samples file "
            "with `imagenet-think eval score`"
        )
    made_on = {"dataset": split.info.dataset_name or "lmms-eval", "split": str(split.split), "limit": None}
    predictions = HarnessPredictions(
        items,
        source="lmms-eval",
        made_on={**made_on, "split_sha256": next(iter(fingerprints))},
        model=_model_name(args),
    )
    with tempfile.TemporaryDirectory(prefix="imagenet-think-lmms-") as out:
        summary = score(ScoreOptions(predictions, out, agreement=False), references=split)
    _last_run = (digest, metric_values(summary))
    return _last_run[1]


def _aggregation(key: str):
    def aggregate(items, args=None) -> float:
        return score_run(items, args)[key]

    aggregate.__name__ = aggregate.__qualname__ = key
    aggregate.__doc__ = f"The run's {key} (:func:`score_run`)."
    return aggregate


AGGREGATIONS = {key: _aggregation(key) for key in METRIC_KEYS}


def write_task(dataset: str, out: str | Path) -> Path:
    """A task folder ``out`` whose ``imagenet_think.yaml`` includes the shipped task and points it at
    ``dataset`` (a release folder, made absolute, or a Hub id); returns the folder."""
    out = Path(out)
    if Path(dataset).exists():
        read_marker(dataset)  # a local folder must be a release
        dataset = str(Path(dataset).resolve())
    path = out / TASK_FILE
    if path.exists() and not path.read_text(encoding="utf-8").startswith(WRITTEN_BY):
        raise RefusedError(
            f"{path} exists and was not written by `imagenet-think eval lmms-task`; pass another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"{WRITTEN_BY}: the imagenet_think task on {dataset}\n"
        f"include: {json.dumps(str(TASK_DIR / TASK_FILE))}\n"
        f"dataset_path: {json.dumps(dataset)}\n",
        encoding="utf-8",
    )
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        help="a release folder or Hub id: write a task folder (--out) whose imagenet_think task runs on it",
    )
    parser.add_argument("--out", help="the task folder to write (with --dataset)")


def run(args: argparse.Namespace) -> int:
    if bool(args.dataset) != bool(args.out):
        raise UsageError("pass --dataset and --out together (or neither, for the shipped task folder)")
    folder = write_task(args.dataset, args.out) if args.dataset else TASK_DIR
    print(folder.resolve())
    return 0
