"""Avg/max aggregation over references, segments, bootstrap intervals and label accuracy."""

import numpy as np
import pyarrow as pa
import pytest

from eval import aggregate
from generation.verdicts import labels


def jaccard_scores(candidates, references, **options):
    return aggregate.score_against_references(candidates, references, metrics=["jaccard"], **options)


def test_avg_and_max_over_two_references_follow_equations_1_to_3():
    candidates = {"full": ["a b", "x y z w"]}
    references = [{"full": ["a b", "x"]}, {"full": ["a c", "q"]}]
    scores = jaccard_scores(candidates, references)

    np.testing.assert_allclose(scores.scores["full"]["jaccard"], [[1.0, 1 / 3], [1 / 4, 0.0]])
    np.testing.assert_allclose(scores.per_example("full", "jaccard", "avg"), [2 / 3, 1 / 8])
    np.testing.assert_allclose(scores.per_example("full", "jaccard", "max"), [1.0, 1 / 4])
    summary = aggregate.summarize(scores, n_boot=200)
    assert summary["n_examples"] == 2
    assert summary["scores"]["full"]["jaccard"]["avg_of_avg"] == pytest.approx(19 / 48)
    assert summary["scores"]["full"]["jaccard"]["avg_of_max"] == pytest.approx(5 / 8)
    assert summary["backbones"] == {}


def test_each_segment_is_scored_against_the_same_segment_of_the_references():
    candidates = aggregate.segments(["red bird", ""], ["brambling", "a finch"])
    references = [
        aggregate.segments(["a red bird", "grey sky"], ["brambling", "finch"]),
        aggregate.segments(["blue sky", "grey sky"], ["finch", "a finch"]),
    ]
    scores = jaccard_scores(candidates, references).scores

    np.testing.assert_allclose(scores["think"]["jaccard"], [[2 / 3, 0.0], [0.0, 0.0]])  # empty think scores 0
    np.testing.assert_allclose(scores["answer"]["jaccard"], [[1.0, 0.0], [1 / 2, 1.0]])
    # full = think + answer: {red, bird, brambling} against {a, red, bird, brambling}, {blue, sky, finch}
    np.testing.assert_allclose(scores["full"]["jaccard"][0], [3 / 4, 0.0])


def test_segments_join_think_and_answer_without_delimiters():
    assert aggregate.segments(["I see a bird.", ""], ["A brambling.", "A cat."]) == {
        "full": ["I see a bird.\n\nA brambling.", "A cat."],
        "think": ["I see a bird.", ""],
        "answer": ["A brambling.", "A cat."],
    }


def test_per_example_columns_make_a_table():
    scores = jaccard_scores({"answer": ["a b", "c"]}, [{"answer": ["a", "c"]}, {"answer": ["b", "d"]}])
    table = pa.table(scores.columns())
    assert table.column_names == [
        "answer/jaccard/s1",
        "answer/jaccard/s2",
        "answer/jaccard/avg",
        "answer/jaccard/max",
    ]
    assert table.column("answer/jaccard/max").to_pylist() == [0.5, 1.0]


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="lacks the segment"):
        jaccard_scores({"think": ["a"]}, [{"answer": ["a"]}])
    with pytest.raises(ValueError, match="1 candidates but 2"):
        jaccard_scores({"answer": ["a"]}, [{"answer": ["a", "b"]}])
    with pytest.raises(ValueError, match="at least one reference"):
        jaccard_scores({"answer": ["a"]}, [])


def test_bootstrap_intervals_are_seeded_and_bracket_the_mean():
    rng = np.random.default_rng(1)
    words = ["bird", "branch", "finch", "orange", "wing", "sky", "tree", "leaf"]
    texts = [" ".join(rng.choice(words, 4)) for _ in range(90)]
    scores = jaccard_scores({"answer": texts[:30]}, [{"answer": texts[30:60]}, {"answer": texts[60:]}])

    first, again = aggregate.summarize(scores, seed=3), aggregate.summarize(scores, seed=3)
    other_seed = aggregate.summarize(scores, seed=4)
    entry = first["scores"]["answer"]["jaccard"]
    assert first == again
    assert other_seed["scores"]["answer"]["jaccard"]["avg_of_avg_ci"] != entry["avg_of_avg_ci"]
    for how in ("avg", "max"):
        low, high = entry[f"avg_of_{how}_ci"]
        assert low < entry[f"avg_of_{how}"] < high
    assert first["bootstrap"] == {"n_boot": 1000, "seed": 3, "confidence": 0.95, "method": "percentile"}


