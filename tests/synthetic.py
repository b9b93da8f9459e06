"""Synthetic images, manifests and generation records for tests and benchmarks (real files, no mocks).

:func:`write_run` writes a real generation run folder through :mod:`generation.runs` (``run.json``,
chunk files and commit files), as ``imagenet-think generate`` would have written it from the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from generation.classes import imagenet21k_classes
from generation.config import VLMConfig
from generation.records import (
    RECORD_SCHEMA,
    REJECT_SCHEMA,
    GenerationRecord,
    ManifestEntry,
    Reject,
    read_manifest,
    sampling_json,
    to_table,
    write_manifest,
)
from generation.runs import chunk_files, claim_run_dir, commit_chunk, plan_run

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


def write_image_tree(
    root: Path, classes: int, per_class: int, size=(64, 48), seed: int = 0
) -> list[ManifestEntry]:
    """``classes`` real winter21 wnids with ``per_class`` images each, cycling through :data:`MODES`;
    another ``seed`` gives other pictures under the same names."""
    wnids = imagenet21k_classes().wnids[1000 : 1000 + classes]
    entries = []
    for c, wnid in enumerate(wnids):
        for i in range(per_class):
            mode = MODES[(c * per_class + i) % len(MODES)]
            image_id = f"{wnid}_{i + 1}"
            stem = root / wnid / image_id
            write_image(stem, mode, size, seed=seed * 1_000_000 + c * 1000 + i)
            path = next(stem.parent.glob(f"{image_id}.*"))
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entries.append(
                ManifestEntry(image_id, wnid, path.relative_to(root).as_posix(), *size, digest, mode == "RGB")
            )
    return entries


def write_manifest_tree(
    folder: Path, classes: int, per_class: int, seed: int = 0
) -> tuple[Path, list[ManifestEntry]]:
    entries = write_image_tree(folder / "images", classes, per_class, seed=seed)
    return write_manifest(entries, folder / "manifest.parquet", folder / "images"), entries


def synthetic_text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def make_record(entry: ManifestEntry, annotator: str, rng: random.Random, **overrides) -> GenerationRecord:
    """A record of ``entry`` by ``annotator``. Its ``manifest_sha256`` is left empty unless given:
    :func:`write_run` fills in the fingerprint of the manifest it writes the run for."""
    think, answer = synthetic_text(rng, rng.randint(20, 60)), synthetic_text(rng, rng.randint(5, 15))
    fields = {
        "image_id": entry.image_id,
        "wnid": entry.wnid,
        "image_path": entry.image_path,
        "image_sha256": entry.sha256,
        "manifest_sha256": "",
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


def find_manifest(folder: Path, image_ids: set[str]) -> Path:
    """The ``manifest.parquet`` nearest above ``folder`` (up to 3 levels) that lists all ``image_ids``."""
    for parent in list(Path(folder).resolve().parents)[:3]:
        candidate = parent / "manifest.parquet"
        if candidate.is_file() and image_ids <= set(read_manifest(candidate)[0]["image_id"].to_pylist()):
            return candidate
    raise ValueError(f"no manifest.parquet above {folder} lists these images; pass write_run(manifest=...)")


def write_run(
    folder: Path,
    records: Sequence[GenerationRecord],
    per_shard: int = 50,
    *,
    rejects: Sequence[Reject] = (),
    manifest: Path | None = None,
    annotator: str | None = None,
    limit: int | None = None,
) -> list[Path]:
    """A generation run folder of ``records`` (and ``rejects``), as ``imagenet-think generate
    --set chunk_size=PER_SHARD [--limit N]`` writes it from ``manifest``: ``run.json``, and per
    chunk of the manifest that holds a row, its records, rejects and commit files
    (:func:`generation.runs.commit_chunk`). Returns the records files.

    ``manifest`` defaults to the nearest ``manifest.parquet`` above ``folder`` that lists the
    records' images. Records with an empty ``manifest_sha256`` get the manifest's fingerprint.
    A chunk's committed images are the ids of its rows, in manifest order: the chunk's planned
    images when its rows cover them, so a run whose records miss images has chunks the plan
    does not match, and one without any row of a chunk lacks that chunk.
    """
    folder = Path(folder)
    rows = [*records, *rejects]
    ids = {row.image_id for row in rows}
    manifest = Path(manifest) if manifest is not None else find_manifest(folder, ids)
    plan = plan_run(manifest, per_shard, limit)
    position = {task.image_id: i for i, task in enumerate(t for c in plan.chunks for t in c.tasks)}
    unknown = sorted(ids - set(position))
    if unknown:
        raise ValueError(f"{unknown[:5]} are not among the first {plan.images} images of {manifest}")
    annotator = annotator or (rows[0].annotator if rows else "glm")
    config = VLMConfig(annotator=annotator, model=f"synthetic/{annotator}", chunk_size=per_shard)
    claim_run_dir(folder, config, plan)
    records = [
        r if r.manifest_sha256 else dataclasses.replace(r, manifest_sha256=plan.manifest_sha256)
        for r in records
    ]
    by_chunk: dict[int, tuple[list, list]] = {}
    for kind, group in ((0, records), (1, rejects)):
        for row in group:
            by_chunk.setdefault(position[row.image_id] // per_shard, ([], []))[kind].append(row)
    written = []
    for index, (chunk_records, chunk_rejects) in sorted(by_chunk.items()):
        image_ids = sorted((r.image_id for r in [*chunk_records, *chunk_rejects]), key=position.__getitem__)
        commit_chunk(
            folder,
            index,
            to_table(chunk_records, RECORD_SCHEMA),
            to_table(chunk_rejects, REJECT_SCHEMA),
            image_ids,
        )
        written.append(chunk_files(folder, index)[0])
    return written
