"""eval generate -> score -> report on a tiny release, with a tiny model through the real vLLM engine."""

import json
import random
import shutil

import pyarrow.parquet as pq
import pytest

from eval.aggregate import score_against_references, segments, summarize
from eval.metrics import similarity
from eval.predict import load_references, materialize_split, split_fingerprint
from generation.records import (
    RECORD_SCHEMA,
    REJECT_SCHEMA,
    ManifestEntry,
    Reject,
    iter_rows,
    read_manifest,
    to_table,
)
from generation.run_check import check_run
from generation.runs import chunk_files, commit_chunk
from generation.verdicts.labels import KINDS, label_verdicts
from imagenet_think_cli import main as cli
from imagenet_think_errors import InputError, MissingInputError, RefusedError, UsageError
from release.build import BuildOptions, build_release
from tests.fixtures.synthetic import make_record, write_manifest_tree, write_run

REFERENCES = ("glm", "kimi")
# One image per chunk, so that a test can leave a chunk unfinished or rejected.
GENERATE = ["eval", "generate", "--model", "configs/models/tiny_baseline.yaml", "--set", "chunk_size=1"]
FAST = ["--metrics", "jaccard", "rougeL", "--bootstrap", "20"]


def build(root, out, split_seed=0):
    return build_release(
        BuildOptions(
            [root / a for a in REFERENCES],
            root / "manifest.parquet",
            root / out,
            validation_fraction=0.2,
            test_fraction=0.2,
            split_seed=split_seed,
        ),
    )


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
    build(root, "imagenet_think")
    return root


@pytest.fixture(scope="module")
def predictions(release, tmp_path_factory):
    """The tiny model's predictions on the test split (3 images, one chunk each)."""
    folder = tmp_path_factory.mktemp("predictions") / "pred"
    args = [*GENERATE, "--dataset", str(release / "imagenet_think")]
    with pytest.raises(InputError, match="split"):
        cli([*args, "--split", "tset", "--out", str(folder)])  # a typo ...
    assert cli([*args, "--split", "test", "--out", str(folder)]) == 0  # ... locks nothing
    return folder