def test_bootstrap_of_constant_values_has_no_width_and_chunks_alike():
    values = np.column_stack([np.full(50, 0.25), np.arange(50) / 50])
    means = aggregate.bootstrap_means(values, n_boot=64, seed=0)
    assert means.shape == (64, 2)
    np.testing.assert_allclose(means[:, 0], 0.25)
    np.testing.assert_allclose(aggregate.bootstrap_means(values, 64, 0, max_cells=120), means)


def test_summary_names_the_backbones_of_neural_metrics():
    scores = aggregate.score_against_references(
        {"answer": ["A small finch."]},
        [{"answer": ["A brambling."]}, {"answer": ["A bird."]}],
        ["sbert_cosine"],
    )
    summary = aggregate.summarize(scores, n_boot=10)
    assert summary["backbones"]["sbert"]["model"]
    assert 0 < summary["scores"]["answer"]["sbert_cosine"]["avg_of_avg"] <= 1
    with pytest.raises(ValueError, match="at least 1 bootstrap resample"):
        aggregate.summarize(scores, n_boot=0)


def test_the_report_says_how_much_of_the_text_the_backbones_read():
    from eval.tables import backbone_note

    summary = {
        "scores": {"full": {"sbert_cosine": {}}},
        "backbones": {"sbert": {"model": "m", "max_tokens": 256}},
    }
    assert "sbert: m, first 256 tokens" in backbone_note([summary])
    summary["scores"]["full"] = {"sbert_cosine_full": {}}
    assert "sbert: m, whole text in windows of 256 tokens" in backbone_note([summary])


@pytest.mark.parametrize(
    ("answer", "wnid", "expected"),
    [
        ("This is a Brambling perched on a twig.", "n01530575", True),
        ("Two bramblings.", "n01530575", True),
        ("Fringilla montifringilla, a finch.", "n01530575", True),
        ("A bramble bush.", "n01530575", False),
        ("A small bird.", "n01530575", False),  # hypernyms are not accepted
        ("a MAN EATER shark", "n01484850", True),
        ("A great white-shark.", "n01484850", True),
        ("white sharks", "n01484850", True),
        ("a whiteshark", "n01484850", False),
        ("A carved jack-o’-lantern.", "n03590841", True),
        ("jack o' lanterns", "n03590841", True),
        ("Two butterflies.", "n02274259", True),
        ("A red fox; foxes hunt.", "n02118333", True),
        ("firefox", "n02118333", False),
        ("either a kitchen or a hall", "n03850245", False),
        ("Surgeons in the OR.", "n03850245", True),
        ("an old PCs shop", "n03918480", True),
        ("pc", "n03918480", False),
        (None, "n01530575", False),
    ],
)
def test_names_class(answer, wnid, expected):
    assert labels.names_class(answer, wnid) is expected


def test_label_accuracy_over_answers():
    answers = ["A brambling.", "A cat.", "Domestic cats!"]
    wnids = ["n01530575", "n01530575", "n02121808"]
    assert labels.label_hits(answers, wnids).tolist() == [True, False, True]
    assert labels.label_accuracy(answers, wnids) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="not an ImageNet-21K-P class"):
        labels.names_class("a dog", "n00000000")


def _summary(model: str, predicted: int, rejected: int = 0, not_generated: int = 0) -> dict:
    """A summary as `eval score` writes it, over real Jaccard scores."""
    scores = jaccard_scores(
        aggregate.segments(["a red bird", "grey sky"], ["finch", "a finch"]),
        [aggregate.segments(["red bird", "sky"], ["a finch", "finch"])] * 2,
    )
    expected = predicted + rejected + not_generated
    summary = aggregate.summarize(scores, n_boot=20)
    summary.update(
        model=model,
        coverage=predicted / expected,
        images={
            "expected": expected,
            "predicted": predicted,
            "rejected": rejected,
            "not_generated": not_generated,
        },
        label_accuracy={"model": 0.5, "references": {"glm": 1.0, "kimi": 0.5}},
    )
    return summary


