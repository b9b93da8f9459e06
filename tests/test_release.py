"""The dataset layer end to end: synthetic shards + real image files -> release -> load_dataset."""

import json
import random
import re
from collections import Counter

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from common.checkout import checkout_file
from common.classes import NUM_CLASSES, imagenet21k_classes
from generation.records import RECORD_SCHEMA, Reject, file_sha256, iter_rows, to_table, write_parquet_atomic
from generation.run_check import check_run
from generation.runs import chunk_files
from generation.verdicts.quality import is_repetition_loop, rejection_reason
from imagenet_think import ImageNetThink
from imagenet_think_cli import main as cli
from imagenet_think_errors import MissingInputError
from release.build import BuildOptions, build_release
from release.card import RULES_PAGE, TEMPLATE, doc_sections, docs_section
from release.splits import assign_splits
from tests.fixtures.synthetic import make_record, write_manifest_tree, write_run

CLASSES, PER_CLASS = 5, 6
LOOP = "the bird is red and the bird is red and " * 60


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A release with good records and one bad record of each kind, built through the CLI."""
    root = tmp_path_factory.mktemp("release")
    manifest, entries = write_manifest_tree(root, CLASSES, PER_CLASS)
    rng = random.Random(0)
    glm = [make_record(e, "glm", rng) for e in entries]
    kimi = [make_record(e, "kimi", rng) for e in entries]
    bad = {
        entries[0].image_id: dict(finish_reason="length", think_closed=False, answer=""),  # truncated
        entries[7].image_id: dict(think_closed=False),  # think_not_closed
        entries[13].image_id: dict(answer="   "),  # empty_answer
        entries[20].image_id: dict(think=LOOP),  # repetition_loop
    }
    kimi = [
        make_record(e, "kimi", rng, **bad[e.image_id]) if e.image_id in bad else r
        for e, r in zip(entries, kimi, strict=True)
    ]
    generation_reject = Reject(
        entries[28].image_id, entries[28].image_path, "generate", "glm", "prompt_too_long", "x"
    )
    # entries 28, 29 have no glm record: 28 was rejected by generation, 29's chunk never committed
    write_run(root / "runs" / "glm", glm[:28], per_shard=7, rejects=[generation_reject])
    write_run(root / "runs" / "kimi", kimi + [kimi[3]], per_shard=11)  # one duplicate record
    glm_folder = root / "runs" / "glm"
    interrupted = to_table([glm[29]], RECORD_SCHEMA)
    write_parquet_atomic(interrupted, glm_folder / "records-c0000009.parquet")  # no commit: not counted
    (glm_folder / ".tmp-junk.parquet").write_bytes(b"torn")  # ... and a torn temporary file is ignored
    out = root / "imagenet_think"
    assert (
        cli(
            [
                "build",
                *["--shards", str(root / "runs" / "glm"), str(root / "runs" / "kimi")],
                *["--manifest", str(manifest), "--out", str(out)],
                *["--validation-fraction", "0.2", "--test-fraction", "0.2", "--max-shard-mb", "1"],
            ]
        )
        == 0
    )
    return {
        "root": root,
        "out": out,
        "entries": entries,
        "bad": bad,
        "lost_glm": {e.image_id for e in entries[28:]},
    }


def _load(release, config, **kwargs):
    return load_dataset(str(release["out"]), config, **kwargs)


def test_configs_rows_and_filtering(release):
    entries, bad = release["entries"], release["bad"]
    all_ids = {e.image_id for e in entries}
    glm = datasets.concatenate_datasets(list(_load(release, "glm").values()))
    kimi = datasets.concatenate_datasets(list(_load(release, "kimi").values()))
    both = datasets.concatenate_datasets(list(_load(release, "both").values()))
    assert set(kimi["image_id"]) == all_ids - set(bad)
    assert Counter(kimi["image_id"]).most_common(1)[0][1] == 1  # the duplicate record went to `rejected`
    glm_ids = set(glm["image_id"])
    assert glm_ids == all_ids - release["lost_glm"]
    assert set(both["image_id"]) == glm_ids & set(kimi["image_id"])
    rejected = _load(release, "rejected")["train"]
    reasons = Counter(zip(rejected["annotator"], rejected["reject_reason"], strict=True))
    assert reasons == {
        ("kimi", "truncated"): 1,
        ("kimi", "think_not_closed"): 1,
        ("kimi", "empty_answer"): 1,
        ("kimi", "repetition_loop"): 1,
        ("kimi", "duplicate_record"): 1,
        ("glm", "prompt_too_long"): 1,
    }
    loop_row = rejected.filter(lambda r: r["reject_reason"] == "repetition_loop")[0]
    assert loop_row["think"] == LOOP
    assert loop_row["image"] is not None and loop_row["split"] in {"train", "validation", "test"}


def test_features_and_images(release):
    both = _load(release, "both")
    features = both["train"].features
    assert isinstance(features["image"], datasets.Image)
    assert isinstance(features["label"], datasets.ClassLabel) and features["label"].num_classes == NUM_CLASSES
    assert {"glm_think", "glm_answer", "kimi_think", "kimi_answer", "glm_model_id"} <= set(features)
    glm = _load(release, "glm")["train"]
    assert {"think", "answer", "model_id", "model_revision", "finish_reason", "sampling"} <= set(glm.features)
    classes = imagenet21k_classes()
    for row in glm:
        assert row["label"] == classes.index(row["wnid"]) and row["class_name"] == classes.name(row["wnid"])
        image = row["image"]
        image.load()
        assert image.mode == "RGB" and image.size == (64, 48)  # CMYK, L, P, I;16, RGBA normalized


def test_splits_disjoint_stratified_and_consistent(release):
    split_of = {}
    for config in ("glm", "kimi", "both"):
        for split, ds in _load(release, config).items():
            for image_id in ds["image_id"]:
                assert split_of.setdefault(image_id, split) == split, f"{image_id} in two splits"
    manifest_split = assign_splits(((e.image_id, e.wnid) for e in release["entries"]), 0.2, 0.2)
    assert all(manifest_split[i] == s for i, s in split_of.items())
    per_class = Counter((e.wnid, manifest_split[e.image_id]) for e in release["entries"])
    assert all(per_class[(w, "test")] == 1 and per_class[(w, "validation")] == 1 for w, _ in per_class)


def test_streaming_matches(release):
    stream = _load(release, "both", split="validation", streaming=True)
    eager = _load(release, "both", split="validation")
    assert [r["image_id"] for r in stream] == eager["image_id"]


def test_release_files_and_card(release):
    out = release["out"]
    for config in ("glm", "kimi", "both"):
        for split in ("train", "validation", "test"):
            shards = sorted((out / config).glob(f"{split}-*.parquet"))
            assert shards and all(s.name.endswith(f"-of-{len(shards):05d}.parquet") for s in shards)
            assert b"huggingface" in pq.read_schema(shards[0]).metadata  # datasets' features survive
    card = (out / "README.md").read_text()
    header = card.split("---")[1]
    assert "license: other" in header and "license_name: imagenet" in header and "default: true" in header
    assert "config_name: rejected" in header
    assert "n01" not in header  # no class names in the YAML
    assert "Total images" in card and "synthetic/glm" in card
    assert json.loads((out / "stats.json").read_text())["images"] == len(release["entries"])


def test_the_card_includes_the_rules_of_docs_release_whole_and_states_this_releases_facts(release):
    """The rules are written once, in docs/release.md; the card (read on the Hub, where the docs are
    not) includes its rule sections word for word and adds only this release's facts."""
    card = (release["out"] / "README.md").read_text(encoding="utf-8")
    sections = doc_sections(checkout_file(RULES_PAGE).read_text(encoding="utf-8"))
    included = re.findall(r'docs_section\("([^"]+)"\)', checkout_file(TEMPLATE).read_text(encoding="utf-8"))
    headings = list(sections)  # every section from the first included to the last, in the page's order
    assert included[0] == "Configs and columns" and included[-1] == "What the statistics count"
    assert included == headings[headings.index(included[0]) : headings.index(included[-1]) + 1]
    for heading in included:
        body = re.sub(r"^(#+ )", r"#\1", sections[heading].split("\n", 1)[1].strip(), flags=re.MULTILINE)
        assert f"### {heading}\n\n{body}\n" in card, heading
        assert not re.search(r"\]\((?!https?://)", body), f"'{heading}' links to a page the Hub does not have"
        assert not re.search(r"\w\.py\b", body), f"'{heading}' names a file of the toolkit"
    assert re.search(r"a share of 0.2 to `test` and 0.2 to\s+`validation`, seed 0\.", card)
    assert "Forced answers are\nkept in the configs above" in card
    assert "| `repetition_loop` | 1 |" in card and "| `prompt_too_long` | 1 |" in card


