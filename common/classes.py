"""ImageNet-21K-P (winter21) class metadata: 10,450 wnids with their lemmas and definitions.

Read from the text files that ``timm`` ships, without importing timm (which
needs torch and torchvision). ``label`` indices follow the order of timm's
``imagenet21k_miil_w21_synsets.txt``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

SYNSETS_FILE = "imagenet21k_miil_w21_synsets.txt"
NUM_CLASSES = 10_450


@dataclass(frozen=True)
class ImageNetClasses:
    wnids: tuple[str, ...]
    lemmas: dict[str, tuple[str, ...]]
    definitions: dict[str, str]

    def index(self, wnid: str) -> int:
        return self.positions[wnid]

    def name(self, wnid: str) -> str:
        """The first lemma, e.g. ``n01530575`` -> ``brambling``."""
        return self.lemmas[wnid][0]

    def __contains__(self, wnid: object) -> bool:
        return wnid in self.positions

    @cached_property
    def positions(self) -> dict[str, int]:
        """wnid -> label index."""
        return {wnid: i for i, wnid in enumerate(self.wnids)}


def _timm_info_dir() -> Path:
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the ImageNet-21K-P class list comes from timm: pip install timm")
    return Path(spec.submodule_search_locations[0]) / "data" / "_info"


def _read_tab_file(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8") as handle:
        return dict(line.rstrip("\n").split("\t", 1) for line in handle if "\t" in line)


@cache
def imagenet21k_classes() -> ImageNetClasses:
    info = _timm_info_dir()
    wnids = tuple((info / SYNSETS_FILE).read_text(encoding="utf-8").split())
    if len(wnids) != NUM_CLASSES:
        raise RuntimeError(f"{info / SYNSETS_FILE} lists {len(wnids)} classes, expected {NUM_CLASSES}")
    lemma_lines = _read_tab_file(info / "imagenet_synset_to_lemma.txt")
    definition_lines = _read_tab_file(info / "imagenet_synset_to_definition.txt")
    lemmas = {w: tuple(s.strip() for s in lemma_lines.get(w, w).split(",") if s.strip()) for w in wnids}
    definitions = {w: definition_lines.get(w, "") for w in wnids}
    return ImageNetClasses(wnids=wnids, lemmas=lemmas, definitions=definitions)