def _write_summary(folder, summary) -> str:
    import json

    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    return str(folder)


def test_coverage_is_in_every_table_and_chart_with_a_dagger_below_full(tmp_path):
    from PIL import Image

    from imagenet_think_cli import main as cli

    full = _write_summary(tmp_path / "full", _summary("complete_model", predicted=4))
    partial = _write_summary(
        tmp_path / "partial", _summary("partial_model", predicted=2, rejected=1, not_generated=1)
    )
    assert cli(["eval", "report", full, partial, "--out", str(tmp_path / "out")]) == 0

    footnote = (
        "partial_model has predictions for 2 of 4 images (1 rejected, scored 0; 1 not generated, left out)"
    )
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert "| Model | Coverage | Jaccard" in markdown
    assert "| complete_model | 100.0% (4/4) |" in markdown
    assert "| partial_model† | 50.0% (2/4) |" in markdown
    assert "Label-grounded" in markdown and markdown.count(footnote) == 3  # Table 5, its Table 7, labels
    assert "Tokens of partial_model† (coverage 50.0% (2/4))" in markdown
    assert "Tokens of complete_model (coverage 100.0% (4/4))" in markdown
    latex = (tmp_path / "out" / "tables.tex").read_text()
    assert r"partial\_model$^\dagger$ & 50.0\% (2/4)" in latex and r"complete\_model & 100.0\%" in latex
    assert latex.count(r"{\footnotesize $^\dagger$ Coverage below 100\%") == 3
    rows = (tmp_path / "out" / "tables.csv").read_text().splitlines()
    assert "Table 5: Lexical Set-Overlap Metrics,partial_model†,Coverage,50.0% (2/4)" in rows
    assert "Table 5: Lexical Set-Overlap Metrics,complete_model,Coverage,100.0% (4/4)" in rows
    assert any(row.startswith("Table 5: Lexical Set-Overlap Metrics,†,footnote,") for row in rows)
    with Image.open(tmp_path / "out" / "chart_lexical.png") as chart:
        described = chart.text["Description"]
    assert "complete_model, coverage 100.0%" in described and "partial_model†, coverage 50.0%" in described
    assert footnote in described

    # At full coverage no model is marked and there is no footnote.
    assert cli(["eval", "report", full, "--out", str(tmp_path / "one")]) == 0
    assert "†" not in (tmp_path / "one" / "tables.md").read_text()
    assert "†" not in (tmp_path / "one" / "tables.csv").read_text()


def test_the_reports_tables_and_charts_come_from_the_metric_registry(tmp_path):
    """Every table and chart of the report is one the registry defines, with its metrics in its order."""
    from eval import metrics
    from eval.charts import bar_charts
    from eval.tables import table_rows

    names = ["rouge1", "rougeL", "jaccard", "overlap", "tfidf_cosine", "tf_cosine", "tfidf_cosine_corpus"]
    scores = aggregate.score_against_references(
        aggregate.segments(["a red bird", "grey sky"], ["finch", "a finch"]),
        [aggregate.segments(["red bird", "sky"], ["a finch", "finch"])] * 2,
        names,
    )
    summary = aggregate.summarize(scores, n_boot=20)
    summary.update(model="m", coverage=1.0, label_accuracy={"model": 0.5, "references": {"glm": 1.0}})
    tables = {title: header for title, header, _, _ in table_rows([summary])}
    family_tables = {t: m for t, m in metrics.paper_tables().items() if t in tables}
    assert list(family_tables) == [
        "Table 4: N-gram Overlap Metrics",
        "Table 5: Lexical Set-Overlap Metrics",
        "Table 6: Vector Space Metrics",
    ]
    for title, metric_names in family_tables.items():
        shown = [metrics.METRICS[m].display for m in metric_names]
        assert tables[title][2:] == [f"{d} {how}" for d in shown for how in ("Avg.", "Max")]
    assert any(title.startswith(metrics.SEGMENT_TABLE + " of m") for title in tables)
    charts = bar_charts([summary], tmp_path)
    assert [path.name for path in charts] == ["chart_lexical.png", "chart_vector.png"]


