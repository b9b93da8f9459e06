"""``imagenet-think eval generate``: run a model over a release split with the generation engine.

The split's images are written once into ``PRED/images`` with a manifest, then
``generation.generate`` annotates them, so predictions resume, shard and reject
exactly like dataset generation. ``PRED`` ends up a run folder (records with
raw output, think and answer) that ``eval score`` reads.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

from datasets import load_dataset
from PIL import Image
from tqdm.auto import tqdm

from generation.config import load_model_config
from generation.generate import generate
from generation.images import is_plain_rgb
from generation.records import ManifestEntry, write_manifest

EXAMPLE = (
    "imagenet-think eval generate --model configs/models/openvlthinker_7b.yaml "
    "--dataset imagenet_think --split test --out predictions/openvlthinker"
)
REFERENCE_CONFIG = "both"
EVAL_FILE = "eval.json"  # what the predictions were made on: dataset, split, limit


def load_references(dataset: str, split: str, limit: int | None = None, streaming: bool = False):
    """The ``both`` config's split: one row per image with both annotators' think and answer."""
    rows = load_dataset(dataset, REFERENCE_CONFIG, split=split, streaming=streaming)
    if limit is not None:
        rows = rows.take(limit) if streaming else rows.select(range(min(limit, len(rows))))
    return rows


def materialize_split(dataset: str, split: str, folder: Path, limit: int | None = None) -> Path:
    """Write the split's images under ``folder/images`` and their manifest; returns the manifest path."""
    manifest = folder / "manifest.parquet"
    if manifest.is_file():
        return manifest
    rows = load_references(dataset, split, limit, streaming=True).decode(False)
    entries = []
    for row in tqdm(rows, desc=f"writing {split} images", unit="img"):
        suffix = Path(row["image"]["path"] or ".png").suffix or ".png"
        relative = f"{row['wnid']}/{row['image_id']}{suffix}"
        path = folder / "images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(row["image"]["bytes"])
        with Image.open(io.BytesIO(row["image"]["bytes"])) as image:
            width, height, plain = *image.size, is_plain_rgb(image)
        digest = hashlib.sha256(row["image"]["bytes"]).hexdigest()
        entries.append(ManifestEntry(row["image_id"], row["wnid"], relative, width, height, digest, plain))
    if not entries:
        raise ValueError(f"{dataset} has no rows in {REFERENCE_CONFIG}/{split}")
    return write_manifest(entries, manifest, folder / "images")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="a model YAML (configs/models/*.yaml or configs/generation/*.yaml)"
    )
    parser.add_argument("--dataset", required=True, help="a release folder or Hub dataset id")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, help="only the split's first N images")
    parser.add_argument("--out", required=True, help="the predictions folder; rerun to resume")
    parser.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="config overrides"
    )
    parser.add_argument("--engine", choices=["vllm", "ray"], default="vllm")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    asked = {"dataset": args.dataset, "split": args.split, "limit": args.limit}
    if (out / EVAL_FILE).is_file() and json.loads((out / EVAL_FILE).read_text()) != asked:
        raise RuntimeError(
            f"{out} holds predictions for {(out / EVAL_FILE).read_text()}; use a new --out folder"
        )
    # eval.json is written once the split's images are: a bad --split locks nothing, and a
    # manifest without eval.json is from a run stopped before naming its split.
    if not (out / EVAL_FILE).is_file():
        (out / "manifest.parquet").unlink(missing_ok=True)
    manifest = materialize_split(args.dataset, args.split, out, args.limit)
    (out / EVAL_FILE).write_text(json.dumps(asked) + "\n")
    config = load_model_config(args.model, args.set)
    # The images are read where the folder is now, so that a moved folder resumes.
    summary = generate(config, manifest, out / "records", engine=args.engine, image_root=out / "images")
    print("\n".join(summary.lines()))
    print(
        f"predictions in {out}; score them with `imagenet-think eval score --predictions {out} --dataset {args.dataset}`"
    )
    return 0
