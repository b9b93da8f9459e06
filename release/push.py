"""Upload a release folder to the Hugging Face Hub as a dataset repository.

Exactly the files the release lists in its ``release.json`` go up (Parquet shards,
README.md card, stats.json, release.json), each verified against its recorded size and sha256
(:func:`release.folder.verify_release`);
Parquet files on the Hub that the release does not list (configs of an earlier,
larger release) are deleted in the same commit, so the repository holds this
release and nothing else. ``huggingface_hub``'s ``upload_folder`` streams the files
in batched commits and resumes when re-run after an interruption. The repo id is
validated and a token looked for before anything is uploaded, also with ``--dry-run``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from imagenet_think_errors import MissingInputError, UsageError
from release.folder import listed_files

EXAMPLE = "imagenet-think push imagenet_think --repo-id my-org/ImageNet-Think --dry-run"


def release_files(folder: str | Path) -> list[tuple[str, int]]:
    """(path in repo, size in bytes) of every file that would go up: those ``release.json`` lists."""
    return listed_files(folder)


def check_repo_id(repo_id: str) -> None:
    """Refuse a repo id the Hub would refuse (``ORG/NAME`` of letters, digits, ``-``, ``_``, ``.``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
        if "/" not in repo_id:
            raise HFValidationError("it has no namespace")
    except HFValidationError as error:
        raise UsageError(
            f"--repo-id {repo_id!r} is not a valid dataset repository id ({error}); use ORG/NAME, "
            "e.g. my-org/ImageNet-Think"
        ) from None


def token_source() -> str | None:
    """Where a Hub token would come from (HF_TOKEN or a saved login), or None."""
    from huggingface_hub import get_token

    if not get_token():
        return None
    return "the HF_TOKEN environment variable" if os.environ.get("HF_TOKEN") else "the saved login"


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
        allow_patterns=[path for path, _ in release_files(folder)],
        delete_patterns=["*.parquet", "**/*.parquet"],  # not deleted: the files uploaded in this commit
        commit_message="Upload ImageNet-Think release",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release", help="a release folder written by `imagenet-think build`")
    parser.add_argument("--repo-id", required=True, help="the dataset repository, ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to push to, created if missing (default: main)")
    parser.add_argument("--dry-run", action="store_true", help="list what would go up and upload nothing")


def run(args: argparse.Namespace) -> int:
    check_repo_id(args.repo_id)
    files = release_files(args.release)
    total = sum(size for _, size in files)
    token = token_source()
    if args.dry_run:
        for path, size in files:
            print(f"{size:>14,}  {path}")
        print(f"{len(files)} files, {total / 2**20:,.1f} MiB would go to datasets/{args.repo_id} (dry run)")
        print(
            f"token: found in {token}"
            if token
            else "token: none found; run `hf auth login` or set HF_TOKEN before pushing"
        )
        return 0
    if not token:
        raise MissingInputError(
            "no Hugging Face token found: run `hf auth login` or set HF_TOKEN, then push again"
        )
    info = push_release(args.release, args.repo_id, private=args.private, revision=args.revision)
    print(
        f"uploaded {len(files)} files ({total / 2**20:,.1f} MiB) to {getattr(info, 'commit_url', args.repo_id)}"
    )
    return 0