def test_agreement_scores_each_annotator_against_the_other_both_ways():
    from eval.metrics import similarity

    glm = aggregate.segments(["a red bird on a branch", "grey sky"], ["a finch", "brambling"])
    kimi = aggregate.segments(["red bird", "a grey sky at dusk"], ["finch", "a small brambling"])
    scores, pairs = aggregate.agreement_scores({"glm": glm, "kimi": kimi}, ["rouge1", "overlap"])
    assert pairs == ["glm vs kimi", "kimi vs glm"]
    for segment in ("full", "think", "answer"):
        table = scores.scores[segment]["rouge1"]
        assert table.shape == (2, 2)
        np.testing.assert_array_equal(table[:, 0], similarity("rouge1", glm[segment], kimi[segment]))
        np.testing.assert_array_equal(table[:, 1], similarity("rouge1", kimi[segment], glm[segment]))
    with pytest.raises(ValueError, match="two annotators or more"):
        aggregate.agreement_scores({"glm": glm}, ["rouge1"])


def test_summarize_columns_gives_means_with_intervals_from_the_same_resamples():
    columns = {"hit": np.array([1, 0, 1, 1, 0, 1] * 5, bool), "score": np.linspace(0, 1, 30)}
    stats = aggregate.summarize_columns(columns, n_boot=300, seed=2)
    assert stats["hit"]["mean"] == pytest.approx(20 / 30) and stats["score"]["mean"] == pytest.approx(0.5)
    for entry in stats.values():
        assert entry["ci"][0] < entry["mean"] < entry["ci"][1]
    # summarize() is summarize_columns over the per-example avg and max of every segment and metric
    scores = jaccard_scores(
        {"answer": ["a b", "c", "a"]}, [{"answer": ["a", "c", "b"]}, {"answer": ["b", "d", "a"]}]
    )
    summary = aggregate.summarize(scores, n_boot=300, seed=2)
    direct = aggregate.summarize_columns(
        {how: scores.per_example("answer", "jaccard", how) for how in ("avg", "max")}, n_boot=300, seed=2
    )
    assert summary["scores"]["answer"]["jaccard"]["avg_of_max_ci"] == direct["max"]["ci"]


def _verdict_entry(shares: list[float], score: float) -> dict:
    from generation.verdicts.labels import KINDS

    interval = lambda mean: {"mean": mean, "ci": (max(0.0, mean - 0.1), min(1.0, mean + 0.1))}  # noqa: E731
    return {
        "verdicts": {kind: interval(share) for kind, share in zip(KINDS, shares, strict=True)},
        "correct": interval(shares[0] + shares[1]),
        "score": interval(score),
    }


def test_the_report_shows_verdicts_and_the_agreement_row(tmp_path):
    from PIL import Image

    from imagenet_think_cli import main as cli

    first, second = _summary("first_model", predicted=4), _summary("second_model", predicted=2, rejected=2)
    agreement = aggregate.summarize(
        jaccard_scores({"full": ["a red bird", "a grey sky"]}, [{"full": ["a bird", "grey sky"]}]), n_boot=20
    )
    agreement.update(pairs=["glm vs kimi", "kimi vs glm"], dataset="d", split="test", split_sha256="f" * 64)
    references = {
        "glm": _verdict_entry([0.5, 0.25, 0.25, 0, 0], 0.9),
        "kimi": _verdict_entry([0.25, 0, 0, 0.5, 0.25], 0.3),
    }
    for summary, model in ((first, [0.25, 0.25, 0.25, 0.25, 0.0]), (second, [0, 0, 0.5, 0, 0.5])):
        summary.update(
            agreement=agreement,
            label_verdicts={"model": _verdict_entry(model, 0.6), "references": references},
        )
    folders = [_write_summary(tmp_path / name, s) for name, s in (("a", first), ("b", second))]
    assert cli(["eval", "report", *folders, "--out", str(tmp_path / "out")]) == 0
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert (
        markdown.count("| annotator agreement | 2 images, both references |") == 1
    )  # one agreement: Table 5
    assert (
        "Table 7: Thinking Tokens vs Answer Tokens of annotator agreement (glm vs kimi, kimi vs glm)"
        in markdown
    )
    assert (
        "| first_model | 100.0% (4/4) | 0.250 | 0.250 | 0.250 | 0.250 | 0.000 | 0.500 [0.400, 0.600] |"
        in markdown
    )
    assert (
        markdown.count("| glm (reference) | 2/4 images | 0.500 | 0.250 |") == 1
    )  # the same references: once
    with Image.open(tmp_path / "out" / "chart_labels.png") as chart:
        assert "first_model: correct 0.500, label score 0.600" in chart.text["Description"]
    with Image.open(tmp_path / "out" / "chart_lexical.png") as chart:
        assert "annotator agreement" in chart.text["Description"]
    # Summaries of two release splits: one agreement row each, named by its release and split.
    other = dict(agreement, split="validation", split_sha256="e" * 64)
    second["agreement"] = other
    (tmp_path / "b" / "summary.json").write_text(__import__("json").dumps(second))
    assert cli(["eval", "report", *folders, "--out", str(tmp_path / "two")]) == 0
    markdown = (tmp_path / "two" / "tables.md").read_text()
    assert (
        "| annotator agreement (d test) |" in markdown
        and "| annotator agreement (d validation) |" in markdown
    )
    del second["label_verdicts"]["model"]["score"]
    (tmp_path / "b" / "summary.json").write_text(__import__("json").dumps(second))
    from imagenet_think_errors import InputError

    with pytest.raises(InputError, match=r"b/summary.json is not a summary .*label_verdicts lacks"):
        cli(["eval", "report", *folders, "--out", str(tmp_path / "bad")])


