"""eval generate -> score -> report on a tiny release, with a tiny model through the real vLLM engine."""

import json
import random

import pyarrow.parquet as pq
import pytest
from synthetic import make_record, write_manifest_tree, write_run

from generation.records import iter_rows
from imagenet_think_cli import main as cli
from release.build import build_release

REFERENCES = ("glm", "kimi")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    manifest, entries = write_manifest_tree(root, classes=3, per_class=5)
    rng = random.Random(7)
    for annotator in REFERENCES:
        records = [make_record(e, annotator, rng) for e in entries]
        # The first image's answers name its class, so the label accuracy of both references is > 0.
        records[0] = make_record(entries[0], annotator, rng, answer="It is a goose, a large waterbird.")
        write_run(root / annotator, records)
    build_release(
        [root / a for a in REFERENCES],
        manifest,
        root / "imagenet_think",
        validation_fraction=0.2,
        test_fraction=0.2,
    )
    return root


def test_generate_score_report(release, tmp_path):
    dataset = str(release / "imagenet_think")
    predictions, report = tmp_path / "pred", tmp_path / "report"
    args = ["eval", "generate", "--model", "configs/models/tiny_baseline.yaml", "--dataset", dataset]
    with pytest.raises(ValueError, match="split"):
        cli([*args, "--split", "tset", "--out", str(predictions)])  # a typo ...
    assert cli([*args, "--split", "test", "--out", str(predictions)]) == 0  # ... locks nothing
    moved = tmp_path / "moved"
    predictions.rename(moved)
    for shard in (moved / "records").glob("*-c*.parquet"):
        shard.unlink()  # the predictions are redone, from the images where the folder is now
    assert cli([*args, "--split", "test", "--out", str(moved)]) == 0
    assert not list(iter_rows(sorted((moved / "records").glob("rejects-*.parquet"))))  # none unreadable
    moved.rename(predictions)
    assert cli([*args, "--split", "test", "--out", str(predictions)]) == 0  # resumes: nothing left to do
    assert (
        cli(["eval", "score", "--predictions", str(predictions), "--out", str(report), "--bootstrap", "50"])
        == 0
    )

    summary = json.loads((report / "summary.json").read_text())
    assert summary["n_examples"] == 3 and summary["references"] == list(REFERENCES)
    assert summary["coverage"] == 1.0
    assert set(summary["scores"]) == {"full", "think", "answer"}
    for metric in (
        "bertscore_f1",
        "sbert_cosine",
        "rouge1",
        "rougeL",
        "jaccard",
        "overlap",
        "tfidf_cosine",
        "tf_cosine",
    ):
        entry = summary["scores"]["full"][metric]
        assert 0.0 <= entry["avg_of_avg"] <= entry["avg_of_max"] <= 1.0
        assert entry["avg_of_avg_ci"][0] <= entry["avg_of_avg"] <= entry["avg_of_avg_ci"][1]
    assert {"bertscore", "sbert"} <= set(summary["backbones"])
    per_example = pq.read_table(report / "per_example.parquet")
    assert per_example.num_rows == 3 and "think/rougeL/s2" in per_example.column_names
    glm_hits = per_example["label_hit/glm"].to_pylist()
    assert summary["label_accuracy"]["references"]["glm"] == sum(glm_hits) / 3
    tables = (report / "tables.md").read_text()
    for title in ("Table 3", "Table 4", "Table 5", "Table 6", "Table 7", "Label-grounded"):
        assert title in tables
    assert (
        "| TF-IDF Cosine Similarity |" in tables and "| Cosine Similarity |" in tables
    )  # Table 7 rows, not swapped
    assert (report / "tables.tex").read_text().count(r"\begin{tabular}") == 6
    assert (report / "chart_semantic.png").stat().st_size > 1000

    combined = tmp_path / "combined"
    assert cli(["eval", "report", str(report), str(report / "summary.json"), "--out", str(combined)]) == 0
    assert (combined / "tables.csv").read_text().count("tiny_baseline") >= 16
    assert (combined / "chart_lexical.png").is_file()
