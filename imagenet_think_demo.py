"""``imagenet-think demo``: the whole pipeline on a CPU, on photos that ship inside installed packages.

sample -> generate (two tiny annotators through vLLM) -> build -> load_dataset -> SFT
(accelerate + TRL) -> eval (the trained student and an untrained baseline) -> tables,
charts and a preview page. The annotators are tiny random-weight stand-ins built locally:
their words, held to the think/answer format and a small vocabulary (the demo classes'
names and some of their WordNet relatives), are random and say nothing about the images;
the student learns that language from the train split and is scored on the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from common.checkout import checkout_file
from imagenet_think_errors import RefusedError
from imagenet_think_preview import reward_chart, write_preview
from release.schema import ANNOTATORS, JOINT_CONFIG

REPO = Path(__file__).resolve().parent
EXAMPLE = "imagenet-think demo --out demo"
RULES = "what the demo runs and shows: docs/setup.md"
DEMO_NOTE = (
    "Demo release: the think and answer texts come from tiny random-weight stand-in models, "
    "constrained to the think/answer format; they are not meaningful."
)


@dataclass(frozen=True)
class Photo:
    package: str  # skimage or sklearn
    file: str
    wnid: str
    credit: str


PHOTOS = (
    Photo("skimage", "astronaut.png", "n09818022", "NASA (Eileen Collins), public domain"),
    Photo("skimage", "chelsea.png", "n02123045", "Stefan van der Walt, CC0"),
    Photo("skimage", "coffee.png", "n07920052", "Rachel Michetti, CC0"),
    Photo("skimage", "rocket.jpg", "n04099429", "SpaceX, public domain"),
    Photo("skimage", "camera.png", "n02942699", "Lav Varshney, CC0"),
    Photo("skimage", "brick.png", "n02897820", "CC0Textures, CC0"),
    Photo("sklearn", "china.jpg", "n04407435", "danielbuechele on Flickr, CC BY 2.0"),
    Photo("sklearn", "flower.jpg", "n11669921", "vultilion on Flickr, CC BY 2.0"),
)
SPLITS = {"validation_fraction": 0.0, "test_fraction": 0.5}  # two views per class: one trains, one tests


def photo_path(photo: Photo) -> Path:
    import skimage
    import sklearn

    if photo.package == "skimage":
        return Path(skimage.__file__).parent / "data" / photo.file
    return Path(sklearn.__file__).parent / "datasets" / "images" / photo.file


def write_photo_tree(root: Path, photos: tuple[Photo, ...] = PHOTOS) -> None:
    """Each photo and its mirror image in an ImageNet-style tree, plus one truncated file."""
    for photo in photos:
        source = photo_path(photo)
        folder = root / photo.wnid
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{photo.wnid}_{Path(photo.file).stem}"
        shutil.copyfile(source, folder / f"{stem}{source.suffix}")
        ImageOps.mirror(Image.open(source)).save(folder / f"{stem}_mirrored.png")
    broken = photo_path(photos[0]).read_bytes()[:4000]
    (root / photos[0].wnid / f"{photos[0].wnid}_broken{photo_path(photos[0]).suffix}").write_bytes(broken)


class Stages:
    """Prints what each stage does, where its output went, and how long it took."""

    def __init__(self, total: int):
        self.total, self.index, self.start = total, 0, time.perf_counter()

    def begin(self, what: str) -> None:
        self.index += 1
        self.stage_start = time.perf_counter()
        print(f"\n[{self.index}/{self.total}] {what}", flush=True)

    def done(self, where: str) -> None:
        print(f"      -> {where} ({time.perf_counter() - self.stage_start:.0f} s)", flush=True)


def _cli(*args: str) -> None:
    from imagenet_think_cli import main

    if main(list(args)) != 0:
        raise RuntimeError(f"imagenet-think {' '.join(args)} failed")


def _subprocess(command: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))}
    with open(log, "w") as handle:
        finished = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed; see {log}:\n" + log.read_text()[-3000:])


DEMO_MARKER = ".imagenet-think-demo"


def _replace_demo_folder(out: Path) -> None:
    """Empty ``out`` for a new demo run: only a new or empty folder, or one an earlier demo wrote."""
    earlier_demo = (out / DEMO_MARKER).is_file() or (
        (out / "photos").is_dir() and (out / "manifest.parquet").is_file()
    )
    if out.exists() and any(out.iterdir()) and not earlier_demo:
        raise RefusedError(f"{out} is not empty and not a demo folder: give the demo a new or empty --out")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).touch()


DEMO_MODELS = ("student", "baseline")
EVAL_MAX_TOKENS = 96
# What the closing lines compare: the lexical metrics of Tables 4-6, on the full output.
LEXICAL = {"rouge1": "ROUGE-1", "rougeL": "ROUGE-L", "jaccard": "Jaccard", "overlap": "overlap",
           "tfidf_cosine": "TF-IDF cosine", "tf_cosine": "cosine"}  # fmt: skip


def sample_stage(out: Path, photos: tuple[Photo, ...]) -> Path:
    write_photo_tree(out / "photos", photos)
    manifest = out / "manifest.parquet"
    _cli(
        "sample",
        "--source",
        str(out / "photos"),
        "--out",
        str(manifest),
        "--min-per-class",
        "1",
        "--workers",
        "1",
    )
    return manifest


def generate_stage(out: Path, manifest: Path) -> list[Path]:
    runs = []
    for annotator in ANNOTATORS:
        config = checkout_file(f"configs/generation/demo_{annotator}.yaml")
        runs.append(out / "runs" / annotator)
        _cli("generate", "--config", str(config), "--manifest", str(manifest), "--out", str(runs[-1]))
    return runs


def build_stage(runs: list[Path], manifest: Path, release: Path) -> dict:
    from release.build import BuildOptions, build_release

    build_release(BuildOptions(runs, manifest, release, **SPLITS), card_note=DEMO_NOTE)
    return json.loads((release / "stats.json").read_text())


def load_stage(out: Path) -> str:
    code = f"from datasets import load_dataset; print(load_dataset('imagenet_think', '{JOINT_CONFIG}'))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=out, capture_output=True, text=True, check=True
    ).stdout


def train_stage(out: Path, release: Path) -> Path:
    """The student: the tiny base model fully fine-tuned on the train split (configs/sft/demo.yaml)."""
    student = out / "student"
    _subprocess(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "-m", "training.sft",
         "--config", "configs/sft/demo.yaml", "--dataset_name", str(release), "--output_dir", str(student)],
        out / "train.log",
    )  # fmt: skip
    return student


def grpo_stage(out: Path, release: Path, student: Path) -> Path:
    """GRPO on the SFT student, rewarded by the dataset's verifiers; returns the reward chart."""
    grpo = out / "student-grpo"
    _subprocess(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "-m", "training.grpo",
         "--config", "configs/grpo/demo.yaml", "--model_name_or_path", str(student), "--dataset_name", str(release),
         "--output_dir", str(grpo)],
        out / "grpo.log",
    )  # fmt: skip
    return reward_chart(grpo / "trainer_state.json", out / "grpo_rewards.png")


