"""``imagenet-think push``: upload a release folder to the Hugging Face Hub as a dataset repository.

What goes up, what is removed from the Hub, when access requests are turned on and what is checked
first (also with ``--dry-run``) is stated in docs/release.md, "What a push publishes". Here: the
listed files (:func:`release_files`, verified by :func:`release.folder.verify_release`), the
arguments of ``huggingface_hub``'s ``upload_folder`` (:func:`upload_arguments`; resumable in
batches where ``hf_xet`` is installed, :func:`resumable`) and the gating (:func:`gated`).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
from pathlib import Path

from imagenet_think_errors import MissingInputError, UsageError
from release.folder import CARD, listed_files

logger = logging.getLogger(__name__)

EXAMPLE = "imagenet-think push imagenet_think --repo-id my-org/ImageNet-Think --dry-run"
RULES = "rules (what is checked, uploaded and removed, the licence and gating): docs/release.md"


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


def upload_arguments(folder: str | Path, repo_id: str, files: list[str], revision: str | None) -> dict:
    """The arguments of ``HfApi.upload_folder`` for the release's verified ``files``: those files go up,
    and Parquet files of the repository that the release does not list are deleted."""
    return {
        "repo_id": repo_id,
        "repo_type": "dataset",
        "folder_path": str(folder),
        "revision": revision,
        "allow_patterns": files,
        "delete_patterns": ["*.parquet", "**/*.parquet"],  # not deleted: the files uploaded
        "commit_message": "Upload ImageNet-Think release",
    }


def resumable() -> bool:
    """Whether ``upload_folder`` uploads in resumable batches of commits (it does with ``hf_xet``,
    from huggingface_hub 1.20; without it, everything goes in one commit)."""
    return importlib.util.find_spec("hf_xet") is not None


def gated(folder: str | Path) -> bool:
    """Whether the release's card asks for gated access (``extra_gated_fields``: ImageNet's terms)."""
    from huggingface_hub import RepoCard

    return "extra_gated_fields" in RepoCard.load(Path(folder) / CARD).data.to_dict()


def push_release(
    folder: str | Path, repo_id: str, files: list[str], private: bool = False, revision: str | None = None
):
    """Upload the verified ``files`` of the release ``folder``; gate the repository when the card asks."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision:  # a new branch starts from main
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    info = api.upload_folder(**upload_arguments(folder, repo_id, files, revision))
    if gated(folder):
        api.update_repo_settings(repo_id, gated="auto", repo_type="dataset")
    return info


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
    if not resumable():
        logger.warning(
            "hf_xet is not installed: the release goes up in one commit, and an interrupted push starts "
            "over; `pip install hf_xet` makes it resumable"
        )
    if args.dry_run:
        for path, size in files:
            print(f"{size:>14,}  {path}")
        print(f"{len(files)} files, {total / 2**20:,.1f} MiB would go to datasets/{args.repo_id} (dry run)")
        print(
            "upload: in resumable batches of commits (rerun the same push to resume an interrupted one)"
            if resumable()
            else "upload: one commit (install hf_xet for a resumable upload)"
        )
        if gated(args.release):
            print("access: gated on the card's terms (the ImageNet terms of access); turned on by the push")
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
    info = push_release(
        args.release, args.repo_id, [path for path, _ in files], private=args.private, revision=args.revision
    )
    print(
        f"uploaded {len(files)} files ({total / 2**20:,.1f} MiB) to {getattr(info, 'commit_url', args.repo_id)}"
    )
    return 0