def test_summaries_of_the_same_model_get_their_folders_as_labels(tmp_path):
    from eval.report import load_summaries
    from imagenet_think_cli import main as cli
    from imagenet_think_errors import UsageError

    first = _write_summary(tmp_path / "run1" / "student", _summary("student", predicted=2))
    second = _write_summary(tmp_path / "run2" / "student", _summary("student", predicted=2))
    other = _write_summary(tmp_path / "run1" / "baseline", _summary("baseline", predicted=2))
    labels = [s["label"] for s in load_summaries([first, second, other])]
    assert labels == ["student (run1/student)", "student (run2/student)", "baseline"]
    for name in ("a.json", "b.json"):  # summary files of other names, side by side
        (tmp_path / name).write_text((tmp_path / "run1" / "student" / "summary.json").read_text())
    labels = [s["label"] for s in load_summaries([tmp_path / "a.json", tmp_path / "b.json"])]
    assert labels == ["student (a.json)", "student (b.json)"]
    assert cli(["eval", "report", first, f"{second}/summary.json", "--out", str(tmp_path / "out")]) == 0
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert "| student (run1/student) |" in markdown and "| student (run2/student) |" in markdown
    with pytest.raises(UsageError, match=rf"{first}/summary.json and {first} are the same summary"):
        cli(["eval", "report", f"{first}/summary.json", first, "--out", str(tmp_path / "twice")])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", "is not valid JSON"),
        ("[]", "holds a JSON list"),
        ('{"model": "m", "scores": {}}', "backbones, label_accuracy, coverage are missing"),
        (
            '{"model": "m", "scores": {"full": {}}, "backbones": {}, "coverage": 0.5,'
            ' "label_accuracy": {"model": 0, "references": {}}, "images": {"expected": 2}}',
            "images lacks the counts",
        ),
    ],
)
def test_a_malformed_summary_is_an_input_error_naming_the_file(tmp_path, content, problem):
    from imagenet_think_cli import main as cli
    from imagenet_think_errors import InputError

    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "summary.json").write_text(content)
    with pytest.raises(
        InputError, match=rf"{tmp_path}/report/summary.json is not a summary .*{problem}.*eval score"
    ):
        cli(["eval", "report", str(tmp_path / "report"), "--out", str(tmp_path / "out")])


def test_a_summary_without_scores_of_a_metric_is_an_input_error(tmp_path):
    from eval.report import load_summary
    from imagenet_think_errors import InputError

    summary = _summary("m", predicted=2)
    del summary["scores"]["full"]["jaccard"]["avg_of_max"]
    _write_summary(tmp_path / "r", summary)
    with pytest.raises(InputError, match=r"summary.json is not .*scores.full.jaccard lacks"):
        load_summary(tmp_path / "r")
    summary["coverage"] = "all"
    (tmp_path / "r" / "summary.json").write_text(__import__("json").dumps(summary))
    with pytest.raises(InputError, match=r"coverage 'all' is not a fraction"):
        load_summary(tmp_path / "r")
