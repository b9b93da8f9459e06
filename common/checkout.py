"""Files the toolkit reads from its checkout at run time, with a clear error where there is none.

The prompts (``configs/prompts/imagenet_think.yaml``), the dataset card template
(``dataset_card.md``) and the rules it includes (``docs/release.md``) are editable files of the
checkout, read where they stand, so an edit takes effect at once: the toolkit is installed from its checkout with ``pip install -e``.
A non-editable install (``pip install .``, ``pip install git+...``) carries the code only;
:func:`checkout_file` says so at the first use of such a file (a command fails before it writes
anything) instead of a ``FileNotFoundError`` under site-packages.
"""

from __future__ import annotations

from pathlib import Path

from imagenet_think_errors import MissingInputError

ROOT = Path(__file__).resolve().parent.parent  # the checkout: pyproject.toml, configs/, generation/, ...


def checkout_file(relative: str) -> Path:
    """``ROOT / relative``, a file of the checkout; :class:`MissingInputError` where it is not there."""
    path = ROOT / relative
    if path.is_file():
        return path
    if not (ROOT / "pyproject.toml").is_file():
        raise MissingInputError(
            f"{relative} is not installed: the toolkit reads it from its checkout, and this is a "
            f"non-editable install in {ROOT}; install the toolkit from a checkout instead: clone its "
            "repository and run `pip install -e .` in it (with the extras you need, e.g. `.[vllm,ray,train,eval]`)"
        )
    raise MissingInputError(
        f"{path} is missing from the checkout; restore it with `git checkout -- {relative}`"
    )
