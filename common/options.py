"""A command's options declared once: a dataclass whose fields carry name, type, default and help.

``option(default, help=...)`` declares a field; :func:`add_options` turns the fields into
``argparse`` arguments (``--field-name`` or the field's ``flag``, plus any ``aliases``; a field
without a default is required; a ``bool`` is a switch, whose flag turns a True default off) and
:func:`parse_options` reads them back into the dataclass, which the library function takes. The
flags derive from the field names as :class:`transformers.HfArgumentParser` (the training
recipes' parser) derives them, without importing transformers, so that ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields

_TYPES = {"str": str, "int": int, "float": float}


def option(
    default=MISSING,
    *,
    help: str | None = None,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    **argparse_kwargs,
) -> Field:
    """A dataclass field that is also a command-line option: ``flag`` (default ``--field-name``)
    and its ``aliases``; ``argparse_kwargs``: ``choices``, ``nargs``, ``type``, ``metavar``, ..."""
    metadata = {"help": help, "flag": flag, "aliases": aliases, "argparse": argparse_kwargs}
    if isinstance(default, list | dict | set):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def add_options(parser: argparse.ArgumentParser, cls) -> None:
    """An argument of ``parser`` for each field of the dataclass ``cls``."""
    for spec in fields(cls):
        kwargs = {"dest": spec.name, "help": spec.metadata.get("help"), **spec.metadata.get("argparse", {})}
        flag = spec.metadata.get("flag") or f"--{spec.name.replace('_', '-')}"
        flags = [flag, *spec.metadata.get("aliases", ())]
        if spec.default is MISSING and spec.default_factory is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = spec.default if spec.default is not MISSING else spec.default_factory()
        if spec.type == "bool" and "default" in kwargs:  # a switch: --flag sets True, --no-flag False
            kwargs["action"] = "store_false" if kwargs["default"] else "store_true"
        elif "type" not in kwargs and "nargs" not in kwargs:
            base = spec.type.removesuffix(" | None")
            if base in _TYPES:
                kwargs["type"] = _TYPES[base]
        parser.add_argument(*flags, **kwargs)


def parse_options(args: argparse.Namespace, cls):
    """The dataclass ``cls`` from parsed arguments (:func:`add_options`)."""
    return cls(**{spec.name: getattr(args, spec.name) for spec in fields(cls)})
