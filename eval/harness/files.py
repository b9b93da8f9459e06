"""Read a harness's prediction file into :class:`~eval.harness.outputs.HarnessPredictions`.

lmms-eval's ``--log_samples`` file (the image id from the task's metric fields,
:data:`~eval.harness.outputs.LOGGED_ID_KEY`; the raw output from ``filtered_resps``; the release,
split and model name from the ``<date>_results.json`` beside it) and VLMEvalKit's prediction file
(``.xlsx``, ``.tsv`` or ``.csv``: ``image_id``, ``prediction``, ``thinking``). What each file must
hold, and how its images are checked against the split: docs/eval.md, "Through lmms-eval or
VLMEvalKit".
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from eval.harness.outputs import LOGGED_ID_KEY, HarnessOutput, HarnessPredictions
from eval.predict import load_references, split_fingerprint
from generation.reasoning import STYLES
from imagenet_think_errors import InputError, MissingInputError, RefusedError, UsageError

LMMS_SUFFIXES = (".jsonl",)
VLMEVALKIT_SUFFIXES = (".xlsx", ".tsv", ".csv")
SUFFIXES = LMMS_SUFFIXES + VLMEVALKIT_SUFFIXES
LMMS_TASK = "imagenet_think"
DEFAULT_SPLIT = "test"  # the task's test_split
log = logging.getLogger(__name__)


def is_harness_file(predictions: str | Path) -> bool:
    return Path(predictions).suffix.lower() in SUFFIXES


def read_harness_file(
    path: str | Path, dataset: str | None, split: str | None, allow_other_release: bool = False
) -> HarnessPredictions:
    """The predictions in ``path`` (by its suffix: :data:`LMMS_SUFFIXES`, :data:`VLMEVALKIT_SUFFIXES`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"predictions file {path} does not exist; pass lmms-eval's --log_samples file "
            f"(*_samples_{LMMS_TASK}.jsonl) or a VLMEvalKit prediction file ({', '.join(VLMEVALKIT_SUFFIXES)})"
        )
    if path.suffix.lower() in LMMS_SUFFIXES:
        return read_lmms_samples(path, dataset, split, allow_other_release)
    return read_vlmevalkit(path, dataset, split, allow_other_release)


def _lmms_results(samples: Path) -> dict:
    """The ``<date>_results.json`` lmms-eval wrote beside ``samples`` ({} if none)."""
    date, found, _ = samples.name.partition("_samples_")
    results = samples.with_name(f"{date}_results.json")
    if not found or not results.is_file():
        return {}
    try:
        loaded = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _lmms_output(sample: dict) -> str | None:
    """The raw output of a logged document: its first filtered response (lmms-eval's default
    filter keeps the first), else its first response."""
    for key in ("filtered_resps", "resps"):
        value = sample.get(key)
        while isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str):
            return value
    return None


def read_lmms_samples(
    path: Path, dataset: str | None, split: str | None, allow_other_release: bool = False
) -> HarnessPredictions:
    outputs = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(
                    f"{path} line {number} is not JSON ({error}); pass the file lmms-eval wrote"
                ) from None
            image_id = sample.get(LOGGED_ID_KEY) if isinstance(sample, dict) else None
            text = _lmms_output(sample) if isinstance(sample, dict) else None
            if not isinstance(image_id, str) or not image_id:
                raise InputError(
                    f"{path} line {number} is not a document of the {LMMS_TASK} task (no image id in its "
                    f"{LOGGED_ID_KEY!r} field); pass the --log_samples file of `lmms-eval --tasks {LMMS_TASK}`"
                )
            if text is None:
                raise InputError(f"{path} line {number} has no response text; pass the file lmms-eval wrote")
            outputs.append((image_id, None, text))
    results = _lmms_results(path)
    task = (results.get("configs") or {}).get(LMMS_TASK) or {}
    dataset = dataset or task.get("dataset_path")
    if not dataset:
        raise UsageError(
            f"{path}: pass --dataset, the release the {LMMS_TASK} task ran on (its dataset_path; no "
            f"{path.name.partition('_samples_')[0]}_results.json beside the file names it)"
        )
    split = split or task.get("test_split") or DEFAULT_SPLIT
    model = results.get("model_name") or path.parent.name
    return _on_split(outputs, path, dataset, split, allow_other_release, model)


def _on_split(
    outputs: list[tuple[str, str | None, str]],
    path: Path,
    dataset: str,
    split: str,
    allow_other_release: bool,
    model: str,
) -> HarnessPredictions:
    """The outputs (image id, wnid if the file has it, text) of the images of ``dataset``/``split``;
    any other image (or one of another class) is refused unless ``allow_other_release``, which
    leaves it out. The predictions are then made on that split (its fingerprint)."""
    rows = load_references(dataset, split).select_columns(["image_id", "wnid"])
    wnid_of = dict(zip(rows["image_id"], rows["wnid"], strict=True))

    def on_split(image_id: str, wnid: str | None) -> bool:
        return image_id in wnid_of and wnid in (None, wnid_of[image_id])

    kept = [HarnessOutput(i, wnid_of[i], text) for i, wnid, text in outputs if on_split(i, wnid)]
    if len(kept) < len(outputs):
        foreign = next(i for i, wnid, _ in outputs if not on_split(i, wnid))
        message = (
            f"{path}: {len(outputs) - len(kept)} of its {len(outputs)} images (first {foreign}) are not images "
            f"of {dataset} split {split!r} with the same class"
        )
        if not allow_other_release:
            raise RefusedError(
                f"{message}; pass the release and --split it was run on, or --allow-other-release"
            )
        log.warning("%s: they are left out (--allow-other-release)", message)
    made_on = {
        "dataset": dataset,
        "split": split,
        "limit": None,
        "split_sha256": split_fingerprint(rows["image_id"], rows["wnid"]),
    }
    return HarnessPredictions(kept, source=str(path), made_on=made_on, model=model)


def _read_table(path: Path):
    import pandas as pd

    try:
        if path.suffix.lower() == ".xlsx":
            return pd.read_excel(path, dtype=str, keep_default_na=False)
        return pd.read_csv(
            path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False
        )
    except ImportError as error:
        raise UsageError(f"reading {path} needs {error.name}: pip install 'imagenet-think[lmms]'") from None
    except (ValueError, OSError) as error:
        raise InputError(
            f"{path} is not a readable prediction table ({error}); pass VLMEvalKit's file"
        ) from None


def read_vlmevalkit(
    path: Path, dataset: str | None, split: str | None, allow_other_release: bool = False
) -> HarnessPredictions:
    if not dataset:
        raise UsageError(f"{path}: pass --dataset (and --split), the release split VLMEvalKit ran on")
    table = _read_table(path)
    missing = [column for column in ("image_id", "prediction") if column not in table.columns]
    if missing:
        raise InputError(
            f"{path} has no {' and no '.join(missing)} column; score VLMEvalKit's prediction file of a "
            "dataset file that carries the release's image_id column"
        )
    think = STYLES["glm"]
    outputs = []
    for row in table.to_dict("records"):
        thinking = row.get("thinking", "")
        # SPLIT_THINK took the think out: put it back between the delimiters the parser splits on.
        text = f"{think.open}{thinking}{think.close}{row['prediction']}" if thinking else row["prediction"]
        outputs.append((row["image_id"], row.get("wnid"), text))
    return _on_split(outputs, path, dataset, split or DEFAULT_SPLIT, allow_other_release, path.stem)