def test_a_rule_section_missing_from_docs_release_is_refused_naming_it():
    page = checkout_file(RULES_PAGE).read_text(encoding="utf-8")
    renamed = doc_sections(page.replace("\n## Splits\n", "\n## How images are split\n"))
    with pytest.raises(
        MissingInputError, match=r"docs/release.md has no section '## Splits', which dataset_card"
    ):
        docs_section(renamed, "Splits")
    fenced = doc_sections("# Page\n\n## Rule\n\ntext\n```bash\n## a shell comment\n```\n## Next\n")
    assert list(fenced) == ["Rule", "Next"]
    assert docs_section(fenced, "Rule") == "### Rule\n\ntext\n```bash\n## a shell comment\n```\n"


def test_builder_instantiated_directly(release, tmp_path):
    root = release["root"]
    builder = ImageNetThink(
        config_name="kimi",
        cache_dir=str(tmp_path),
        record_dirs=(str(root / "runs" / "kimi"),),
        manifest=str(root / "manifest.parquet"),
        validation_fraction=0.2,
        test_fraction=0.2,
    )
    builder.download_and_prepare()
    eager = builder.as_dataset("test")
    assert eager["image_id"] == _load(release, "kimi", split="test")["image_id"]
    streamed = builder.as_streaming_dataset("test")
    assert [r["image_id"] for r in streamed] == eager["image_id"]
    other = ImageNetThink(config_name="qwen", cache_dir=str(tmp_path), data_dir=str(root))
    assert other.config.annotators == ("qwen",) and other.config.kind == "single"


