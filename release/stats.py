"""The paper's Table 1 and Table 2 for any release, and the vocabulary figure of its section 4.3.

A *sample* is one think/answer pair (one row of a per-annotator config). Its
token count is, by default, ``num_output_tokens``: the annotator model's own
tokenizer over the whole raw output, delimiters included; ``--tokenizer``
counts ``think`` + ``answer`` with another tokenizer instead (so that releases
made with different models compare). Words, for the vocabulary figure, are
lowercase ``[a-z]+`` runs of the think text; unique words are counted per
consecutive block of 1,000 samples and averaged over the full blocks (over all
samples, if there are fewer than 1,000); past 50 blocks, every k-th block is
counted, evenly over the release, so that the cost stays bounded.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EXAMPLE = "imagenet-think stats imagenet_think --json stats.json"
VOCABULARY_BLOCK = 1000
MAX_VOCABULARY_BLOCKS = 50  # past 50,000 samples, every k-th block is counted, evenly over the release
# Everything but a-z becomes a space, so that split() gives exactly re.findall("[a-z]+", text.lower()).
_NOT_A_LETTER = bytes(c if ord("a") <= c <= ord("z") else ord(" ") for c in range(256))


def unique_words(thinks: list[str]) -> int:
    """How many distinct lowercase ``[a-z]+`` runs the texts hold together."""
    seen: set[bytes] = set()
    for think in thinks:
        seen.update(think.lower().encode("ascii", "replace").translate(_NOT_A_LETTER).split())
    return len(seen)


COLUMNS = ["image_id", "wnid", "think", "answer", "num_output_tokens"]


def _batches(out: Path, annotator: str, columns: list[str]) -> Iterator[pa.Table]:
    for path in sorted((out / annotator).glob("*.parquet")):
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group, columns=columns)


def _token_counter(tokenizer: str | None):
    if tokenizer is None:
        return "each annotator's own tokenizer (num_output_tokens of the raw output)", None
    from transformers import AutoTokenizer

    from generation.tiny_models import resolve_model

    loaded = AutoTokenizer.from_pretrained(resolve_model(tokenizer))

    def count(thinks: list[str], answers: list[str]) -> list[int]:
        texts = [f"{t}\n{a}" for t, a in zip(thinks, answers, strict=True)]
        return [len(ids) for ids in loaded(texts, add_special_tokens=False)["input_ids"]]

    return f"{tokenizer} over think + answer", count


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


def compute_stats(out: str | Path, annotators: tuple[str, ...], tokenizer: str | None = None) -> dict:
    """Statistics of the release folder ``out`` over its per-annotator configs (all splits)."""
    out = Path(out)
    tokenizer_name, count_tokens = _token_counter(tokenizer)
    images: dict[str, str] = {}
    tokens: dict[str, list[int]] = {a: [] for a in annotators}
    total = sum(pq.ParquetFile(p).metadata.num_rows for a in annotators for p in (out / a).glob("*.parquet"))
    stride = max(1, -(-total // (VOCABULARY_BLOCK * MAX_VOCABULARY_BLOCKS)))  # count every stride-th block
    blocks: list[int] = []
    pending: list[str] = []  # think texts of the block being filled
    filled = 0  # full blocks seen
    for annotator in annotators:
        for batch in _batches(out, annotator, COLUMNS):
            images.update(zip(batch["image_id"].to_pylist(), batch["wnid"].to_pylist(), strict=True))
            counts = (
                count_tokens(batch["think"].to_pylist(), batch["answer"].to_pylist())
                if count_tokens
                else batch["num_output_tokens"].to_pylist()
            )
            tokens[annotator].extend(counts)
            position = 0
            while position < batch.num_rows:
                take = min(VOCABULARY_BLOCK - len(pending), batch.num_rows - position)
                if filled % stride == 0:
                    pending.extend(batch["think"].slice(position, take).to_pylist())
                else:
                    pending.extend([""] * take)  # a block not counted: only its size matters
                position += take
                if len(pending) == VOCABULARY_BLOCK:
                    if filled % stride == 0:
                        blocks.append(unique_words(pending))
                    pending, filled = [], filled + 1
    all_tokens = [n for counts in tokens.values() for n in counts]
    per_class = list(Counter(images.values()).values())
    vocabulary = float(np.mean(blocks)) if blocks else float(unique_words(pending))
    return {
        "images": len(images),
        "classes": len(per_class),
        "images_per_class": {k: v for k, v in _summary(per_class).items() if k != "total"},
        "samples": len(all_tokens),
        "tokenizer": tokenizer_name,
        "tokens_per_sample": _summary(all_tokens),
        "tokens_per_sample_by_annotator": {a: {**_summary(c), "samples": len(c)} for a, c in tokens.items()},
        "unique_words_per_1000_samples": vocabulary,
        "vocabulary_blocks": len(blocks) or (1 if pending else 0),
        "vocabulary_block_size": VOCABULARY_BLOCK if blocks else len(pending),
    }


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
        f"({stats['vocabulary_blocks']} block(s) of {stats['vocabulary_block_size']:,} samples).",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release", help="a release folder written by `imagenet-think build`")
    parser.add_argument(
        "--annotators", nargs="+", help="per-annotator configs (default: those in stats.json)"
    )
    parser.add_argument(
        "--tokenizer", help="count think + answer tokens with this tokenizer (hub id, path, tiny:...)"
    )
    parser.add_argument("--json", help="also write the statistics as JSON here")


def _release_annotators(out: Path) -> tuple[str, ...]:
    recorded = out / "stats.json"
    if recorded.is_file():
        return tuple(json.loads(recorded.read_text())["tokens_per_sample_by_annotator"])
    raise FileNotFoundError(f"{recorded} not found: pass --annotators")


def run(args: argparse.Namespace) -> int:
    out = Path(args.release)
    annotators = tuple(args.annotators) if args.annotators else _release_annotators(out)
    stats = compute_stats(out, annotators, tokenizer=args.tokenizer)
    print(stats_markdown(stats))
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        print(f"\nJSON written to {args.json}")
    return 0
