"""Upload a release folder to the Hugging Face Hub as a dataset repository.

The folder goes up as it is (Parquet shards, README.md card, stats.json):
``huggingface_hub``'s ``upload_folder`` streams it in batched commits and resumes
when re-run after an interruption. The card is never rewritten on the way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLE = "imagenet-think push imagenet_think --repo-id my-org/ImageNet-Think --dry-run"


def release_files(folder: str | Path) -> list[tuple[str, int]]:
    """(path in repo, size in bytes) of every file that would go up."""
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(
            f"{folder} has no README.md: build the release with `imagenet-think build` first"
        )
    return [
        (path.relative_to(folder).as_posix(), path.stat().st_size)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]


def push_release(folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None):
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision:  # a new branch starts from main
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        revision=revision,
        ignore_patterns=[".*", "**/.*"],
        commit_message="Upload ImageNet-Think release",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release", help="a release folder written by `imagenet-think build`")
    parser.add_argument("--repo-id", required=True, help="the dataset repository, ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to push to, created if missing (default: main)")
    parser.add_argument("--dry-run", action="store_true", help="list what would go up and upload nothing")


def run(args: argparse.Namespace) -> int:
    files = release_files(args.release)
    total = sum(size for _, size in files)
    if args.dry_run:
        for path, size in files:
            print(f"{size:>14,}  {path}")
        print(f"{len(files)} files, {total / 2**20:,.1f} MiB would go to datasets/{args.repo_id} (dry run)")
        return 0
    info = push_release(args.release, args.repo_id, private=args.private, revision=args.revision)
    print(
        f"uploaded {len(files)} files ({total / 2**20:,.1f} MiB) to {getattr(info, 'commit_url', args.repo_id)}"
    )
    return 0
