"""Generation on the real vLLM CPU engine with a tiny local model: sample -> generate -> build -> load,
per-request rejects, the Ray pool, and the run protocol (the kill-and-resume test is in test_force_answer.py):
the whole config checked before run.json, checkable chunk commits, resume verification, takeover of
folders with no committed chunk, provenance columns, file permissions."""

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from datasets import load_dataset

from generation.config import VLMConfig, load_model_config
from generation.generate import generate
from generation.records import (
    RECORD_SCHEMA,
    REJECT_SCHEMA,
    Reject,
    iter_rows,
    manifest_fingerprint,
    read_manifest,
    to_table,
)
from generation.run_check import check_run, completed_chunks, summarize
from generation.runs import (
    RUN_FILE,
    ChunkResult,
    chunk_files,
    claim_run_dir,
    commit_chunk,
    commit_result,
    plan_run,
)
from generation.verdicts.labels import label_verdicts, verifier_fingerprint
from generation.verdicts.quality import quality_fingerprint, record_verdict
from imagenet_think_cli import main as cli
from imagenet_think_errors import InputError, MissingInputError, RefusedError, UsageError
from release.build import BuildOptions, build_release
from tests.fixtures.image_trees import write_sampling_tree
from tests.fixtures.synthetic import make_record, write_manifest_tree

REPO = Path(__file__).resolve().parent.parent
TINY_GLM = REPO / "configs" / "generation" / "tiny_glm.yaml"


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """An image tree with good, odd and bad files, sampled into a manifest by the CLI."""
    root = tmp_path_factory.mktemp("generate")
    tree = write_sampling_tree(root / "tree", good_per_class=2)
    manifest = root / "manifest.parquet"
    assert (
        cli(["sample", "--source", str(root / "tree"), "--out", str(manifest), "--min-per-class", "1"]) == 0
    )
    return {"root": root, "tree": tree, "manifest": manifest}


@pytest.fixture(scope="module")
def glm_engine():
    """One tiny-GLM engine for the tests whose configs differ from tiny_glm.yaml only in chunk_size,
    which the engine does not see (generate's ``annotator``)."""
    from generation.annotator import Annotator

    return Annotator(load_model_config(TINY_GLM))


def _records(run_dir):
    """The records of the run's verified chunks."""
    return list(iter_rows(check_run(run_dir).record_files))


def _rejects(run_dir):
    return list(iter_rows(check_run(run_dir).reject_files))