def eval_generate_stage(out: Path, release: Path, student: Path) -> None:
    """Both models greedy, with the same budget, room for the longest trace (about 55 tokens)."""
    baseline = str(checkout_file("configs/models/tiny_baseline.yaml"))
    overrides = {"student": [f"model={student}", "annotator=student"], "baseline": []}
    for name in DEMO_MODELS:
        _cli("eval", "generate", "--model", baseline, "--set", f"sampling.max_tokens={EVAL_MAX_TOKENS}",
             *overrides[name], "--dataset", str(release), "--split", "test", "--out", str(out / "eval" / name))  # fmt: skip


def eval_report_stage(out: Path) -> Path:
    for name in DEMO_MODELS:
        _cli("eval", "score", "--predictions", str(out / "eval" / name), "--out", str(out / "eval" / f"{name}-report"),
             "--name", name, "--bootstrap", "200")  # fmt: skip
    report = out / "eval" / "report"
    _cli("eval", "report", *(str(out / "eval" / f"{n}-report") for n in DEMO_MODELS), "--out", str(report))
    return report


def _verdict_line(stats: dict) -> str:
    shares = ", ".join(
        f"{annotator}: "
        + " ".join(f"{kind} {share:.0%}" for kind, share in verdicts["share"].items() if share)
        for annotator, verdicts in stats["label_verdicts_by_annotator"].items()
    )
    return (
        f"label verdicts ({shares}); {stats['verified_samples']} verified trace(s) (exact or hyponym) "
        "in the `verified` config"
    )


