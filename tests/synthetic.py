"""Synthetic images, manifests and generation records for tests and benchmarks (real files, no mocks)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

from generation.classes import imagenet21k_classes
from generation.records import (
    RECORD_SCHEMA,
    GenerationRecord,
    ManifestEntry,
    sampling_json,
    to_table,
    write_manifest,
    write_parquet_atomic,
)

# Image modes the dataset layer must carry: the common case and the odd ones found in ImageNet-21K.
MODES = ("RGB", "L", "CMYK", "P", "I;16", "RGBA", "RGB;PNG")
WORDS = (
    "the image shows a bird perched on branch with brown feathers and white belly so it is likely finch "
    "looking closely at texture colour beak shape background trees suggests outdoor habitat therefore"
).split()


def write_image(path: Path, mode: str, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    width, height = size
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    if mode == "I;16":
        image = Image.fromarray((rng.integers(0, 65536, (height, width))).astype(np.uint16))
    elif mode == "P":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.info["transparency"] = 0
    else:
        image = rgb.convert(mode.split(";")[0])
    fmt = "JPEG" if mode in {"RGB", "L", "CMYK"} else "PNG"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path.with_suffix(".JPEG" if fmt == "JPEG" else ".png"), format=fmt)


def write_image_tree(root: Path, classes: int, per_class: int, size=(64, 48)) -> list[ManifestEntry]:
    """``classes`` real winter21 wnids with ``per_class`` images each, cycling through :data:`MODES`."""
    wnids = imagenet21k_classes().wnids[1000 : 1000 + classes]
    entries = []
    for c, wnid in enumerate(wnids):
        for i in range(per_class):
            mode = MODES[(c * per_class + i) % len(MODES)]
            image_id = f"{wnid}_{i + 1}"
            stem = root / wnid / image_id
            write_image(stem, mode, size, seed=c * 1000 + i)
            path = next(stem.parent.glob(f"{image_id}.*"))
            entries.append(
                ManifestEntry(
                    image_id, wnid, path.relative_to(root).as_posix(), *size, f"{c}-{i}", mode == "RGB"
                )
            )
    return entries


def write_manifest_tree(folder: Path, classes: int, per_class: int) -> tuple[Path, list[ManifestEntry]]:
    entries = write_image_tree(folder / "images", classes, per_class)
    return write_manifest(entries, folder / "manifest.parquet", folder / "images"), entries


def synthetic_text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def make_record(entry: ManifestEntry, annotator: str, rng: random.Random, **overrides) -> GenerationRecord:
    think, answer = synthetic_text(rng, rng.randint(20, 60)), synthetic_text(rng, rng.randint(5, 15))
    fields = {
        "image_id": entry.image_id,
        "wnid": entry.wnid,
        "image_path": entry.image_path,
        "annotator": annotator,
        "model_id": f"synthetic/{annotator}",
        "model_revision": "0" * 40,
        "parse_style": "think_tags",
        "question": "Please analyze this image step by step.",
        "output": f"<think>{think}</think>{answer}",
        "think": think,
        "answer": answer,
        "think_closed": True,
        "finish_reason": "stop",
        "num_prompt_tokens": 64,
        "num_output_tokens": len(think.split()) + len(answer.split()) + 2,
        "sampling": sampling_json({"temperature": 0.0, "max_tokens": 512}),
        "created_at": "2026-11-23T00:00:00+00:00",
    }
    fields.update(overrides)
    return GenerationRecord(**fields)


def write_run(folder: Path, records: list[GenerationRecord], per_shard: int = 50) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_parquet_atomic(
            to_table(records[i : i + per_shard], RECORD_SCHEMA), folder / f"records-{i:08d}.parquet"
        )
        for i in range(0, len(records), per_shard)
    ]