def _user_mode() -> int:
    """The permissions of a file a user creates: 0o666 & ~umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_sample_generate_build_load(sampled, tmp_path, glm_engine):
    tree, manifest = sampled["tree"], sampled["manifest"]
    good = {Path(f.path).stem for f in tree.files if not f.reason}
    table, _ = read_manifest(manifest)
    assert (
        set(table["image_id"].to_pylist()) == good
    )  # every good (incl. odd-mode) image sampled, bad ones not
    config = load_model_config(TINY_GLM)
    summary = generate(config, manifest, tmp_path / "run", annotator=glm_engine)
    records = _records(tmp_path / "run")
    assert {r["image_id"] for r in records} == good and len(records) == len(good)
    assert summary.records == len(good) and summary.rejects == 0
    sha = dict(zip(table["image_id"].to_pylist(), table["sha256"].to_pylist(), strict=True))
    fingerprint = manifest_fingerprint(table)
    root = read_manifest(manifest)[1]
    for record in records:
        assert record["annotator"] == "glm" and record["model_id"] == "tiny:glm4v"
        assert record["num_output_tokens"] > 0 and record["finish_reason"] in {"stop", "length"}
        # on_truncation: keep (the default): one pass, kept as generated
        assert not record["forced_answer"] and record["second_pass_finish_reason"] == ""
        assert record["num_first_pass_tokens"] == record["num_output_tokens"]
        assert record["question"] == config.question
        # provenance: the picture the text was generated for, and the manifest it came from
        assert record["image_sha256"] == sha[record["image_id"]]
        assert (
            record["image_sha256"] == hashlib.sha256((root / record["image_path"]).read_bytes()).hexdigest()
        )
        assert record["manifest_sha256"] == fingerprint
        # verdicts judged at commit, with the fingerprints of the rules that judged them
        quality = record_verdict(
            record["think_closed"],
            record["finish_reason"],
            record["think"],
            record["answer"],
            record["forced_answer"],
            record["second_pass_finish_reason"],
        )
        assert (record["quality_reason"], record["quality_detail"]) == (quality or ("", ""))
        assert record["quality_checker"] == quality_fingerprint()
        verdict = label_verdicts([record["answer"]], [record["wnid"]])[0]
        assert (record["label_verdict"], record["label_verifier"]) == (verdict.kind, verifier_fingerprint())
        assert record["label_score"] == pytest.approx(verdict.score)
    run = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert run["manifest"] == str(manifest.resolve()) and run["manifest_sha256"] == fingerprint
    assert run["images"] == len(good) and run["chunk_size"] == config.chunk_size == 8
    state = check_run(tmp_path / "run")
    assert sorted(state.done) == [0, 1] and not state.not_counted and state.images_done == len(good)
    assert [c["images"] for c in state.done.values()] == [8, len(good) - 8]
    out = tmp_path / "imagenet_think"
    built = build_release(
        BuildOptions(
            [tmp_path / "run"], manifest, out, annotators=("glm",), validation_fraction=0, test_fraction=0
        )
    )
    assert "both" not in built.rows  # one annotator: no joint config
    loaded = {name: load_dataset(str(out), name, split="train").num_rows for name in built.rows}
    assert loaded == {name: splits["train"] for name, splits in built.rows.items()}
    assert sum(loaded.values()) == len(
        good
    )  # each record is in `glm` or, rejected with its reason, in `rejected`


def test_failed_requests_become_rejects(sampled, tmp_path):
    manifest = sampled["manifest"]
    table, root = read_manifest(manifest)
    # A copy of the tree in which, since sampling, one image became another picture and one vanished.
    copy = tmp_path / "tree"
    shutil.copytree(root, copy)
    changed, missing, other = (table["image_path"][i].as_py() for i in (0, 1, 5))
    shutil.copyfile(copy / other, copy / changed)  # a valid image, but not the one sampled
    (copy / missing).unlink()
    config = load_model_config(TINY_GLM, ["engine.max_model_len=40"])  # the image prompt no longer fits
    generate(config, manifest, tmp_path / "run", limit=3, image_root=copy)
    rejects = {r["image_id"]: r for r in _rejects(tmp_path / "run")}
    assert rejects[Path(changed).stem]["reason"] == "image_changed"
    assert "not the manifest's" in rejects[Path(changed).stem]["detail"]
    assert rejects[Path(missing).stem]["reason"] == "unreadable_image"
    reasons = Counter(r["reason"] for r in rejects.values())
    assert reasons == {"image_changed": 1, "unreadable_image": 1, "prompt_too_long": 1}
    assert not _records(tmp_path / "run")


def test_an_engine_that_cannot_go_on_stops_the_run_uncommitted(sampled, tmp_path):
    """Failures injected at vLLM's boundary: a dead engine, and one failing every request."""
    from vllm.v1.engine.exceptions import EngineDeadError

    from generation.annotator import Annotator

    config = load_model_config(TINY_GLM)
    annotator = Annotator(config)
    for error, expected in ((EngineDeadError(), EngineDeadError), (RuntimeError("boom"), RuntimeError)):

        def broken(*args, error=error, **kwargs):
            raise error

        annotator.llm.chat = broken
        run = tmp_path / type(error).__name__
        with pytest.raises(expected):
            generate(config, sampled["manifest"], run, limit=3, annotator=annotator)
        assert not completed_chunks(run) and not _rejects(run)  # nothing committed: a resume redoes it