def closing_note(stats: dict, out: Path) -> str:
    """Two or three sentences on what the demo showed, with its own numbers."""
    summaries = {
        name: json.loads((out / "eval" / f"{name}-report" / "summary.json").read_text())
        for name in DEMO_MODELS
    }
    scores = ", ".join(
        f"{label} {summaries['student']['scores']['full'][metric]['avg_of_avg']:.2f} vs "
        f"{summaries['baseline']['scores']['full'][metric]['avg_of_avg']:.2f}"
        for metric, label in LEXICAL.items()
    )
    from generation.verdicts.labels import KINDS

    kinds = sum(
        any(v["share"].get(kind) for v in stats["label_verdicts_by_annotator"].values()) for kind in KINDS
    )
    return (
        f"What you saw: two tiny random-weight annotators wrote {stats['samples']} think/answer traces "
        f"in a fixed format and vocabulary, and the release judged each answer against its photo's WordNet "
        f"class ({kinds} of the {len(KINDS)} verdict kinds occur; {stats['verified_samples']} traces are verified). "
        f"A student fine-tuned on the train split's traces learned their language: on the test split it "
        f"beats the untrained baseline (full output, Avg of Avg: {scores}) and closes its think on "
        f"{summaries['student']['think_closed']:.0%} of its outputs (the baseline on "
        f"{summaries['baseline']['think_closed']:.0%}). The words are random, so it learned the format and "
        "the vocabulary, not what is in the photos; with real annotators the same chain trains on real reasoning."
    )


def run_demo(out: str | Path, photos: tuple[Photo, ...] = PHOTOS, with_grpo: bool = False) -> None:
    """The whole chain on ``photos``; ``with_grpo`` adds a GRPO stage on the SFT student."""
    out = Path(out).resolve()
    stages = Stages(total=9 if with_grpo else 8)
    _replace_demo_folder(out)
    release = out / "imagenet_think"

    stages.begin("sample: photos from scikit-image / scikit-learn, mirrored, plus one broken file")
    manifest = sample_stage(out, photos)
    stages.done(f"{manifest} and {manifest.with_suffix('')}.rejects.parquet")

    stages.begin("generate: tiny GLM-4.1V (`glm`) and tiny Qwen2-VL in Kimi's format (`kimi`) through vLLM")
    runs = generate_stage(out, manifest)
    stages.done(f"{out / 'runs'}")

    stages.begin("build the release (Parquet shards, label verdicts, dataset card)")
    stats = build_stage(runs, manifest, release)
    stages.done(f"{release} (card: {release / 'README.md'}); {_verdict_line(stats)}")

    stages.begin(f'load it: cd {out} && python -c \'load_dataset("imagenet_think", "{JOINT_CONFIG}")\'')
    print(load_stage(out))
    stages.done("loaded from the folder name, offline")

    stages.begin(
        "train: accelerate launch -m training.sft --config configs/sft/demo.yaml (full fine-tuning, TRL)"
    )
    student = train_stage(out, release)
    stages.done(f"student {student}, log {out / 'train.log'}")

    if with_grpo:
        stages.begin(
            "GRPO: accelerate launch -m training.grpo --config configs/grpo/demo.yaml on the student"
        )
        chart = grpo_stage(out, release, student)
        stages.done(f"{out / 'student-grpo'}, reward curves {chart}, log {out / 'grpo.log'}")

    stages.begin("eval generate: the trained student and the untrained tiny baseline on the test split")
    eval_generate_stage(out, release, student)
    stages.done(f"{out / 'eval'}")

    stages.begin("eval score + report: the paper's eight metrics, label accuracy, Tables 3-7, charts")
    report = eval_report_stage(out)
    stages.done(f"{report}")

    stages.begin("preview page")
    preview = write_preview(out, report, DEMO_NOTE)
    stages.done(f"{preview}")
    print(
        f"\nDemo finished in {time.perf_counter() - stages.start:.0f} s: {stats['images']} images, {stats['samples']} samples."
    )
    print(f"  open {preview}")
    print(
        f'  cd {out} && python -c \'from datasets import load_dataset; print(load_dataset("imagenet_think", "{JOINT_CONFIG}"))\''
    )
    print(f"  tables: {report / 'tables.md'}")
    print("\n" + closing_note(stats, out))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo", help="the demo folder (replaced)")
    parser.add_argument(
        "--with-grpo",
        action="store_true",
        help="add a GRPO stage on the SFT student (rewards: the label verifier, think format, repetition, "
        "...) and its reward curves in the preview (about a minute more)",
    )


def run(args: argparse.Namespace) -> int:
    run_demo(args.out, with_grpo=args.with_grpo)
    return 0
