"""The paper's Table 1 and Table 2 for any release, and the vocabulary figure of its section 4.3
(``imagenet-think stats``; the build writes them into ``stats.json`` and the card).

What each figure counts (samples, token counts, words, vocabulary blocks) is stated in
docs/release.md, "What the statistics count". The counted blocks' unique words come with the trace
report's words (:mod:`release.think_words`, in a second process for a large release), at most
:data:`MAX_VOCABULARY_BLOCKS` blocks, so that the cost stays bounded.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from generation.verdicts.labels import CORRECT_KINDS, KINDS
from imagenet_think_errors import InputError
from release.folder import read_marker, verify_release
from release.leakage import leakage_lines
from release.schema import REJECTED_CONFIG, VERDICT_COLUMNS
from release.splits import SPLITS
from release.think_words import think_words
from release.trace_quality import trace_quality_lines

EXAMPLE = "imagenet-think stats imagenet_think --json stats.json"
RULES = "what each figure counts, and the trace-quality measures: docs/release.md"
VOCABULARY_BLOCK = 1000
MAX_VOCABULARY_BLOCKS = 50  # past 50,000 samples, every k-th block is counted, evenly over the release


# The columns of a per-annotator config the statistics read (release.trace_quality reads the last two).
COLUMNS = [
    "image_id",
    "wnid",
    "think",
    "answer",
    "num_output_tokens",
    *VERDICT_COLUMNS,
    "forced_answer",
    "think_closed",
    "finish_reason",
]
REJECTED_COLUMNS = ["annotator", "reject_reason"]  # of the rejected config


def _token_counter(tokenizer: str | None):
    if tokenizer is None:
        return "each annotator's own tokenizer (num_output_tokens of the raw output)", None
    from transformers import AutoTokenizer

    from common.model_refs import resolve_model

    loaded = AutoTokenizer.from_pretrained(resolve_model(tokenizer))

    def count(thinks: list[str], answers: list[str]) -> list[int]:
        texts = [f"{t}\n{a}" for t, a in zip(thinks, answers, strict=True)]
        return [len(ids) for ids in loaded(texts, add_special_tokens=False)["input_ids"]]

    # A local folder is named by its name only: the statistics are published with the release.
    name = Path(tokenizer).name if Path(tokenizer).expanduser().is_dir() else tokenizer
    return f"{name} over think + answer", count


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "max": 0, "avg": 0.0, "total": 0}
    array = np.asarray(values, dtype=np.int64)
    return {
        "min": int(array.min()),
        "max": int(array.max()),
        "avg": float(array.mean()),
        "total": int(array.sum()),
    }


class ReleaseStats:
    """Statistics accumulated over a release's per-annotator rows, fed table by table.

    ``samples`` gives each annotator's row count up front (it sets which vocabulary
    blocks are counted). Each annotator's rows must come in release order: splits
    train, validation, test, then shards and rows in order. ``imagenet-think build``
    feeds the tables as it writes them; ``compute_stats`` reads a written release.
    """

    def __init__(self, samples: dict[str, int], tokenizer: str | None = None, words=None):
        self.tokenizer_name, self._count_tokens = _token_counter(tokenizer)
        full_blocks = {a: n // VOCABULARY_BLOCK for a, n in samples.items()}
        self._stride = max(1, -(-sum(full_blocks.values()) // MAX_VOCABULARY_BLOCKS))  # every stride-th block
        # Block k of an annotator is block first[annotator] + k of the release, whatever order tables come in.
        firsts = np.cumsum([0, *full_blocks.values()])[:-1]
        self._first_block = {a: int(first) for a, first in zip(samples, firsts, strict=True)}
        self._block = dict.fromkeys(samples, 0)  # each annotator's block being filled
        self._filled = dict.fromkeys(samples, 0)  # and its rows so far
        self._images: dict[str, str] = {}
        self._tokens: dict[str, list[int]] = {a: [] for a in samples}
        self._verdicts: dict[str, Counter] = {a: Counter() for a in samples}
        self._label_score = dict.fromkeys(samples, 0.0)
        self._forced = dict.fromkeys(samples, 0)  # released rows whose answer was forced
        self._rejected: dict[str, Counter] = {a: Counter() for a in samples}  # reject reasons
        # The trace report and the counted blocks' words: ``words`` if the caller started them
        # (release.think_words), else a ThinkWords for this many samples.
        self._words = words or think_words(samples, sum(samples.values()))

    def add(self, annotator: str, table: pa.Table) -> None:
        """Count the rows of ``table`` (columns ``COLUMNS``), the next rows of ``annotator``."""
        self._images.update(zip(table["image_id"].to_pylist(), table["wnid"].to_pylist(), strict=True))
        thinks = table["think"]
        counts = (
            self._count_tokens(thinks.to_pylist(), table["answer"].to_pylist())
            if self._count_tokens
            else table["num_output_tokens"].to_pylist()
        )
        self._tokens[annotator].extend(counts)
        self._verdicts[annotator].update(table["label_verdict"].to_pylist())
        if "forced_answer" in table.column_names:  # releases built before answer forcing lack it
            self._forced[annotator] += int(pc.sum(table["forced_answer"]).as_py() or 0)
        self._label_score[annotator] += float(pc.sum(table["label_score"]).as_py() or 0.0)
        self._words.add(annotator, table, self._counted_blocks(annotator, table.num_rows))

    def _counted_blocks(self, annotator: str, rows: int) -> list[tuple[tuple[str, int], int, int, bool]]:
        """The next ``rows`` rows of ``annotator`` in counted vocabulary blocks: ((annotator, its block),
        first row, end row, whether that fills the block)."""
        blocks, position = [], 0
        while position < rows:
            take = min(VOCABULARY_BLOCK - self._filled[annotator], rows - position)
            block = self._block[annotator]
            self._filled[annotator] += take
            full = self._filled[annotator] == VOCABULARY_BLOCK
            if (self._first_block[annotator] + block) % self._stride == 0:  # the release's block index
                blocks.append(((annotator, block), position, position + take, full))
            position += take
            if full:
                self._filled[annotator] = 0
                self._block[annotator] += 1
        return blocks

    def add_rejected(self, table: pa.Table) -> None:
        """Count the rows of a ``rejected`` table (columns ``REJECTED_COLUMNS``) of the annotators counted."""
        for annotator, reason in zip(
            table["annotator"].to_pylist(), table["reject_reason"].to_pylist(), strict=True
        ):
            if annotator in self._rejected:
                self._rejected[annotator][reason] += 1

    def result(self) -> dict:
        tokens = self._tokens
        words = self._words.result(tokens)
        block_words, leftover = words["block_words"], sum(self._filled.values())
        all_tokens = [n for counts in tokens.values() for n in counts]
        per_class = list(Counter(self._images.values()).values())
        return {
            "images": len(self._images),
            "classes": len(per_class),
            "images_per_class": {k: v for k, v in _summary(per_class).items() if k != "total"},
            "samples": len(all_tokens),
            "tokenizer": self.tokenizer_name,
            "tokens_per_sample": _summary(all_tokens),
            "tokens_per_sample_by_annotator": {
                a: {**_summary(c), "samples": len(c)} for a, c in tokens.items()
            },
            "unique_words_per_1000_samples": float(np.mean(block_words))
            if block_words
            else float(words["leftover_words"]),
            "vocabulary_blocks": len(block_words) or (1 if leftover else 0),
            "vocabulary_block_size": VOCABULARY_BLOCK if block_words else leftover,
            "label_verdicts_by_annotator": {
                a: {
                    "samples": len(tokens[a]),
                    "share": {kind: self._verdicts[a][kind] / max(len(tokens[a]), 1) for kind in KINDS},
                    "mean_label_score": self._label_score[a] / max(len(tokens[a]), 1),
                }
                for a in tokens
            },
            "verified_samples": sum(self._verdicts[a][kind] for a in tokens for kind in CORRECT_KINDS),
            # Answers forced (on_truncation: force_answer) among the released samples; records
            # rejected, by reason (not_english among them), per annotator.
            "forced_answers_by_annotator": dict(self._forced),
            "rejected_by_annotator": {a: dict(sorted(c.items())) for a, c in self._rejected.items()},
            "trace_quality": words["trace_quality"],
        }


def config_shards(out: Path, marker: dict, config: str) -> list[Path]:
    """A config's Parquet shards as ``marker`` (the release's ``release.json``) lists them, in
    release order: splits train, validation, test, then shard index."""
    order = {split: i for i, split in enumerate(SPLITS)}
    names = [name for name in marker["files"] if name.startswith(f"{config}/") and name.endswith(".parquet")]
    return sorted(
        (out / name for name in names),
        key=lambda path: (order.get(path.name.split("-")[0], len(order)), path.name),
    )


def compute_stats(out: str | Path, annotators: tuple[str, ...], tokenizer: str | None = None) -> dict:
    """Statistics of the release folder ``out`` over its per-annotator configs (all splits), read
    from the files its ``release.json`` lists once they are verified (:func:`release.folder.verify_release`)."""
    out = Path(out)
    marker = verify_release(out, configs=(*annotators, REJECTED_CONFIG))
    files = {a: config_shards(out, marker, a) for a in annotators}
    stats = ReleaseStats(
        {a: sum(pq.ParquetFile(p).metadata.num_rows for p in paths) for a, paths in files.items()}, tokenizer
    )
    for annotator, paths in files.items():
        for path in paths:
            parquet = pq.ParquetFile(path)
            columns = [c for c in COLUMNS if c in parquet.schema_arrow.names]
            for group in range(parquet.num_row_groups):
                stats.add(annotator, parquet.read_row_group(group, columns=columns))
    for path in config_shards(out, marker, REJECTED_CONFIG):
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            stats.add_rejected(parquet.read_row_group(group, columns=REJECTED_COLUMNS))
    near_duplicates = read_marker(out).get("near_duplicates")  # what the build did (release.leakage)
    return {**stats.result(), **({"near_duplicates": near_duplicates} if near_duplicates else {})}


def _number(value: float) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def stats_markdown(stats: dict) -> str:
    """Table 1 (tokens per sample) and Table 2 (images per class) as Markdown."""
    tokens, per_class = stats["tokens_per_sample"], stats["images_per_class"]
    lines = [
        f"Tokens counted with {stats['tokenizer']}.",
        "",
        "| | #Images | #Samples | Min tokens | Max tokens | Avg tokens | Total tokens |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| all | {_number(stats['images'])} | {_number(stats['samples'])} | {_number(tokens['min'])} | "
        f"{_number(tokens['max'])} | {_number(tokens['avg'])} | {_number(tokens['total'])} |",
    ]
    for annotator, summary in stats["tokens_per_sample_by_annotator"].items():
        lines.append(
            f"| {annotator} | | {_number(summary['samples'])} | {_number(summary['min'])} | {_number(summary['max'])} | "
            f"{_number(summary['avg'])} | {_number(summary['total'])} |"
        )
    lines += [
        "",
        "| Total images | Total classes | Min. per class | Max. per class | Avg. per class |",
        "|---:|---:|---:|---:|---:|",
        f"| {_number(stats['images'])} | {_number(stats['classes'])} | {_number(per_class['min'])} | "
        f"{_number(per_class['max'])} | {_number(per_class['avg'])} |",
        "",
        f"Vocabulary: {stats['unique_words_per_1000_samples']:,.0f} unique words per 1,000 reasoning samples "
        + (
            f"(mean over {stats['vocabulary_blocks']} block(s) of 1,000 consecutive samples of one annotator)."
            if stats["vocabulary_block_size"] == VOCABULARY_BLOCK
            else f"(all {stats['vocabulary_block_size']:,} samples: no annotator has 1,000)."
        ),
        "",
        "Label verdicts of the answers against the image's class (WordNet 3.0; share of samples):",
        "",
        "| | " + " | ".join(KINDS) + " | Mean label score |",
        "|---|" + "---:|" * (len(KINDS) + 1),
        *(
            f"| {annotator} | "
            + " | ".join(f"{verdicts['share'][kind]:.1%}" for kind in KINDS)
            + f" | {verdicts['mean_label_score']:.3f} |"
            for annotator, verdicts in stats["label_verdicts_by_annotator"].items()
        ),
        "",
        f"Verified traces (`exact` or `hyponym`, the `verified` config): {stats['verified_samples']:,}.",
    ]
    lines += _quality_lines(stats)
    lines += trace_quality_lines(stats)
    lines += leakage_lines(stats)
    return "\n".join(lines)


def _quality_lines(stats: dict) -> list[str]:
    """Per annotator: answers forced among the released samples, and records not English (rejected)."""
    samples = {a: s["samples"] for a, s in stats["tokens_per_sample_by_annotator"].items()}
    forced = stats.get("forced_answers_by_annotator", {})
    rejected = stats.get("rejected_by_annotator", {})
    lines = [
        "",
        "Answers forced and traces not English, per annotator:",
        "",
        "| | Samples | Answer forced (kept) | Not English (rejected) | Rejected, all reasons |",
        "|---|---:|---:|---:|---:|",
    ]
    for annotator, n in samples.items():
        reasons = rejected.get(annotator, {})
        forced_n = forced.get(annotator, 0)
        lines.append(
            f"| {annotator} | {n:,} | {forced_n:,} ({forced_n / max(n, 1):.1%}) | "
            f"{reasons.get('not_english', 0):,} | {sum(reasons.values()):,} |"
        )
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release", help="a release folder written by `imagenet-think build`")
    parser.add_argument(
        "--annotators", nargs="+", help="per-annotator configs to count (default: all of the release's)"
    )
    parser.add_argument(
        "--tokenizer", help="count think + answer tokens with this tokenizer (hub id, path, tiny:...)"
    )
    parser.add_argument("--json", help="also write the statistics as JSON here")


def _release_annotators(out: Path, wanted: list[str] | None) -> tuple[str, ...]:
    """The per-annotator configs to count: ``wanted`` (each must be in the release), else all of them."""
    released = tuple(read_marker(out)["annotators"])
    if not wanted:
        return released
    unknown = [a for a in wanted if a not in released]
    if unknown:
        raise InputError(
            f"{out} has no config {', '.join(unknown)}; its per-annotator configs are {', '.join(released)}"
        )
    return tuple(wanted)


def run(args: argparse.Namespace) -> int:
    out = Path(args.release)
    annotators = _release_annotators(out, args.annotators)
    stats = compute_stats(out, annotators, tokenizer=args.tokenizer)
    print(stats_markdown(stats))
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        print(f"\nJSON written to {args.json}")
    return 0