def test_slurm_arrays_with_a_step_shard_by_position(monkeypatch):
    from generation.generate import default_sharding

    for name, value in {
        "SLURM_ARRAY_TASK_COUNT": "4",
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_STEP": "2",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "6")  # --array=0-6:2 runs 0, 2, 4, 6
    assert default_sharding() == (4, 3)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    with pytest.raises(ValueError, match="submit the array as a range"):
        default_sharding()


def test_only_torn_temporary_files_are_removed(tmp_path):
    from generation.records import remove_temporary_files, temporary_prefix

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host = temporary_prefix().split("@")[1]
    live = tmp_path / f"{temporary_prefix()}a.parquet"  # this process is writing it
    torn = tmp_path / f".tmp-{gone.stdout.strip()}@{host}@b.parquet"  # its writer has exited
    elsewhere = tmp_path / ".tmp-1@another-host@c.parquet"  # cannot be checked: kept until stale
    stale = tmp_path / ".tmp-2@another-host@d.parquet"
    for path in (live, torn, elsewhere, stale):
        path.write_bytes(b"partial")
    os.utime(stale, (time.time() - 2 * 24 * 3600,) * 2)
    assert remove_temporary_files(tmp_path) == 2
    assert sorted(tmp_path.iterdir()) == sorted([live, elsewhere])


def _small_manifest(tmp_path) -> Path:
    manifest = tmp_path / "m.parquet"
    write_sampling_tree(tmp_path / "tree", good_per_class=1, odd_files=False)
    assert (
        cli(["sample", "--source", str(tmp_path / "tree"), "--out", str(manifest), "--min-per-class", "1"])
        == 0
    )
    return manifest


def _commit_as_rejects(run_dir, chunk):
    """Commit a chunk whose images all became rejects (a real commit, without an engine)."""
    rejects = [Reject(t.image_id, t.image_path, "generate", "glm", "engine_error", "x") for t in chunk.tasks]
    commit_chunk(
        run_dir, chunk.index, to_table([], RECORD_SCHEMA), to_table(rejects, REJECT_SCHEMA), chunk.image_ids
    )


def test_a_resume_accepts_the_same_config_written_in_another_key_order(tmp_path):
    config = load_model_config(TINY_GLM)
    manifest = _small_manifest(tmp_path)
    plan = plan_run(manifest, 8)
    claim_run_dir(tmp_path / "run", config, plan)
    _commit_as_rejects(tmp_path / "run", plan.chunks[0])
    reordered = dataclasses.replace(config, sampling=dict(reversed(list(config.sampling.items()))))
    assert list(reordered.sampling) != list(config.sampling)
    claim_run_dir(tmp_path / "run", reordered, plan)  # no "another config" error
    changed = dataclasses.replace(config, sampling={**config.sampling, "temperature": 0.123})
    with pytest.raises(RefusedError, match="another config"):
        claim_run_dir(tmp_path / "run", changed, plan)


CONFIG_MISTAKES = [
    # (--set item, text the message must hold)
    (
        "sampling.max_token=64",
        ["sampling key 'max_token'", "did you mean 'max_tokens'", "--set sampling.max_token=64"],
    ),
    ("engine.max_modl_len=512", ["engine key 'max_modl_len'", "did you mean 'max_model_len'"]),
    ("sampling.max_tokens=0", ["max_tokens must be at least 1", "--set sampling.max_tokens=0"]),
    ("sampling.temperature=-0.5", ["temperature must be non-negative"]),
    ("sampling.max_tokens=lots", ["sampling.max_tokens = 'lots'"]),
    ("engine.max_model_len=-1", ["engine.max_model_len must be >= 1"]),
    ("engine.dtype=flaot32", ["engine.dtype = 'flaot32'", "'float32'"]),
    ("engine.enforce_eager=maybe", ["engine.enforce_eager = 'maybe'", "valid boolean"]),
    ("chunk_size=0", ["chunk_size must be a whole number >= 1"]),
    ("chunk_sise=4", ["unknown key 'chunk_sise'", "did you mean 'chunk_size'"]),
    ("sampling.max_tokens.limit=3", ["sampling.max_tokens is 48", "not a mapping"]),
    ("max_tokens", ["is not KEY=VALUE"]),
]


@pytest.mark.parametrize(("item", "expected"), CONFIG_MISTAKES, ids=[item for item, _ in CONFIG_MISTAKES])
def test_config_mistakes_fail_before_run_json_and_engine(sampled, tmp_path, item, expected):
    """Each mistake is found by `imagenet-think generate` before it writes run.json (and so before
    an engine starts, which generate does only after claiming the folder), naming the key."""
    out = tmp_path / "run"
    with pytest.raises(InputError) as raised:
        cli(
            [
                "generate",
                "--config",
                str(TINY_GLM),
                "--manifest",
                str(sampled["manifest"]),
                "--out",
                str(out),
                "--set",
                item,
            ]
        )
    for text in expected:
        assert text in str(raised.value)
    assert not out.exists()


def test_config_mistakes_in_the_file_and_in_code_name_their_source(sampled, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text(TINY_GLM.read_text().replace("  max_tokens: 48", "  max_token: 48"))
    with pytest.raises(InputError, match=f"{typo}: sampling key 'max_token'.*did you mean 'max_tokens'"):
        load_model_config(typo)
    engine_typo = tmp_path / "engine.yaml"
    engine_typo.write_text(TINY_GLM.read_text().replace("  enforce_eager: true", "  enforce_eagre: true"))
    with pytest.raises(
        InputError, match=f"{engine_typo}: engine key 'enforce_eagre'.*did you mean 'enforce_eager'"
    ):
        load_model_config(engine_typo)
    # A config made in code is checked by generate() itself, before it touches the run folder.
    config = load_model_config(TINY_GLM)
    for bad, key in (
        (dataclasses.replace(config, sampling={**config.sampling, "top_pp": 0.5}), "'top_pp'"),
        (dataclasses.replace(config, engine={**config.engine, "model": "other"}), "engine.model"),
        (
            dataclasses.replace(config, engine={**config.engine, "gpu_memory_utilization": 1.5}),
            "gpu_memory_utilization",
        ),
    ):
        with pytest.raises(InputError, match=key):
            generate(bad, sampled["manifest"], tmp_path / "run")
        assert not (tmp_path / "run").exists()
    with pytest.raises(UsageError, match="--limit 0"):
        generate(config, sampled["manifest"], tmp_path / "run", limit=0)
    with pytest.raises(MissingInputError, match="manifest .*missing.parquet not found"):
        generate(config, tmp_path / "missing.parquet", tmp_path / "run")
    with pytest.raises(MissingInputError, match="image folder"):
        generate(config, sampled["manifest"], tmp_path / "run", image_root=tmp_path / "nowhere")
    assert not (tmp_path / "run").exists()


def test_a_folder_without_committed_chunks_is_taken_over(sampled, tmp_path, caplog, glm_engine):
    manifest, out = sampled["manifest"], tmp_path / "run"
    # A config that passes every check but that vLLM refuses when the engine starts: run.json is
    # written, nothing is committed.
    too_long = load_model_config(TINY_GLM, ["engine.max_model_len=100000000"])
    with pytest.raises(ValueError, match="max_model_len"):
        generate(too_long, manifest, out, limit=3)
    assert json.loads((out / RUN_FILE).read_text())["config"]["engine"]["max_model_len"] == 100000000
    torn = chunk_files(out, 0)[1]  # rejects of a chunk killed before its records: uncommitted
    torn.write_bytes(b"left over")
    fixed = load_model_config(TINY_GLM, ["chunk_size=2"])
    with caplog.at_level(logging.WARNING, logger="generation"):
        summary = generate(fixed, manifest, out, limit=3, annotator=glm_engine)
    assert "takes the folder over" in caplog.text and "another config" in caplog.text
    assert json.loads((out / RUN_FILE).read_text())["config"] == dataclasses.asdict(fixed)
    assert summary.records + summary.rejects == 3 and summary.images_missing == 0
    state = check_run(out)
    assert sorted(state.done) == [0, 1] and not state.not_counted
    # Now the folder holds committed chunks: another config is refused, and nothing is touched.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RefusedError, match="another config.*2 committed chunk"):
        generate(too_long, manifest, out, limit=3)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_redoes_replaced_and_damaged_chunks_exactly(sampled, tmp_path, caplog, glm_engine):
    manifest, out = sampled["manifest"], tmp_path / "run"
    config = load_model_config(TINY_GLM, ["chunk_size=2"])
    annotator = glm_engine
    generate(config, manifest, out, limit=8, annotator=annotator)
    expected = read_manifest(manifest)[0]["image_id"].to_pylist()[:8]
    fields = ("image_id", "output", "think", "answer", "num_output_tokens")
    original = sorted(tuple(r[f] for f in fields) for r in _records(out))
    records = [chunk_files(out, index)[0] for index in range(4)]
    kept = {path: path.stat().st_mtime_ns for path in chunk_files(out, 0)}
    shutil.copyfile(records[0], records[1])  # replaced by another chunk's records
    damaged = bytearray(records[2].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte: same size, other sha256
    records[2].write_bytes(bytes(damaged))
    records[3].write_bytes(records[3].read_bytes()[:-100])  # truncated
    state = check_run(out)
    assert sorted(state.done) == [0] and state.images_done == 2 and state.images_missing == 6
    assert set(state.bad) == set(records[1:])
    assert "sha256" in state.bad[records[2]] and "size" in state.bad[records[3]]
    assert any(line.startswith("missing: 6 of 8 images") for line in summarize(out).lines())
    with caplog.at_level(logging.WARNING, logger="generation"):
        summary = generate(config, manifest, out, limit=8, annotator=annotator)
    for path in records[1:]:
        assert f"{path.name}: {state.bad[path]}; redoing the chunk" in caplog.text
    state = check_run(out)
    assert sorted(state.done) == [0, 1, 2, 3] and not state.not_counted and state.images_done == 8
    assert {path: path.stat().st_mtime_ns for path in chunk_files(out, 0)} == kept  # the good chunk stays
    ids = [r["image_id"] for r in _records(out)] + [r["image_id"] for r in _rejects(out)]
    assert sorted(ids) == sorted(expected)  # exactly the right image set, each once
    assert sorted(tuple(r[f] for f in fields) for r in _records(out)) == original  # greedy: the same texts
    assert summary.images_missing == 0 and not any(line.startswith("missing") for line in summary.lines())


def test_a_limited_sharded_run_reports_its_images_and_writes_user_permissions(tmp_path, glm_engine):
    old_umask = os.umask(0o027)  # the files must follow it: 0o640, not mkstemp's 0o600
    try:
        assert _user_mode() == 0o640
        manifest = _small_manifest(tmp_path)
        table, _ = read_manifest(manifest)
        assert table.num_rows == 3
        config = load_model_config(TINY_GLM, ["chunk_size=1"])
        annotator = glm_engine
        out = tmp_path / "run"
        first = generate(config, manifest, out, limit=2, num_shards=2, shard_index=0, annotator=annotator)
        assert first.images == 2 and first.images_missing == 1
        assert "missing: 1 of 2 images are in no committed chunk" in "\n".join(first.lines())
        second = generate(config, manifest, out, limit=2, num_shards=2, shard_index=1, annotator=annotator)
        assert second.images == 2 and second.images_missing == 0 and second.records + second.rejects == 2
        run = json.loads((out / RUN_FILE).read_text())
        assert run["images"] == 2 and run["chunk_size"] == 1
        assert run["manifest_sha256"] == manifest_fingerprint(table)  # of the whole manifest, not the limit
        assert (
            run["images_sha256"]
            == hashlib.sha256("\n".join(table["image_id"].to_pylist()[:2]).encode()).hexdigest()
        )
        written = [manifest, manifest.with_suffix(".rejects.parquet"), *out.iterdir()]
        assert {p.name for p in out.iterdir()} == {RUN_FILE} | {
            p.name for i in range(2) for p in chunk_files(out, i)
        }
        assert {p.name: p.stat().st_mode & 0o777 for p in written} == {p.name: 0o640 for p in written}
    finally:
        os.umask(old_umask)


def test_check_run_names_what_is_missing_or_wrong(sampled, tmp_path):
    manifest = sampled["manifest"]
    (tmp_path / "runs" / "glm").mkdir(parents=True)
    with pytest.raises(MissingInputError, match="holds no generation run"):
        check_run(tmp_path / "runs" / "glm")
    plan = plan_run(manifest, 4)
    config = load_model_config(TINY_GLM)
    claim_run_dir(tmp_path / "runs" / "glm", config, plan)
    with pytest.raises(MissingInputError, match=r"no run\.json.*did you mean .*runs/glm\?"):
        check_run(tmp_path / "runs")  # the parent of a run folder
    with pytest.raises(MissingInputError, match=r"did you mean .*runs/glm\?"):
        check_run(tmp_path / "runs" / "gml")  # a typo
    run = tmp_path / "runs" / "glm"
    _commit_as_rejects(run, plan.chunks[0])
    records_path, rejects_path, commit_path = chunk_files(run, 1)
    records_path.write_bytes(pq_bytes := chunk_files(run, 0)[0].read_bytes())  # a records file with no commit
    state = check_run(run)
    assert list(state.done) == [0] and state.images_done == 4 and state.images_expected == plan.images
    assert not state.bad and list(state.uncommitted) == [records_path]
    assert "no commit file" in state.uncommitted[records_path]
    assert state.record_files == [chunk_files(run, 0)[0]] and state.reject_files == [chunk_files(run, 0)[1]]
    commit = json.loads(chunk_files(run, 0)[2].read_text())
    assert commit["images"] == 4 and commit["rejects"]["rows"] == 4 and commit["records"]["rows"] == 0
    assert commit["rejects"]["sha256"] == hashlib.sha256(chunk_files(run, 0)[1].read_bytes()).hexdigest()
    assert commit["records"]["bytes"] == len(pq_bytes)
    chunk_files(run, 0)[1].unlink()  # a committed file gone
    assert "missing" in check_run(run).bad[chunk_files(run, 0)[1]] and not check_run(run).done
    # A commit that does not hold one row per image is refused before anything is written.
    with pytest.raises(ValueError, match="one row per image"):
        commit_chunk(
            run, 2, to_table([], RECORD_SCHEMA), to_table([], REJECT_SCHEMA), plan.chunks[2].image_ids
        )
    assert not any(path.exists() for path in chunk_files(run, 2))
    (run / RUN_FILE).write_text("{not json")
    with pytest.raises(InputError, match=r"run\.json is not valid JSON"):
        check_run(run)


def test_records_of_an_older_toolkit_are_never_silently_discarded(sampled, tmp_path):
    """A folder from before commit files: its records cannot be verified, so it is refused, not overwritten."""
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_FILE).write_text(
        json.dumps({"config": {}, "images_sha256": "x", "manifest": "m", "versions": {}})
    )
    (run / "records-c0000000.parquet").write_bytes(b"records of an older run")
    with pytest.raises(RefusedError, match="older imagenet-think"):
        generate(load_model_config(TINY_GLM), sampled["manifest"], run)
    assert (run / "records-c0000000.parquet").read_bytes() == b"records of an older run"
    with pytest.raises(InputError, match="older imagenet-think"):
        check_run(run)


def test_a_chunk_whose_verdicts_fail_is_committed_without_them(tmp_path, monkeypatch, caplog):
    """The stored verdicts only spare the release work: when judging fails at commit (a checker
    that cannot load, say), the engine's records are committed all the same and the build judges them."""
    import generation.runs

    manifest, entries = write_manifest_tree(tmp_path, classes=1, per_class=3)
    plan = plan_run(manifest, 3)
    run = tmp_path / "run"
    claim_run_dir(run, VLMConfig(annotator="glm", model="synthetic/glm", chunk_size=3), plan)
    rng = random.Random(0)
    records = [make_record(e, "glm", rng, manifest_sha256=plan.manifest_sha256) for e in entries]

    def unavailable(table):
        raise RuntimeError("the language model cannot be loaded")

    monkeypatch.setattr(generation.runs, "with_verdicts", unavailable)
    with caplog.at_level(logging.WARNING, logger="generation.runs"):
        commit_result(run, plan.chunks[0], ChunkResult(records=records, rejects=[]))
    assert "chunk 0: committed without verdicts" in caplog.text and "cannot be loaded" in caplog.text
    stored = list(iter_rows(check_run(run).record_files))
    assert len(stored) == 3 and {(r["quality_checker"], r["label_verifier"]) for r in stored} == {("", "")}
    monkeypatch.undo()
    built = build_release(
        BuildOptions([run], manifest, tmp_path / "out", validation_fraction=0, test_fraction=0)
    )
    assert built.rows["glm"] == {"train": 3}
    labels = load_dataset(str(tmp_path / "out"), "glm", split="train")["label_verdict"]
    assert len(labels) == 3 and "" not in labels  # judged by the build
