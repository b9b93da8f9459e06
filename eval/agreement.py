"""The annotator agreement: the ceiling row of ``eval score``'s tables, cached per release split.

What it is and where its cache lives: docs/eval.md, "Annotator agreement (the ceiling)". Here: the
references scored against each other in both directions and summarized as a model is
(:func:`annotator_agreement`), and the cache file per release split and settings, read when its key
matches and written atomically otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from tqdm.auto import tqdm

from eval.aggregate import (
    ReferenceScores,
    agreement_scores,
    batched_rows,
    bootstrap_settings,
    corpus_frequencies,
    reference_segments,
    summarize,
)
from eval.metrics import PAPER_METRICS
from eval.metrics import backbones as metric_backbones

log = logging.getLogger(__name__)
AGREEMENT_FOLDER = ".annotator_agreement"  # beside the report folder: one file per release split and settings
AGREEMENT_LABEL = "annotator agreement"
AGREEMENT_VERSION = 1


def agreement_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def annotator_agreement(
    references,
    annotators: list[str],
    *,
    dataset: str,
    split: str,
    fingerprint: str,
    batch_size: int,
    metrics: tuple[str, ...] = PAPER_METRICS,
    full_length: bool = False,
    n_boot: int = 1000,
    cache: Path | None = None,
) -> dict:
    """The ceiling row: the references of every image of the split scored against each other
    (glm as the candidate against kimi, and kimi against glm) with ``metrics``, summarized as a
    model is (Avg of Avg over the two directions, Avg of Max the larger, bootstrap intervals).

    Computed once per release split and settings: the result is kept in ``cache`` (a folder) as
    ``<key>.json``, the key a sha256 over the split's fingerprint, the annotators, the metrics,
    ``full_length``, the backbones and the bootstrap settings; a later call with the same key
    reads it. A cache that cannot be written is logged and skipped.
    """
    settings = {
        "version": AGREEMENT_VERSION,
        "split_sha256": fingerprint,
        "annotators": list(annotators),
        "metrics": list(metrics),
        "full_length": full_length,
        "backbones": metric_backbones(metrics),
        "bootstrap": bootstrap_settings(n_boot),
    }
    key = agreement_key(settings)
    path = cache / f"{key[:16]}.json" if cache is not None else None
    kept = _cached(path, key) if path is not None else None
    if kept is not None:
        log.info("annotator agreement of %s split %s read from %s", dataset, split, path)
        return {**kept, "cache": str(path)}
    pairs, summary = _scored(references, annotators, metrics, full_length, n_boot, batch_size)
    result = {
        "label": AGREEMENT_LABEL,
        "pairs": pairs,
        "dataset": dataset,
        "split": split,
        "split_sha256": fingerprint,
        **summary,
    }
    if path is not None and not _keep(path, {"key": key, "settings": settings, "agreement": result}):
        path = None
    else:
        log.info("annotator agreement of %s split %s written to %s", dataset, split, path)
    return {**result, "cache": str(path) if path is not None else None}


def _cached(path: Path, key: str) -> dict | None:
    """The agreement kept at ``path`` under ``key``; None where there is none (or another)."""
    if not path.is_file():
        return None
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        kept = None
    if isinstance(kept, dict) and kept.get("key") == key and isinstance(kept.get("agreement"), dict):
        return kept["agreement"]
    log.warning("%s is not an annotator agreement of these settings; computing it again", path)
    return None


def _scored(
    references, annotators, metrics, full_length: bool, n_boot: int, batch_size: int
) -> tuple[list, dict]:
    """The references scored against each other, ``batch_size`` rows at a time, and summarized."""
    idf_corpora = None
    if "tfidf_cosine_corpus" in metrics:
        idf_corpora = corpus_frequencies(
            [reference_segments(rows, a) for a in annotators] for rows in batched_rows(references, batch_size)
        )
    parts, pairs = [], []
    progress = tqdm(
        total=len(references), desc="annotator agreement", unit="image", disable=len(references) <= batch_size
    )
    for rows in batched_rows(references, batch_size):
        texts = {a: reference_segments(rows, a) for a in annotators}
        scored, pairs = agreement_scores(texts, metrics, full_length=full_length, idf_corpora=idf_corpora)
        parts.append(scored)
        progress.update(len(rows["image_id"]))
    progress.close()
    return pairs, summarize(ReferenceScores.concatenate(parts), n_boot=n_boot)


def _keep(path: Path, entry: dict) -> bool:
    """Write ``entry`` to ``path`` atomically; False (logged) where it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")
        temporary.replace(path)
    except OSError as error:
        log.warning("the annotator agreement could not be cached in %s (%s)", path.parent, error)
        return False
    return True
