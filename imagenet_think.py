"""ImageNet-Think as a ``datasets`` builder: generation shards + image manifest + images -> rows.

The builder owns nothing but itself, on top of :mod:`release`: the configs (``glm``, ``kimi`` or
any annotator name, ``both``, ``verified``, ``rejected``), their columns and features are
:mod:`release.schema`'s, the splits :mod:`release.splits`' (``assign_splits``), the rows
:mod:`release.rows`'. ``datasets`` >= 4 no longer loads scripts, so this builder is used directly,
and ``imagenet-think build`` writes the same rows as the Parquet release that ``load_dataset``
reads::

    builder = ImageNetThink(config_name="both", data_dir="runs/")  # manifest.parquet + run folders
    builder.download_and_prepare()
    ds = builder.as_dataset("train")
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

import datasets
import pyarrow as pa

from release.rows import Sources, rejected_tables, rows_table
from release.schema import (
    ANNOTATORS,
    CITATION,
    JOINT_CONFIG,
    REJECTED,
    SINGLE,
    ImageNetThinkConfig,
    config_features,
    release_configs,
)
from release.splits import SPLITS


class ImageNetThink(datasets.ArrowBasedBuilder):
    """ImageNet-Think: ImageNet-21K-P images with thinking VLMs' reasoning traces and answers."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = ImageNetThinkConfig
    BUILDER_CONFIGS = list(release_configs(ANNOTATORS).values())
    DEFAULT_CONFIG_NAME = JOINT_CONFIG

    def _create_builder_config(self, config_name=None, custom_features=None, **config_kwargs):
        if isinstance(config_name, str) and config_name not in self.builder_configs:
            # Any other annotator name is a per-annotator config of a release made with other models.
            config_kwargs.update(name=config_name, kind=SINGLE, annotators=(config_name,))
            config_name = None
        return super()._create_builder_config(config_name, custom_features, **config_kwargs)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=__doc__.split("\n")[0],
            features=config_features(self.config),
            homepage="https://arxiv.org/abs/2510.01582",
            # The images are ImageNet's (docs/release.md: the card declares it, the Hub gates on it).
            license="images: ImageNet terms of access (https://image-net.org/download.php); texts: also "
            "the annotator models' licences",
            citation=CITATION,
        )

    @cached_property
    def sources(self) -> Sources:
        return Sources(self.config)

    def _split_generators(self, dl_manager):
        names = ("train",) if self.config.kind == REJECTED else SPLITS
        return [datasets.SplitGenerator(name=name, gen_kwargs={"split": name}) for name in names]

    def _generate_tables(self, split: str) -> Iterator[tuple[str, pa.Table]]:
        if self.config.kind == REJECTED:
            for index, table in enumerate(rejected_tables(self.config, self.sources)):
                yield f"{split}-{index}", table
            return
        for index, rows in enumerate(self.sources.image_batches(split, self.config.rows_per_batch)):
            table = rows_table(self.config, self.sources, rows, self.sources.images.cell)
            if table is not None:
                yield f"{split}-{index}", table
