"""The data side of the SFT and GRPO recipes: one split of a release (:func:`load_split`, a local
folder verified against its marker, or a Hub id) and the user turn every prompt is built from
(:func:`user_turn`: an optional system turn, then the image and the question)."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, load_dataset
from datasets.exceptions import DatasetNotFoundError

from generation.row_checks import check_manifest
from imagenet_think_errors import InputError, MissingInputError
from release.folder import MARKER, verify_release
from training.recipes import first_line


def looks_local(name: str) -> bool:
    """Whether ``name`` can only be a local path: not ``org/name``, as Hub ids are."""
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") != 1


def check_dataset_name(name: str) -> None:
    """Fail early if ``name`` can only be a local folder and there is none."""
    if looks_local(name) and not Path(name).expanduser().is_dir():
        raise MissingInputError(
            f"dataset_name {name}: no such folder; give a release folder written by `imagenet-think build` "
            "or a Hub dataset id (org/name)"
        )


def load_split(name: str, config: str, split: str) -> Dataset:
    """One split of a release folder or Hub dataset; a wrong name, config or split is an :class:`InputError`.
    A release folder (with ``release.json``) is verified first (:func:`release.folder.verify_release`);
    a row whose ``image_id`` or ``wnid`` breaks :mod:`generation.row_checks` (a class the label
    reward cannot judge) is refused before any training."""
    check_dataset_name(name)
    folder = Path(name).expanduser()
    where = f"dataset_name {name}"
    if (folder / MARKER).is_file():  # a release folder: read only as built
        verify_release(folder, configs=(config,))
    try:
        rows = load_dataset(str(folder) if folder.is_dir() else name, config, split=split)
    except DatasetNotFoundError as error:
        raise MissingInputError(
            f"{where}: no such folder here, and no such dataset on the Hub (a private or gated one needs "
            "`hf auth login`)"
        ) from error
    except ConnectionError as error:
        raise MissingInputError(
            f"{where}: no such folder here, and the Hub cannot be reached ({first_line(error)}); "
            "give a release folder, or go online"
        ) from error
    except FileNotFoundError as error:
        raise InputError(
            f"{where}: {first_line(error)}; give a release folder written by `imagenet-think build`"
        ) from error
    except ValueError as error:
        message = first_line(error)
        if "BuilderConfig" in message:
            raise InputError(
                f"dataset_config {config!r} of {name}: {message}; set dataset_config, or give a release "
                "written by `imagenet-think build` (configs glm, kimi, both)"
            ) from error
        if "split" in message.lower():
            raise InputError(
                f"split {split!r} of {name}: {message} (set dataset_train_split/dataset_test_split)"
            ) from error
        raise InputError(f"{where} ({config}, {split}): {message}") from error
    if {"image_id", "wnid"} <= set(rows.column_names):  # a release is untrusted input: its classes too
        fix = "this release cannot be trained on as it is: rebuild it with `imagenet-think build`"
        check_manifest(
            rows.data.table.select(["image_id", "wnid"]), f"{where}, {config} {split}", fix, unique=False
        )
    return rows


def user_turn(question: str, system_prompt: str | None = None) -> list[dict]:
    """The prompt messages: an optional system turn, then the user turn (the image, then the question)."""
    messages = (
        [{"role": "system", "content": [{"type": "text", "text": system_prompt}]}] if system_prompt else []
    )
    return [*messages, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
