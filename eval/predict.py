"""``imagenet-think eval generate``: run a model over a release split with the generation engine.

The split's images are written once into ``PRED/images`` with a manifest, then
``generation.generate`` annotates them, so predictions resume, shard and reject exactly like
dataset generation. ``PRED`` ends up a run folder (records with raw output, think and answer) that
``eval score`` reads, and ``PRED/eval.json`` records what the predictions were made on, with the
split's fingerprint (:func:`split_fingerprint`); how ``eval score`` uses it: docs/eval.md, "What is
scored".
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from datasets import load_dataset
from PIL import Image
from tqdm.auto import tqdm

from generation.config import load_model_config
from generation.generate import generate, rerun_command, resumable_on_sigterm
from generation.images import ImageRejected, check_image
from generation.records import MANIFEST_SCHEMA, ManifestEntry, read_manifest, to_table, write_manifest
from generation.row_checks import check_manifest, image_id_problem, path_inside, wnid_problem
from imagenet_think_errors import InputError, MissingInputError, RefusedError
from release.folder import MARKER, verify_release
from release.schema import JOINT_CONFIG

EXAMPLE = (
    "imagenet-think eval generate --model configs/models/openvlthinker_7b.yaml "
    "--dataset imagenet_think --split test --out predictions/openvlthinker"
)
REFERENCE_CONFIG = JOINT_CONFIG  # both annotators' traces per image: the references
EVAL_FILE = "eval.json"  # what the predictions were made on: dataset, split, limit, split_sha256
EVAL_KEYS = ("dataset", "split", "limit")  # as given (a local folder absolute); a rerun must give the same
RULES = "rules (what eval.json records and when a rerun resumes): docs/eval.md"
log = logging.getLogger(__name__)


def split_fingerprint(image_ids: Iterable[str], wnids: Iterable[str]) -> str:
    """sha256 over the sorted ``image_id<TAB>wnid`` lines of a split's rows.

    The same rows give the same fingerprint whether read from a local release folder or
    from the Hub, streamed or not, in any order; another release's or split's rows do not.
    """
    lines = sorted(f"{i}\t{w}" for i, w in zip(image_ids, wnids, strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _how_to_generate(folder) -> str:
    return (
        f"make one with `imagenet-think eval generate --model MODEL.yaml --dataset DATASET "
        f"--split SPLIT --out {folder}`"
    )


def read_eval_file(predictions: str | Path) -> dict:
    """``PRED/eval.json``, checked: an :class:`InputError` naming the folder if it is not a
    predictions folder or the file is malformed."""
    folder = Path(predictions)
    path = folder / EVAL_FILE
    if not folder.is_dir():
        raise MissingInputError(f"predictions folder {folder} does not exist; {_how_to_generate(folder)}")
    if not path.is_file():
        raise MissingInputError(
            f"{folder} is not a predictions folder (it has no {EVAL_FILE}); {_how_to_generate(folder)}"
        )
    try:
        made_on = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(
            f"{path} is not valid JSON ({error}); rerun `imagenet-think eval generate` with the same "
            f"arguments into a new --out folder"
        ) from None
    if not isinstance(made_on, dict) or any(key not in made_on for key in ("dataset", "split")):
        raise InputError(
            f"{path} does not name the dataset and split the predictions were made on; "
            f"rerun `imagenet-think eval generate` into a new --out folder"
        )
    return made_on


def dataset_reference(dataset: str) -> str:
    """``--dataset`` as ``eval.json`` records it: a local folder by its absolute path, so that
    ``eval score`` finds it from any directory; a Hub id as given."""
    folder = Path(dataset).expanduser()
    return str(folder.resolve()) if folder.is_dir() else dataset


def load_references(dataset: str, split: str, limit: int | None = None, streaming: bool = False):
    """The ``both`` config's split: one row per image with both annotators' think and answer.

    A release folder (with ``release.json``) is verified first, as every reader of a release is
    (:func:`release.folder.verify_release`)."""
    folder = Path(dataset).expanduser()
    if (folder / MARKER).is_file():
        verify_release(folder, configs=(REFERENCE_CONFIG,))
    try:
        rows = load_dataset(dataset, REFERENCE_CONFIG, split=split, streaming=streaming)
    except ConnectionError as error:
        raise MissingInputError(
            f"release {dataset}: no such folder here, and the Hub cannot be reached "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
            "pass --dataset the release folder, or go online"
        ) from error
    except FileNotFoundError as error:  # also datasets' DatasetNotFoundError
        raise MissingInputError(
            f"release {dataset} not found ({error}); pass --dataset a folder written by "
            "`imagenet-think build` or a Hub dataset id"
        ) from error
    except ValueError as error:
        if "split" not in str(error).lower():
            raise
        raise InputError(f"{dataset}: {error}; pass --split with one of its splits") from error
    if limit is not None:
        rows = rows.take(limit) if streaming else rows.select(range(min(limit, len(rows))))
    return rows


def materialize_split(dataset: str, split: str, folder: Path, limit: int | None = None) -> Path:
    """Write the split's images under ``folder/images`` and their manifest; returns the manifest path.

    A release is untrusted input: each row's ``image_id`` and ``wnid`` are checked
    (:mod:`generation.row_checks`) and its image decoded before a file is written, each file
    lands inside ``folder/images``, named by the decoded format, and the rows are checked as a
    manifest (an ``image_id`` in two rows) before the manifest is written. A bad row is an
    :class:`InputError` naming the release, split and row.
    """
    manifest = folder / "manifest.parquet"
    if manifest.is_file():
        return manifest
    source = f"release {dataset}, split {split}"
    fix = "this release cannot be evaluated as it is: rebuild it with `imagenet-think build`, or ask its publisher"
    rows = load_references(dataset, split, limit, streaming=True).decode(False)
    images = folder / "images"
    entries = []
    for index, row in enumerate(tqdm(rows, desc=f"writing {split} images", unit="img")):
        image_id, wnid, image = row["image_id"], row["wnid"], row["image"]
        problem = image_id_problem(image_id) or wnid_problem(wnid)
        if problem is None and not (isinstance(image, dict) and isinstance(image.get("bytes"), bytes)):
            problem = "the row has no image bytes"
        if problem is None:
            data = image["bytes"]
            try:
                checked = check_image(data, min_side=1)
            except ImageRejected as rejected:
                problem = f"its image cannot be decoded ({rejected})"
        if problem is not None:
            raise InputError(f"{source}, row {index}: {problem}; {fix}")
        relative = f"{wnid}/{image_id}{_suffix(data, image.get('path'))}"
        try:
            path = path_inside(images, relative)  # the checked fields cannot leave it; a link could
        except ValueError as error:
            raise InputError(f"{source}, row {index}: {error}; remove that link from {images}") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        entries.append(
            ManifestEntry(
                image_id,
                wnid,
                relative,
                checked.width,
                checked.height,
                digest,
                checked.plain_rgb,
                checked.phash,
            )
        )
    if not entries:
        raise InputError(
            f"{dataset} has no rows in {REFERENCE_CONFIG}/{split}; pass --split with a split that has"
        )
    check_manifest(to_table(entries, MANIFEST_SCHEMA), source, fix)
    return write_manifest(entries, manifest, images)


def _suffix(data: bytes, path: object) -> str:
    """The file suffix for decoded image bytes: the release path's where it names the image's
    format (``.JPEG`` for a JPEG), else the format's own."""
    with Image.open(io.BytesIO(data)) as image:
        image_format = image.format
    own = sorted(ext for ext, name in Image.registered_extensions().items() if name == image_format)
    suffix = PurePosixPath(path).suffix if isinstance(path, str) else ""
    if suffix.lower() in own:
        return suffix
    return f".{image_format.lower()}" if f".{image_format.lower()}" in own else (own or [""])[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="a model YAML (configs/models/*.yaml or configs/generation/*.yaml)"
    )
    parser.add_argument("--dataset", required=True, help="a release folder or Hub dataset id")
    parser.add_argument("--split", default="test", help="the release split (default: test)")
    parser.add_argument("--limit", type=int, help="only the split's first N images")
    parser.add_argument(
        "--out",
        required=True,
        help="the predictions folder; rerun with the same --dataset, --split and --limit to resume",
    )
    parser.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="config overrides"
    )
    parser.add_argument("--engine", choices=["vllm", "ray"], default="vllm")


