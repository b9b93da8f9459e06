"""What a release holds: its configs (names and kinds, and which a release has), their columns and
``datasets`` features, and the builder config that names a release's inputs.

Config kinds: ``single`` (one per annotator, named after it), ``joint`` (``both``), ``verified`` and
``rejected``; what each holds is documented in docs/release.md, "Configs and columns". The record
columns a release carries take their types from the one record schema,
:data:`generation.records.RECORD_SCHEMA` (itself the :class:`~generation.records.GenerationRecord`
dataclass).
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import pyarrow as pa

from common.classes import imagenet21k_classes
from generation.near_duplicates import DEFAULT_THRESHOLD
from generation.records import RECORD_SCHEMA
from release.splits import DEFAULT_FRACTIONS, DEFAULT_SEED

ANNOTATORS = ("glm", "kimi")
ANNOTATOR_MODELS = {"glm": "GLM-4.1V-9B-Thinking", "kimi": "Kimi-VL-A3B-Thinking-2506"}

# Config kinds (ImageNetThinkConfig.kind).
SINGLE = "single"
JOINT = "joint"
VERIFIED = "verified"
REJECTED = "rejected"
# Config names of the kinds that are not named after an annotator.
JOINT_CONFIG = "both"
VERIFIED_CONFIG = "verified"
REJECTED_CONFIG = "rejected"
FORCED_ANSWERS = ("keep", "reject")  # ImageNetThinkConfig.forced_answers (build --forced-answer-records)

CITATION = """\
@article{chittyvenkata2025imagenetthink,
  title   = {ImageNet-Think-250K: A Large-Scale Synthetic Dataset for Multimodal Reasoning for Vision Language Models},
  author  = {Chitty-Venkata, Krishna Teja and Emani, Murali},
  journal = {arXiv preprint arXiv:2510.01582},
  year    = {2025}
}"""

# Provenance columns of the per-annotator configs, taken as they are from the generation records.
RECORD_COLUMNS = (
    "think",
    "answer",
    "annotator",
    "model_id",
    "model_revision",
    "think_closed",
    "finish_reason",
    "forced_answer",  # the think hit max_tokens and an answer was forced
    "num_prompt_tokens",
    "num_output_tokens",
    "sampling",
    "created_at",
)
VERDICT_COLUMNS = ("label_verdict", "label_score")
# The joint config's columns per annotator: <annotator>_<field> (joint_column).
JOINT_RECORD_FIELDS = ("think", "answer", "model_id")
# The rejected config's columns besides the record columns: the raw output, and why.
REJECTED_COLUMNS = {
    "output": datasets.Value("string"),
    "split": datasets.Value("string"),
    "reject_reason": datasets.Value("string"),
    "reject_detail": datasets.Value("string"),
}
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def record_features(names) -> datasets.Features:
    """The ``datasets`` features of record columns, from :data:`~generation.records.RECORD_SCHEMA`."""
    return datasets.Features.from_arrow_schema(pa.schema([RECORD_SCHEMA.field(name) for name in names]))


def joint_column(annotator: str, field: str) -> str:
    """The ``both`` config's column holding ``annotator``'s ``field`` (``glm_think``, ``kimi_answer``)."""
    return f"{annotator}_{field}"


def joint_annotators(columns: list[str]) -> list[str]:
    """The annotators of a ``both`` table, in column order, from its column names."""
    suffix = "_" + JOINT_RECORD_FIELDS[0]
    return [column.removesuffix(suffix) for column in columns if column.endswith(suffix)]


@dataclass
class ImageNetThinkConfig(datasets.BuilderConfig):
    """``kind`` is ``single`` (one annotator), ``joint`` (all ``annotators`` per row), ``verified``
    (a row per verified trace of any of ``annotators``) or ``rejected``."""

    kind: str = SINGLE
    annotators: tuple[str, ...] = ANNOTATORS
    record_dirs: tuple[str, ...] = ()
    manifest: str | None = None
    image_root: str | None = None
    validation_fraction: float = DEFAULT_FRACTIONS["validation"]
    test_fraction: float = DEFAULT_FRACTIONS["test"]
    split_seed: int = DEFAULT_SEED
    rows_per_batch: int = 100
    allow_other_manifest: bool = False  # combine runs made from other manifests (image hashes still checked)
    forced_answers: str = "keep"  # records whose answer was forced: keep them, or reject them (forced_answer)
    # Near-duplicate images (release.leakage): each group in one split; None turns it off. Images that
    # overlap the `reference` collection (a folder of images or a manifest) are rejected.
    near_duplicate_threshold: int | None = DEFAULT_THRESHOLD
    reference: str | None = None


def release_configs(annotators: tuple[str, ...], **inputs) -> dict[str, ImageNetThinkConfig]:
    """The configs of a release of ``annotators``, by name, in release order: one per annotator,
    ``both`` where there are several, ``verified`` and ``rejected``; ``inputs`` are the other
    :class:`ImageNetThinkConfig` fields (the same for all)."""
    kinds = [(a, SINGLE, (a,), ANNOTATOR_MODELS.get(a, a)) for a in annotators]
    if len(annotators) > 1:
        kinds.append((JOINT_CONFIG, JOINT, annotators, "both annotators' think and answer per image"))
    kinds.append(
        (
            VERIFIED_CONFIG,
            VERIFIED,
            annotators,
            "one row per trace whose answer names the image's class or a kind of it",
        )
    )
    kinds.append((REJECTED_CONFIG, REJECTED, annotators, "records kept out, with their reason"))
    return {
        name: ImageNetThinkConfig(name=name, kind=kind, annotators=a, description=description, **inputs)
        for name, kind, a, description in kinds
    }


def image_features(classes=None) -> dict:
    classes = classes or imagenet21k_classes()
    return {
        "image": datasets.Image(),
        "image_id": datasets.Value("string"),
        "wnid": datasets.Value("string"),
        "label": datasets.ClassLabel(names=list(classes.wnids)),
        "class_name": datasets.Value("string"),
        "question": datasets.Value("string"),
    }


def config_features(config: ImageNetThinkConfig) -> datasets.Features:
    columns = image_features()
    verdicts = record_features(VERDICT_COLUMNS)
    if config.kind == JOINT:
        joint = record_features(JOINT_RECORD_FIELDS)
        for annotator in config.annotators:
            columns.update({joint_column(annotator, f): value for f, value in joint.items()})
            columns.update({joint_column(annotator, f): value for f, value in verdicts.items()})
    else:
        columns.update(record_features(RECORD_COLUMNS))
    if config.kind in (SINGLE, VERIFIED):
        columns.update(verdicts)
    if config.kind == REJECTED:
        columns.update(REJECTED_COLUMNS)
    return datasets.Features(columns)
