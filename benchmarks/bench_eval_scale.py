"""Evaluation at scale: time and peak memory of the metric suite and of ``eval score`` at several sizes.

    .venv/bin/python -m benchmarks.bench_eval_scale --pairs 2000 8000 --examples 500 2000 --words 1500

Each size runs in a fresh process: the lexical suite (``eval.metrics.similarities``) on
``--pairs`` synthetic pairs, chunked and in one chunk; and ``eval score`` (lexical metrics) on a
synthetic release of ``--examples`` images and a predictions folder for it, as the first model of
the split (the agreement ceiling computed) and as a further one (read from its cache). Memory is
the peak anonymous resident memory (``RssAnon``, sampled every 5 ms) above what the process held
once its inputs were made. It prints the ratios between the largest and smallest size (target:
flat memory, linear time) and the projection to 500K pairs; figures in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LEXICAL = ("rouge1", "rougeL", "jaccard", "overlap", "tfidf_cosine", "tf_cosine", "tfidf_cosine_corpus")
SCORE_METRICS = ("rouge1", "rougeL", "jaccard", "overlap", "tfidf_cosine", "tf_cosine")
PROJECTED_PAIRS = 500_000


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """The highest ``RssAnon`` seen while the block runs, in MiB, and the level before it."""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.before = self.peak = _status_kib("RssAnon") / 1024
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _status_kib("RssAnon") / 1024)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kib("RssAnon") / 1024)

    @property
    def above(self) -> float:
        return self.peak - self.before


# ---------------------------------------------------------------------------------------
# Children: one measurement each, printed as a JSON line.


def child_suite(pairs: int, words: int, chunk_size: int | None) -> dict:
    from benchmarks.bench_metrics import make_pairs
    from eval import lexical, metrics

    candidates, references = make_pairs(pairs, words)
    metrics.similarities(LEXICAL, candidates[:4], references[:4])  # imports outside the measurement
    lexical.set_token_cache(lexical.DEFAULT_TOKEN_CACHE)  # empty: every text is tokenized
    options = {"chunk_size": chunk_size} if chunk_size else {}
    with PeakMemory() as memory:
        start, cpu = time.perf_counter(), time.process_time()
        metrics.similarities(LEXICAL, candidates, references, **options)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "pairs": pairs,
        "seconds": seconds,
        "cpu": cpu,
        "above_mib": memory.above,
        "peak_mib": memory.peak,
    }


def child_score(predictions: str, out: str) -> dict:
    """Two runs of ``eval score``: the first model of a release split (the annotator agreement
    computed and cached beside the report) and a further one (the agreement read from the cache)."""
    from eval import lexical
    from eval.score import ScoreOptions, score
    from generation.verdicts.labels import label_verdicts

    warm = Path(out).parent / "warm-up" / "report"  # imports, the verdicts' automaton, caches
    score(ScoreOptions(predictions, warm, metrics=SCORE_METRICS, n_boot=10, batch_size=64, agreement=False))
    label_verdicts(["a finch"], ["n01530575"])
    runs = {}
    for run, folder in (("first", "report"), ("further", "report-2")):
        lexical.set_token_cache(lexical.DEFAULT_TOKEN_CACHE)  # empty: every text is tokenized
        with PeakMemory() as memory:
            start, cpu = time.perf_counter(), time.process_time()
            summary = score(ScoreOptions(predictions, Path(out).parent / folder, metrics=SCORE_METRICS))
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        examples = summary["n_examples"]
        runs[run] = {
            "examples": examples,
            "pairs": 2 * examples * 3,  # two references, three segments
            "seconds": seconds,
            "cpu": cpu,
            "above_mib": memory.above,
            "peak_mib": memory.peak,
        }
    return runs


# ---------------------------------------------------------------------------------------
# Synthetic release and predictions (setup, not measured)


def make_release(root: Path, examples: int, words: int) -> Path:
    """A release of ``examples`` images (all in ``train``) with glm and kimi records of about
    ``words`` words, and a predictions folder for its train split; returns the predictions folder."""
    import numpy as np

    from benchmarks.bench_metrics import document, sentence, vocabulary
    from eval.predict import EVAL_FILE, materialize_split, split_fingerprint
    from generation.records import read_manifest
    from release.build import BuildOptions, build_release
    from tests.fixtures.synthetic import make_record, write_manifest_tree, write_run

    per_class = 50
    _, entries = write_manifest_tree(root, classes=-(-examples // per_class), per_class=per_class)
    entries = entries[:examples]
    rng, texts = np.random.default_rng(0), {}
    word_list, cdf = vocabulary()
    for entry in entries:
        shared = [sentence(rng, word_list, cdf) for _ in range(40)]
        texts[entry.image_id] = [document(rng, shared, words, word_list, cdf) for _ in range(3)]

    def record(entry, annotator: str, k: int):
        think, answer = texts[entry.image_id][k], f"It is a {entry.wnid}."
        return make_record(entry, annotator, random.Random(k), think=think, answer=answer, output=think)

    for k, annotator in enumerate(("glm", "kimi")):
        write_run(root / annotator, [record(e, annotator, k) for e in entries], per_shard=256)
    release = root / "release"
    build_release(
        BuildOptions(
            [root / "glm", root / "kimi"],
            root / "manifest.parquet",
            release,
            validation_fraction=0,
            test_fraction=0,
        ),
    )
    predictions = root / "predictions"
    manifest = materialize_split(str(release), "train", predictions)
    table, _ = read_manifest(manifest)
    ids, wnids = table["image_id"].to_pylist(), table["wnid"].to_pylist()
    by_id = {e.image_id: e for e in entries}
    write_run(
        predictions / "records",
        [record(by_id[i], "synthetic_model", 2) for i in ids],
        per_shard=256,
        manifest=manifest,
        annotator="synthetic_model",
    )
    made_on = {"dataset": str(release), "split": "train", "limit": None}
    (predictions / EVAL_FILE).write_text(
        json.dumps({**made_on, "split_sha256": split_fingerprint(ids, wnids)})
    )
    return predictions


# ---------------------------------------------------------------------------------------
# The driver


def run_child(*args: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_eval_scale", "--child", *args]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _times(value: float, base: float) -> str:
    return f"x{value / base:.2f}" if base >= 1 else f"n/a ({value:.0f} MiB against {base:.1f})"


def report(title: str, rows: list[dict], unit: str) -> None:
    print(f"\n{title}")
    print(
        f"{unit:>10}{'pairs':>10}{'seconds':>9}{'CPU s':>8}{'pairs/s':>9}{'peak above inputs':>19}"
        f"{'peak RssAnon':>14}"
    )
    for row in rows:
        size = row.get("examples", row["pairs"])
        print(
            f"{size:>10,}{row['pairs']:>10,}{row['seconds']:>9.1f}{row['cpu']:>8.1f}"
            f"{row['pairs'] / row['seconds']:>9,.0f}{row['above_mib']:>15,.0f} MiB{row['peak_mib']:>10,.0f} MiB"
        )
    first, last = rows[0], rows[-1]
    growth = last["pairs"] / first["pairs"]
    print(
        f"{growth:.0f}x the pairs: time x{last['seconds'] / first['seconds']:.2f}, CPU time "
        f"x{last['cpu'] / first['cpu']:.2f} (linear: x{growth:.0f}); memory above inputs "
        f"{_times(last['above_mib'], first['above_mib'])}, peak RssAnon {_times(last['peak_mib'], first['peak_mib'])}"
    )
    # Projection: time linear from the largest size; memory above inputs growing from there as it
    # grew between the two largest sizes (an upper bound where it is flat).
    before = rows[-2] if len(rows) > 1 else first
    per_pair = max(0.0, (last["above_mib"] - before["above_mib"]) / max(1, last["pairs"] - before["pairs"]))
    projected = last["above_mib"] + per_pair * (PROJECTED_PAIRS - last["pairs"])
    print(
        f"projection to {PROJECTED_PAIRS:,} pairs: {PROJECTED_PAIRS * last['seconds'] / last['pairs'] / 60:.0f} min "
        f"({PROJECTED_PAIRS * last['cpu'] / last['pairs'] / 60:.0f} CPU min) on this machine; memory above "
        f"inputs {projected:,.0f} MiB ({per_pair * 1024:.2f} KiB a pair beyond {last['pairs']:,}, as between "
        f"the two largest sizes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[2000, 8000], help="suite sizes")
    parser.add_argument("--examples", type=int, nargs="+", default=[500, 2000], help="eval score sizes")
    parser.add_argument("--words", type=int, default=1500)
    parser.add_argument("--unchunked", action="store_true", help="also the suite in one chunk (as before)")
    parser.add_argument("--skip-suite", action="store_true")
    parser.add_argument("--skip-score", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "suite":
            result = child_suite(int(rest[0]), int(rest[1]), int(rest[2]) or None)
        else:
            result = child_score(rest[0], rest[1])
        print(json.dumps(result))
        return

    if not args.skip_suite:
        for label, chunk in [("chunked (default chunk_size)", 0)] + (
            [("one chunk (as before chunking)", -1)] if args.unchunked else []
        ):
            rows = []
            for pairs in args.pairs:
                rows.append(run_child("suite", str(pairs), str(args.words), str(pairs if chunk else 0)))
            report(f"Lexical metric suite, {label}, {args.words}-word texts", rows, "pairs")
    if not args.skip_score:
        rows: dict[str, list[dict]] = {"first": [], "further": []}
        with tempfile.TemporaryDirectory(prefix="bench-eval-scale-") as folder:
            for examples in args.examples:
                root = Path(folder) / f"n{examples}"
                start = time.perf_counter()
                predictions = make_release(root, examples, args.words)
                print(
                    f"(setup: release and predictions of {examples:,} images in {time.perf_counter() - start:.0f} s)"
                )
                for run, result in run_child("score", str(predictions), str(root / "report")).items():
                    rows[run].append(result)
        for run, what in (
            ("first", "the first model of a release split: annotator agreement computed and cached"),
            ("further", "a further model: annotator agreement read from the cache"),
        ):
            title = f"eval score (lexical paper metrics, 1000 bootstrap resamples, verdicts), {what}"
            report(f"{title}, {args.words}-word texts", rows[run], "images")


if __name__ == "__main__":
    main()