def run(args: argparse.Namespace) -> int:
    command = rerun_command(args, ["imagenet-think", "eval", "generate"], skip=("eval_command",))
    with resumable_on_sigterm(command):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    asked = {"dataset": dataset_reference(args.dataset), "split": args.split, "limit": args.limit}
    config = load_model_config(args.model, args.set)  # a config typo fails before any work
    out.mkdir(parents=True, exist_ok=True)
    if (out / EVAL_FILE).is_file():
        made_on = read_eval_file(out)
        made_on = {**made_on, "dataset": dataset_reference(made_on["dataset"])}  # relative before
        if {key: made_on.get(key) for key in EVAL_KEYS} != asked:
            raise RefusedError(
                f"{out} holds predictions for dataset {made_on['dataset']!r}, split {made_on['split']!r}, "
                f"limit {made_on.get('limit')}; resume with those arguments or use a new --out folder"
            )
    # eval.json is written once the split's images are: a bad --split locks nothing, and a
    # manifest without eval.json is from a run stopped before naming its split.
    if not (out / EVAL_FILE).is_file():
        (out / "manifest.parquet").unlink(missing_ok=True)
    manifest = materialize_split(args.dataset, args.split, out, args.limit)
    # The fingerprint of the rows the manifest was written from: the split's rows (its first
    # --limit), the rows `eval score` reads back.
    table, _ = read_manifest(manifest)
    fingerprint = split_fingerprint(table["image_id"].to_pylist(), table["wnid"].to_pylist())
    (out / EVAL_FILE).write_text(json.dumps({**asked, "split_sha256": fingerprint}) + "\n")
    # The images are read where the folder is now, so that a moved folder resumes.
    summary = generate(config, manifest, out / "records", engine=args.engine, image_root=out / "images")
    print("\n".join(summary.lines()))
    print(
        f"predictions in {out}; score them with `imagenet-think eval score --predictions {out} --dataset {args.dataset}`"
    )
    return 0