def score(predictions, out, *extra):
    return cli(["eval", "score", "--predictions", str(predictions), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def train_predictions(release, tmp_path_factory):
    """A synthetic model's predictions on the train split (9 images, two per chunk), as `eval
    generate` writes them: two images rejected and the chunk of two others not generated yet."""
    folder = tmp_path_factory.mktemp("train_predictions") / "pred"
    dataset = str(release / "imagenet_think")
    manifest = materialize_split(dataset, "train", folder)
    table, _ = read_manifest(manifest)
    entries = [ManifestEntry(**row) for row in table.to_pylist()]
    rng = random.Random(11)
    records = [make_record(e, "synthetic_model", rng) for k, e in enumerate(entries) if k not in (1, 6)]
    records[3] = make_record(  # no delimiter: the parser made the whole output the answer, think open
        entries[4], "synthetic_model", rng, think="", answer="A goose? Maybe a dog.", think_closed=False
    )
    rejects = [
        Reject(entries[k].image_id, entries[k].image_path, "generate", "m", "prompt_too_long", "too long")
        for k in (1, 6)
    ]
    write_run(folder / "records", records, per_shard=2, rejects=rejects, manifest=manifest)
    for chunk_file in chunk_files(folder / "records", 1):
        chunk_file.unlink()
    fingerprint = split_fingerprint(table["image_id"].to_pylist(), table["wnid"].to_pylist())
    made_on = {"dataset": dataset, "split": "train", "limit": None, "split_sha256": fingerprint}
    (folder / "eval.json").write_text(json.dumps(made_on))
    return folder


def test_score_streams_in_batches_with_the_scores_of_one_pass(train_predictions, tmp_path):
    """Batches of 1 and 4 images (cutting through chunks, rejects and the gap) give the summary and
    the per-example scores of one batch, and those of the whole split scored in one pass."""
    lexical = ["rouge1", "rougeL", "jaccard", "overlap", "tfidf_cosine", "tf_cosine", "tfidf_cosine_corpus"]
    args = ["--metrics", *lexical, "--bootstrap", "50"]
    assert score(train_predictions, tmp_path / "one", *args, "--batch-size", "1000") == 0
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    per_example = pq.read_table(tmp_path / "one" / "per_example.parquet")
    assert summary["images"] == {"expected": 9, "predicted": 5, "rejected": 2, "not_generated": 2}
    for batch in (1, 4):
        assert score(train_predictions, tmp_path / f"b{batch}", *args, "--batch-size", str(batch)) == 0
        assert json.loads((tmp_path / f"b{batch}" / "summary.json").read_text()) == summary
        streamed = pq.ParquetFile(tmp_path / f"b{batch}" / "per_example.parquet")
        assert streamed.read().equals(per_example)
        assert streamed.num_row_groups == -(-7 // batch)  # written batch by batch
        assert not list((tmp_path / f"b{batch}").glob("*.partial"))

    # The whole split in one call of the metric suite, as `eval score` scored before it streamed.
    state = check_run(train_predictions / "records")
    records = {r["image_id"]: r for r in iter_rows(state.record_files)}
    rejected = {r["image_id"] for r in iter_rows(state.reject_files)}
    rows = [
        row
        for row in load_references(summary["dataset"], "train").remove_columns("image")
        if row["image_id"] in records or row["image_id"] in rejected
    ]
    chosen = [records.get(row["image_id"], {"think": "", "answer": ""}) for row in rows]
    # The share of the predictions (not the rejects) whose think is closed, as the parser found.
    closed = [
        records[i]["think_closed"] if i in records else False for i in per_example["image_id"].to_pylist()
    ]
    assert per_example["think_closed"].to_pylist() == closed and sum(closed) == 4
    assert summary["think_closed"] == 4 / 5
    scored = score_against_references(
        segments([r["think"] for r in chosen], [r["answer"] for r in chosen]),
        [
            segments([row[f"{a}_think"] for row in rows], [row[f"{a}_answer"] for row in rows])
            for a in REFERENCES
        ],
        lexical,
        chunk_size=10**6,
    )
    assert json.loads(json.dumps(summarize(scored, n_boot=50)["scores"])) == summary["scores"]
    for name, values in scored.columns().items():
        assert per_example[name].to_pylist() == values.tolist(), name
    assert per_example["image_id"].to_pylist() == [row["image_id"] for row in rows]
    with pytest.raises(UsageError, match="--batch-size must be a whole number of images >= 1, not 0"):
        score(train_predictions, tmp_path / "zero", *args, "--batch-size", "0")
    with pytest.raises(
        UsageError, match="--metrics bleu: not metrics of eval.metrics; pass some of bertscore_f1"
    ):
        score(train_predictions, tmp_path / "bleu", "--metrics", "jaccard", "bleu")
    assert not (tmp_path / "zero").exists() and not (tmp_path / "bleu").exists()


def test_verdicts_and_the_annotator_agreement_ceiling(train_predictions, tmp_path):
    """Each answer's label verdict (model and references) and their shares with intervals; the
    references scored against each other once per release split, cached beside the reports."""
    args = ["--metrics", "jaccard", "rouge1", "--bootstrap", "200"]
    assert score(train_predictions, tmp_path / "reports" / "first", *args) == 0
    summary = json.loads((tmp_path / "reports" / "first" / "summary.json").read_text())
    per_example = pq.read_table(tmp_path / "reports" / "first" / "per_example.parquet").to_pylist()

    # The verdicts, per image, are generation.verdicts.labels's, for the model ("" when rejected) and each reference.
    rows = {r["image_id"]: r for r in load_references(summary["dataset"], "train").remove_columns("image")}
    state = check_run(train_predictions / "records")
    records = {r["image_id"]: r for r in iter_rows(state.record_files)}
    wnids = [row["wnid"] for row in per_example]
    answers = {
        "model": [records.get(row["image_id"], {"answer": ""})["answer"] for row in per_example],
        **{a: [rows[row["image_id"]][f"{a}_answer"] for row in per_example] for a in REFERENCES},
    }
    for who, texts in answers.items():
        verdicts = label_verdicts(texts, wnids)
        assert [row[f"label_verdict/{who}"] for row in per_example] == [v.kind for v in verdicts]
        assert [row[f"label_score/{who}"] for row in per_example] == [v.score for v in verdicts]
        assert [row[f"label_named/{who}"] for row in per_example] == [v.named for v in verdicts]
        entry = summary["label_verdicts"]["model" if who == "model" else "references"]
        entry = entry if who == "model" else entry[who]
        shares = {kind: sum(v.kind == kind for v in verdicts) / len(verdicts) for kind in KINDS}
        assert {kind: e["mean"] for kind, e in entry["verdicts"].items()} == pytest.approx(shares)
        assert entry["score"]["mean"] == pytest.approx(sum(v.score for v in verdicts) / len(verdicts))
        low, high = entry["score"]["ci"]
        assert low <= entry["score"]["mean"] <= high
    assert "hypernym" in {row["label_verdict/model"] for row in per_example}  # "A goose? Maybe a dog."
    model = summary["label_verdicts"]["model"]
    assert model["correct"]["mean"] == summary["label_accuracy"]["model"]

    # The ceiling: every train image's glm and kimi outputs scored against each other, both ways.
    agreement = summary["agreement"]
    assert agreement["pairs"] == ["glm vs kimi", "kimi vs glm"] and agreement["n_examples"] == 9
    every = list(rows.values())
    glm, kimi = (
        segments([r[f"{a}_think"] for r in every], [r[f"{a}_answer"] for r in every]) for a in REFERENCES
    )
    for segment in ("full", "think", "answer"):
        both_ways = [
            similarity("rouge1", glm[segment], kimi[segment]),
            similarity("rouge1", kimi[segment], glm[segment]),
        ]
        entry = agreement["scores"][segment]["rouge1"]
        assert entry["avg_of_avg"] == pytest.approx(sum(map(sum, both_ways)) / 18)
        assert entry["avg_of_max"] == pytest.approx(sum(map(max, zip(*both_ways, strict=True))) / 9)
    cache = tmp_path / "reports" / ".annotator_agreement"
    (cached,) = cache.glob("*.json")
    assert agreement["cache"] == str(cached)
    written = cached.stat().st_mtime_ns

    # Another model's report beside it reads the agreement instead of computing it again.
    assert score(train_predictions, tmp_path / "reports" / "second", *args) == 0
    again = json.loads((tmp_path / "reports" / "second" / "summary.json").read_text())
    assert again["agreement"] == agreement and cached.stat().st_mtime_ns == written
    assert len(list(cache.glob("*.json"))) == 1
    assert (
        score(train_predictions, tmp_path / "reports" / "third", "--metrics", "jaccard", "--bootstrap", "200")
        == 0
    )
    assert len(list(cache.glob("*.json"))) == 2  # other metrics, another entry

    tables = (tmp_path / "reports" / "first" / "tables.md").read_text()
    jaccard = f"{agreement['scores']['full']['jaccard']['avg_of_avg']:.3f}"
    assert f"| annotator agreement | 9 images, both references | {jaccard} |" in tables  # Table 5
    assert (
        "Table 7: Thinking Tokens vs Answer Tokens of annotator agreement (glm vs kimi, kimi vs glm)"
        in tables
    )
    assert "### Label verdicts" in tables and "| glm (reference) | 7/9 images |" in tables
    assert "(the answer names the image's class or a more specific one: verdict exact or hyponym)" in tables
    assert (tmp_path / "reports" / "first" / "chart_labels.png").stat().st_size > 1000

    assert score(train_predictions, tmp_path / "reports" / "none", *args, "--no-agreement") == 0
    assert "agreement" not in json.loads((tmp_path / "reports" / "none" / "summary.json").read_text())
    assert "annotator agreement" not in (tmp_path / "reports" / "none" / "tables.md").read_text()


def test_generate_score_report(release, predictions, tmp_path):
    dataset = str(release / "imagenet_think")
    args = [*GENERATE, "--dataset", dataset]
    made_on = json.loads((predictions / "eval.json").read_text())
    assert made_on["split"] == "test" and len(made_on["split_sha256"]) == 64
    with pytest.raises(RefusedError, match=f"{predictions} holds predictions for .* split 'test'.*new --out"):
        cli([*args, "--split", "validation", "--out", str(predictions)])
    moved = tmp_path / "moved"
    shutil.copytree(predictions, moved)
    for shard in (moved / "records").glob("*-c*.parquet"):
        shard.unlink()  # the predictions are redone, from the images where the folder is now
    assert cli([*args, "--split", "test", "--out", str(moved)]) == 0
    assert not list(iter_rows(sorted((moved / "records").glob("rejects-*.parquet"))))  # none unreadable
    assert cli([*args, "--split", "test", "--out", str(moved)]) == 0  # resumes: nothing left to do
    report = tmp_path / "report"
    assert score(moved, report, "--bootstrap", "50") == 0

    summary = json.loads((report / "summary.json").read_text())
    assert summary["n_examples"] == 3 and summary["references"] == list(REFERENCES)
    assert summary["coverage"] == 1.0
    assert summary["images"] == {"expected": 3, "predicted": 3, "rejected": 0, "not_generated": 0}
    assert summary["split_sha256"] == made_on["split_sha256"] and not summary["allow_other_release"]
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
    assert "| tiny_baseline | 100.0% (3/3) |" in tables and "†" not in tables
    closed = sum(r["think_closed"] for r in iter_rows(check_run(moved / "records").record_files)) / 3
    assert summary["think_closed"] == closed
    assert "| Model | Coverage | Think closed | Answer names the class or a more specific one |" in tables
    # Tables 3-6 with the agreement row, Table 7 of the model and of the agreement, accuracy, verdicts
    assert tables.count("| annotator agreement | 3 images, both references |") == 4
    assert summary["agreement"]["n_examples"] == 3 and set(summary["agreement"]["scores"]) == {
        "full",
        "think",
        "answer",
    }
    assert (report / "tables.tex").read_text().count(r"\begin{tabular}") == 8
    assert (report / "chart_semantic.png").stat().st_size > 1000

    combined, again = tmp_path / "combined", tmp_path / "again"
    with pytest.raises(UsageError, match="same summary"):
        cli(["eval", "report", str(report), str(report / "summary.json"), "--out", str(combined)])
    shutil.copytree(report, again)  # the same model scored twice: told apart by folder
    assert cli(["eval", "report", str(report), str(again / "summary.json"), "--out", str(combined)]) == 0
    csv = (combined / "tables.csv").read_text()
    assert csv.count("tiny_baseline (report)") >= 16 and csv.count("tiny_baseline (again)") >= 16
    assert (combined / "chart_lexical.png").is_file()


def test_score_refuses_predictions_made_on_another_release_or_split(release, predictions, tmp_path):
    build(release, "reshuffled", split_seed=3)  # the same images, another test split (2 of 3 shared)
    dataset, other = release / "imagenet_think", release / "reshuffled"
    for extra, against in (
        (["--dataset", str(other)], f"{other} split 'test'"),
        (["--split", "validation"], f"{dataset} split 'validation'"),
    ):
        with pytest.raises(RefusedError) as refused:
            score(predictions, tmp_path / "refused", *FAST, *extra)
        message = str(refused.value)
        assert (
            f"predictions in {predictions} were made on {dataset} split 'test', not on {against}" in message
        )
        assert "--allow-other-release" in message
    assert not (tmp_path / "refused").exists()

    # A copy of the release (e.g. a download of the Hub one) has the same rows: accepted.
    shutil.copytree(dataset, tmp_path / "copy")
    assert score(predictions, tmp_path / "copy_report", *FAST, "--dataset", str(tmp_path / "copy")) == 0

    # Asked explicitly: the images both test splits share are scored, and the summary says so.
    assert (
        score(predictions, tmp_path / "other", *FAST, "--dataset", str(other), "--allow-other-release") == 0
    )
    summary = json.loads((tmp_path / "other" / "summary.json").read_text())
    assert summary["allow_other_release"] and summary["dataset"] == str(other)
    assert summary["made_on"]["dataset"] == str(dataset)
    assert summary["split_sha256"] != summary["made_on"]["split_sha256"]
    shared = {r["image_id"] for r in iter_rows(sorted((other / "both").glob("test-*.parquet")), ["image_id"])}
    shared &= {r["image_id"] for r in iter_rows(sorted((predictions / "records").glob("records-*.parquet")))}
    assert summary["images"]["predicted"] == summary["n_examples"] == len(shared) == 2


def test_predictions_without_a_fingerprint_are_refused_until_generate_reruns(release, predictions, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(predictions, old)
    made_on = json.loads((old / "eval.json").read_text())
    (old / "eval.json").write_text(json.dumps({k: made_on[k] for k in ("dataset", "split", "limit")}))
    with pytest.raises(RefusedError, match=f"{old} were made on .* has no split fingerprint.*same arguments"):
        score(old, tmp_path / "report", *FAST)
    # Nothing is left to generate: the rerun only records the fingerprint.
    assert cli([*GENERATE, "--dataset", made_on["dataset"], "--split", "test", "--out", str(old)]) == 0
    assert json.loads((old / "eval.json").read_text()) == made_on
    assert score(old, tmp_path / "report", *FAST) == 0


def test_an_unfinished_predictions_folder_is_scored_over_what_exists(release, predictions, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(predictions, partial)
    records = partial / "records"
    predicted, rejected, pending = (
        next(iter_rows([records / f"records-c{c:07d}.parquet"]))["image_id"] for c in range(3)
    )
    # Chunk 1's image was rejected by the engine; chunk 2 was never run.
    reject = Reject(rejected, f"x/{rejected}.png", "generate", "tiny_baseline", "prompt_too_long", "too long")
    commit_chunk(records, 1, to_table([], RECORD_SCHEMA), to_table([reject], REJECT_SCHEMA), [rejected])
    for chunk_file in chunk_files(records, 2):
        chunk_file.unlink()

    assert score(partial, tmp_path / "report", *FAST) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["images"] == {"expected": 3, "predicted": 1, "rejected": 1, "not_generated": 1}
    assert summary["coverage"] == pytest.approx(1 / 3) and summary["n_examples"] == 2
    per_example = pq.read_table(tmp_path / "report" / "per_example.parquet").to_pylist()
    assert {row["image_id"]: row["has_prediction"] for row in per_example} == {
        predicted: True,
        rejected: False,
    }
    assert [row["full/jaccard/max"] for row in per_example if row["image_id"] == rejected] == [0.0]
    assert pending not in {row["image_id"] for row in per_example}
    tables = (tmp_path / "report" / "tables.md").read_text()
    assert "| tiny_baseline† | 33.3% (1/3) |" in tables
    assert "tiny_baseline has predictions for 1 of 3 images (1 rejected, scored 0; 1 not generated" in tables

    for shard in records.glob("*-c*.parquet"):
        shard.unlink()
    with pytest.raises(MissingInputError, match=f"{partial} has no prediction for any of the 3 images"):
        score(partial, tmp_path / "empty", *FAST)


def test_a_folder_that_is_not_a_predictions_folder_is_an_input_error(tmp_path):
    folder = tmp_path / "pred"
    with pytest.raises(MissingInputError, match=f"{folder} does not exist; make one with .*eval generate"):
        score(folder, tmp_path / "report")
    folder.mkdir()
    with pytest.raises(MissingInputError, match=f"{folder} is not a predictions folder .*eval generate"):
        score(folder, tmp_path / "report")
    (folder / "eval.json").write_text('{"dataset": "d", ')
    with pytest.raises(InputError, match=f"{folder}/eval.json is not valid JSON"):
        score(folder, tmp_path / "report")
    (folder / "eval.json").write_text('{"dataset": "d"}')
    with pytest.raises(InputError, match=f"{folder}/eval.json does not name the dataset and split"):
        score(folder, tmp_path / "report")
    (folder / "eval.json").write_text('{"dataset": "d", "split": "test", "limit": null}')
    with pytest.raises(MissingInputError, match=f"{folder} holds no predictions yet .*eval generate"):
        score(folder, tmp_path / "report")
    (folder / "records").mkdir()
    (folder / "records" / "run.json").write_text('{"config": ')
    with pytest.raises(InputError, match=f"{folder}/records/run.json is not valid JSON"):
        score(folder, tmp_path / "report")
    assert not (tmp_path / "report").exists()