def test_stats_and_push_dry_run(release, capsys):
    assert cli(["stats", str(release["out"])]) == 0
    printed = capsys.readouterr().out
    assert "Min tokens" in printed and "Avg. per class" in printed and "unique words per 1,000" in printed
    assert cli(["push", str(release["out"]), "--repo-id", "org/imagenet-think", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "README.md" in listed and "both/train-00000-of-00001.parquet" in listed and "dry run" in listed


def test_stats_numbers(release):
    from release.stats import compute_stats

    stats = compute_stats(release["out"], ("glm", "kimi"))
    glm = _load(release, "glm")
    tokens = [n for ds in glm.values() for n in ds["num_output_tokens"]]
    assert stats["tokens_per_sample_by_annotator"]["glm"]["max"] == max(tokens)
    assert stats["tokens_per_sample_by_annotator"]["glm"]["samples"] == len(tokens)
    assert stats["classes"] == CLASSES and stats["images_per_class"]["max"] == PER_CLASS


def test_quality_rules():
    assert rejection_reason(True, "stop", "fine reasoning", "an answer") is None
    assert rejection_reason(False, "length", "t", "") == "truncated"
    assert rejection_reason(False, "stop", "t", "a") == "think_not_closed"
    assert rejection_reason(True, "stop", "t", " \n") == "empty_answer"
    assert is_repetition_loop(LOOP)
    assert is_repetition_loop("A bird. " + "ok " * 3000)
    prose = " ".join(f"word{i} follows word{i * 7 % 13} in sentence {i}." for i in range(400))
    assert not is_repetition_loop(prose)
    assert not is_repetition_loop("")
    with pytest.raises(ValueError, match="REJECT_REASONS"):  # one spelling per reason
        Reject("x", "x.png", "generate", "glm", "image_unreadable", "")


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        ImageNetThink(config_name="glm", data_dir=str(tmp_path), cache_dir=str(tmp_path)).sources  # noqa: B018
    manifest, entries = write_manifest_tree(tmp_path, 1, 2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_release(BuildOptions([tmp_path / "nothing"], manifest, tmp_path / "out"))


def test_vocabulary_is_the_mean_over_blocks_of_1000_samples_of_one_annotator(tmp_path):
    import re

    import numpy as np

    from release.stats import compute_stats

    manifest, entries = write_manifest_tree(tmp_path, classes=50, per_class=30)  # 1,500 images per annotator
    rng = random.Random(3)
    for annotator, top in (("glm", 3000), ("kimi", 600)):  # different vocabularies
        records = []
        for entry in entries:
            # hex digits split words; " the " makes them English to the language check (generation.verdicts.language)
            think = " the ".join(f"Word{rng.randint(0, top):x}" for _ in range(30))
            records.append(make_record(entry, annotator, rng, think=think))
        write_run(tmp_path / annotator, records, per_shard=300)
    out = tmp_path / "out"
    build_release(BuildOptions([tmp_path / "glm", tmp_path / "kimi"], manifest, out))
    blocks = []
    for annotator in ("glm", "kimi"):  # release order: train, validation, test
        thinks = [
            think
            for split in ("train", "validation", "test")
            for shard in sorted((out / annotator).glob(f"{split}-*.parquet"))
            for think in pq.read_table(shard, columns=["think"])["think"].to_pylist()
        ]
        assert len(thinks) == 1500
        blocks.append({word for think in thinks[:1000] for word in re.findall("[a-z]+", think.lower())})
    stats = compute_stats(out, ("glm", "kimi"))
    assert stats["vocabulary_blocks"] == 2 and stats["vocabulary_block_size"] == 1000
    assert stats["unique_words_per_1000_samples"] == float(np.mean([len(block) for block in blocks]))
    written = json.loads((out / "stats.json").read_text())
    assert written.pop("inputs")["manifest"]["path"] == manifest.name  # beside the release: its name
    assert written == stats  # counted while writing = read back


def test_counted_vocabulary_blocks_do_not_depend_on_the_order_tables_come_in(tmp_path, monkeypatch):
    import re

    import numpy as np

    import release.stats
    from release.stats import compute_stats

    monkeypatch.setattr(release.stats, "VOCABULARY_BLOCK", 7)
    monkeypatch.setattr(release.stats, "MAX_VOCABULARY_BLOCKS", 3)
    manifest, entries = write_manifest_tree(tmp_path, classes=5, per_class=12)
    rng = random.Random(5)
    for annotator in ("glm", "kimi"):
        records = []
        for i, entry in enumerate(entries):
            pairs = (chr(97 + rng.randint(0, 25)) + chr(97 + rng.randint(0, 25)) for _ in range(12))
            think = " and ".join(pairs)  # English to the language check: " and " in every window
            bad = {"finish_reason": "length"} if annotator == "kimi" and i % 6 == 0 else {}
            records.append(make_record(entry, annotator, rng, think=think, **bad))
        write_run(tmp_path / annotator, records, per_shard=9)
    out = tmp_path / "out"
    build_release(
        BuildOptions([tmp_path / "glm", tmp_path / "kimi"], manifest, out, rows_per_group=4)
    )  # interleaved
    thinks = {
        annotator: [
            think
            for split in ("train", "validation", "test")
            for shard in sorted((out / annotator).glob(f"{split}-*.parquet"))
            for think in pq.read_table(shard, columns=["think"])["think"].to_pylist()
        ]
        for annotator in ("glm", "kimi")
    }
    assert (len(thinks["glm"]), len(thinks["kimi"])) == (60, 50)  # 8 + 7 full blocks of 7: every 5th counted

    def words(block):
        return len({word for think in block for word in re.findall("[a-z]+", think.lower())})

    # Blocks 0 and 5 of the release are glm's blocks 0 and 5; block 10 is kimi's block 2.
    expected = [words(thinks["glm"][0:7]), words(thinks["glm"][35:42]), words(thinks["kimi"][14:21])]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["vocabulary_blocks"] == 3
    assert stats["unique_words_per_1000_samples"] == float(np.mean(expected))
    assert {**compute_stats(out, ("glm", "kimi")), "inputs": stats["inputs"]} == stats


def test_a_single_annotator_release_loads_and_its_card_names_only_its_configs(tmp_path):
    manifest, entries = write_manifest_tree(tmp_path, classes=3, per_class=4)
    rng = random.Random(2)
    write_run(tmp_path / "glm", [make_record(entry, "glm", rng) for entry in entries])
    out = tmp_path / "imagenet_think"
    built = build_release(BuildOptions([tmp_path / "glm"], manifest, out, annotators=("glm",)))
    assert set(built.rows) == {"glm"}  # no joint config, nothing rejected
    card = (out / "README.md").read_text()
    header, body = card.split("\n---\n", 1)
    assert re.findall(r"config_name: (\w+)", header) == ["glm", "glm"]  # dataset_info, configs
    rows_table = body.split("## Configs and rows\n\n")[1].split("\n\n")[0]
    assert re.findall(r"^\| `(\w+)` \|", rows_table, re.MULTILINE) == ["glm"]
    assert '"both"' not in body  # nor in the code that loads it
    assert "- config_name: glm\n  default: true" in card
    assert load_dataset(str(out), split="train").num_rows == built.rows["glm"]["train"]  # the default config


def test_label_verdicts_and_the_verified_config(tmp_path):
    """Each answer's verdict against its image's class, in the per-annotator and joint configs, and
    the verified traces (exact or hyponym) as their own config."""
    import hashlib

    from generation.records import ManifestEntry, write_manifest
    from tests.fixtures.synthetic import write_image

    images = tmp_path / "images"
    entries = []
    for i, wnid in enumerate(["n01530575", "n02084071", "n01530575"]):  # brambling, dog, brambling
        write_image(images / wnid / f"{wnid}_{i}", "RGB", (64, 48), seed=i)
        path = images / wnid / f"{wnid}_{i}.JPEG"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entries.append(ManifestEntry(f"{wnid}_{i}", wnid, f"{wnid}/{path.name}", 64, 48, digest, True))
    manifest = write_manifest(entries, tmp_path / "manifest.parquet", images)
    answers = {
        "glm": ["It is a brambling.", "A beagle, sitting.", "No idea."],
        "kimi": ["A small finch.", "This looks like a brambling.", "Two bramblings!"],
    }
    expected = {
        "glm": ["exact", "hyponym", "none"],
        "kimi": ["hypernym", "other_class", "exact"],
    }
    rng = random.Random(0)
    for annotator, texts in answers.items():
        records = [make_record(e, annotator, rng, answer=a) for e, a in zip(entries, texts, strict=True)]
        write_run(tmp_path / annotator, records, manifest=manifest)
    out = tmp_path / "imagenet_think"
    built = build_release(BuildOptions([tmp_path / "glm", tmp_path / "kimi"], manifest, out))
    order = [e.image_id for e in entries]
    for annotator in ("glm", "kimi"):
        rows = sorted(
            load_dataset(str(out), annotator, split="train"), key=lambda r: order.index(r["image_id"])
        )
        assert [r["label_verdict"] for r in rows] == expected[annotator]
        for row, kind in zip(rows, expected[annotator], strict=True):
            score = row["label_score"]
            assert 0 < score < 1 if kind == "hypernym" else score == (kind in ("exact", "hyponym"))
    both = load_dataset(str(out), "both", split="train")
    assert {"glm_label_verdict", "glm_label_score", "kimi_label_verdict", "kimi_label_score"} <= set(
        both.features
    )
    verified = load_dataset(str(out), "verified", split="train")
    assert sorted(zip(verified["image_id"], verified["annotator"], strict=True)) == sorted(
        [(order[0], "glm"), (order[1], "glm"), (order[2], "kimi")]
    )
    assert set(verified["label_verdict"]) == {"exact", "hyponym"} and built.rows["verified"] == {"train": 3}
    assert isinstance(verified.features["image"], datasets.Image) and "think" in verified.features
    stats = json.loads((out / "stats.json").read_text())
    assert stats["verified_samples"] == 3
    glm_verdicts = stats["label_verdicts_by_annotator"]["glm"]
    assert glm_verdicts["share"] == {
        "exact": 1 / 3,
        "hyponym": 1 / 3,
        "hypernym": 0,
        "other_class": 0,
        "none": 1 / 3,
    }
    assert glm_verdicts["mean_label_score"] == pytest.approx(2 / 3)
    card = (out / "README.md").read_text()
    assert (
        "**`verified`**" in card
        and "Verified traces (`exact` or `hyponym`, the `verified` config): 3" in card
    )
    assert "config_name: verified" in card.split("---")[1]


def _rewrite_records(run_dir, change):
    """Rewrite each committed records file of ``run_dir`` through ``change`` (a function of its rows),
    committing it again: as if generation had written those rows."""
    for index in check_run(run_dir).done:
        records_path, _, commit_path = chunk_files(run_dir, index)
        rows = [change(row) for row in pq.read_table(records_path).to_pylist()]
        pq.write_table(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA), records_path, compression="zstd")
        commit = json.loads(commit_path.read_text())
        commit["records"].update(bytes=records_path.stat().st_size, sha256=file_sha256(records_path))
        commit_path.write_text(json.dumps(commit))


def test_verdicts_judged_at_commit_are_taken_under_the_same_rules_and_judged_anew_otherwise(tmp_path):
    """A record's stored quality and label verdicts are used as they are when their fingerprints are
    the current rules' (and, for the label, its wnid is the manifest's class); otherwise the build
    judges the record itself, whatever was stored."""
    manifest, entries = write_manifest_tree(tmp_path, classes=2, per_class=4)
    classes = imagenet21k_classes()
    rng = random.Random(3)
    records = [make_record(e, "glm", rng, answer=f"It is a {classes.name(e.wnid)}.") for e in entries]
    write_run(tmp_path / "glm", records, manifest=manifest)
    stored = {row["image_id"]: row for row in iter_rows(check_run(tmp_path / "glm").record_files)}
    assert {row["label_verdict"] for row in stored.values()} == {"exact"}
    assert {row["quality_reason"] for row in stored.values()} == {""}
    ids = [e.image_id for e in entries]
    other_class = entries[-1].wnid  # a class of the other half

    def change(row):
        image = ids.index(row["image_id"])
        if image == 0:  # current verifier: taken as stored
            row.update(label_verdict="none", label_score=0.0)
        elif image == 1:  # another verifier: judged anew
            row.update(label_verdict="none", label_score=0.0, label_verifier="0123456789abcdef")
        elif image == 2:  # judged against another class than the manifest's: judged anew
            row.update(wnid=other_class, label_verdict="other_class", label_score=0.0)
        elif image == 3:  # current quality rules: taken as stored
            row.update(quality_reason="repetition_loop", quality_detail="as stored")
        elif image == 4:  # an older toolkit's record that loops: judged anew
            row.update(think=LOOP, quality_reason="", quality_checker="")
        elif image == 5:  # other quality rules: judged anew (a good record)
            row.update(quality_reason="not_english", quality_detail="stale", quality_checker="old")
        return row

    _rewrite_records(tmp_path / "glm", change)
    out = tmp_path / "imagenet_think"
    build_release(BuildOptions([tmp_path / "glm"], manifest, out, validation_fraction=0, test_fraction=0))
    glm = {row["image_id"]: row for row in load_dataset(str(out), "glm", split="train")}
    assert glm[ids[0]]["label_verdict"] == "none"
    assert glm[ids[1]]["label_verdict"] == glm[ids[2]]["label_verdict"] == "exact"
    assert ids[5] in glm and glm[ids[5]]["label_verdict"] == "exact"
    rejected = {r["image_id"]: r for r in load_dataset(str(out), "rejected", split="train")}
    assert {image_id: r["reject_reason"] for image_id, r in rejected.items()} == {
        ids[3]: "repetition_loop",
        ids[4]: "repetition_loop",
    }
    assert rejected[ids[3]]["reject_detail"] == "as stored"
