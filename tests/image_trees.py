"""A small synthetic ImageNet-21K-P tree, with the bad and odd files sampling must handle.

:func:`write_image_tree` writes ``root/[split/]<wnid>/<wnid>_<name>.<ext>`` and returns
every file it wrote with its expected outcome when all candidates are checked (no
per-class maximum, no budget): a reject reason, or the upright size of a good image.
:func:`write_odd_entries` adds the directory entries that are not image files at all
(non-UTF-8 names, symlink loops, FIFOs, sockets, ...).
"""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

TREE_WNIDS = ("n01530575", "n01531178", "n01532829")  # brambling, goldfinch, house finch
UNKNOWN_WNID = "n99999999"  # not an ImageNet-21K-P class

RED = (220, 30, 30)
BLUE = (30, 30, 220)


@dataclass(frozen=True)
class TreeFile:
    path: str  # relative to the tree's root, with forward slashes
    wnid: str
    kind: str  # good, cmyk, gray16, palette, exif6, gray, empty, truncated, text, small, bomb, duplicate
    reason: str = ""  # the expected reject reason; empty for a good image
    size: tuple[int, int] = (0, 0)  # (width, height) after EXIF rotation, for a good image


@dataclass(frozen=True)
class ImageTree:
    root: Path
    files: tuple[TreeFile, ...]
    unknown_folders: tuple[str, ...]  # class folders to be rejected as unknown_class

    def good(self) -> list[TreeFile]:
        return [file for file in self.files if not file.reason]

    def bad(self) -> list[TreeFile]:
        return [file for file in self.files if file.reason]

    def by_kind(self, kind: str) -> TreeFile:
        return next(file for file in self.files if file.kind == kind)


def write_image_tree(
    root: str | Path,
    good_per_class: int | dict[str, int] = 4,
    *,
    split: str = "",
    odd_files: bool = True,
    unknown_class: bool = False,
    first_index: int = 0,
) -> ImageTree:
    """Write the tree under ``root`` (under ``root/split`` when given).

    ``good_per_class``: plain good images per class of :data:`TREE_WNIDS` (or a dict by
    wnid). ``odd_files``: add to the first class the good-but-odd images (CMYK, 16-bit,
    palette with transparency, EXIF-rotated, greyscale) and the bad ones (empty,
    truncated, text, too small, decompression bomb), and to the second class an exact
    copy of the first plain image. ``unknown_class``: add a folder
    :data:`UNKNOWN_WNID` of good images. ``first_index`` numbers the plain images
    (and seeds their pixels), so that two calls can write distinct images.
    """
    writer = _Writer(Path(root), split)
    counts = good_per_class if isinstance(good_per_class, dict) else dict.fromkeys(TREE_WNIDS, good_per_class)
    files = [
        writer.image(wnid, f"{index:05d}.JPEG", "good", _gradient(index, wnid))
        for wnid, count in counts.items()
        for index in range(first_index, first_index + count)
    ]
    if odd_files:
        files += _write_odd_files(writer, original=files[0])
    unknown: tuple[str, ...] = ()
    if unknown_class:
        unknown_images = [
            writer.image(UNKNOWN_WNID, f"{i:05d}.JPEG", "good", _gradient(i, UNKNOWN_WNID)) for i in (0, 1)
        ]
        unknown = (str(PurePosixPath(unknown_images[0].path).parent),)
    return ImageTree(Path(root), tuple(files), unknown)


@dataclass(frozen=True)
class _Writer:
    root: Path
    split: str

    def image(self, wnid: str, name: str, kind: str, image: Image.Image, reason: str = "") -> TreeFile:
        """Save ``image`` as ``<wnid>_<name>``, in the format its extension names."""
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        data = _encode(image, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
        return self.raw(wnid, name, kind, data, reason, size=(0, 0) if reason else image.size)

    def raw(
        self, wnid: str, name: str, kind: str, data: bytes, reason: str = "", size: tuple[int, int] = (0, 0)
    ) -> TreeFile:
        relative = "/".join(part for part in (self.split, wnid, f"{wnid}_{name}") if part)
        (self.root / relative).parent.mkdir(parents=True, exist_ok=True)
        (self.root / relative).write_bytes(data)
        return TreeFile(relative, wnid, kind, reason, size)


def _write_odd_files(writer: _Writer, original: TreeFile) -> list[TreeFile]:
    first, second = TREE_WNIDS[0], TREE_WNIDS[1]
    whole = _encode(_gradient(7, "odd"), "JPEG")
    return [
        writer.image(first, "cmyk.JPEG", "cmyk", Image.new("RGB", (260, 230), RED).convert("CMYK")),
        writer.image(first, "gray16.png", "gray16", _mid_grey_16bit()),
        writer.image(first, "palette.png", "palette", _transparent_palette()),
        writer.raw(first, "exif6.JPEG", "exif6", _exif_rotated_jpeg(), size=(240, 320)),
        writer.image(first, "gray.JPEG", "gray", _gradient(8, "odd").convert("L")),
        writer.raw(first, "empty.JPEG", "empty", b"", "empty_file"),
        writer.raw(first, "truncated.JPEG", "truncated", whole[: len(whole) // 2], "truncated"),
        writer.raw(first, "text.JPEG", "text", b"this is not an image\n", "not_an_image"),
        writer.image(first, "small.JPEG", "small", _gradient(9, "odd").resize((300, 200)), "too_small"),
        writer.raw(first, "bomb.png", "bomb", png_declaring(12_000, 12_000), "decompression_bomb"),
        writer.raw(second, "copy.JPEG", "duplicate", (writer.root / original.path).read_bytes(), "duplicate"),
    ]


@dataclass(frozen=True)
class OddEntries:
    rejected: dict[str, str]  # the image_path a reject row shows (bad bytes written \\xNN) -> its reason
    kept: tuple[TreeFile, ...]  # good images reached through a symlink


def write_odd_entries(root: str | Path, outside: str | Path, wnid: str = TREE_WNIDS[0]) -> OddEntries:
    """Add to the class folder ``root/<wnid>`` one of each odd entry, and to ``root`` a loose image
    and a folder whose name is not UTF-8; return what sampling must reject and keep.

    In the class folder: a good JPEG whose name is not valid UTF-8 (``undecodable_name``), a
    symlink to itself (``symlink_loop``), a symlink to nothing (``broken_link``), a FIFO and
    a Unix socket (``special_file``), a folder holding a good image (``not_a_file``), and a
    symlink to a good image written in ``outside``, a folder out of the sampled tree (kept).
    In ``root``: a good image outside any class folder (``not_in_a_class_folder``) and a
    class-like folder whose name is not UTF-8 (``undecodable_name``).
    """
    root = Path(root)
    folder = root / wnid
    folder.mkdir(parents=True, exist_ok=True)
    rejected = {}

    def image(index: int) -> bytes:
        return _encode(_gradient(index, "odd entry"), "JPEG")

    def expect(name: str, reason: str, parent: Path = folder) -> Path:
        rejected[(parent / name).relative_to(root).as_posix()] = reason
        return parent / name

    bad_name = os.fsencode(folder) + b"/" + wnid.encode() + b"_bad\xff.JPEG"
    Path(os.fsdecode(bad_name)).write_bytes(image(1))
    rejected[f"{wnid}/{wnid}_bad\\xff.JPEG"] = "undecodable_name"
    loop = expect(f"{wnid}_loop.JPEG", "symlink_loop")
    loop.symlink_to(loop.name)
    expect(f"{wnid}_dangling.JPEG", "broken_link").symlink_to("nowhere.JPEG")
    os.mkfifo(expect(f"{wnid}_fifo.JPEG", "special_file"))
    _make_socket(expect(f"{wnid}_socket.JPEG", "special_file"))
    subfolder = expect(f"{wnid}_more", "not_a_file")
    subfolder.mkdir()
    (subfolder / f"{wnid}_inner.JPEG").write_bytes(image(2))
    target = _Writer(Path(outside), "").image(wnid, "linked.JPEG", "good", _gradient(3, "odd entry"))
    link = folder / f"{wnid}_linked.JPEG"
    link.symlink_to(Path(outside) / target.path)
    kept = TreeFile(link.relative_to(root).as_posix(), wnid, "linked", size=target.size)

    expect("loose.JPEG", "not_in_a_class_folder", root).write_bytes(image(4))
    bad_folder = os.fsencode(root) + b"/n0\xff"
    os.mkdir(bad_folder)
    Path(os.fsdecode(bad_folder + b"/n0_00000.JPEG")).write_bytes(image(5))
    rejected["n0\\xff"] = "undecodable_name"
    return OddEntries(rejected, (kept,))


def _make_socket(path: Path) -> None:
    """A Unix socket file at ``path`` (bound from its folder: socket paths are limited to ~107 bytes)."""
    here = os.getcwd()
    os.chdir(path.parent)
    try:
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(path.name)
    finally:
        os.chdir(here)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` RGB pixels (its data is far shorter)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4))
        + chunk(b"IEND", b"")
    )


def _gradient(index: int, salt: str) -> Image.Image:
    """A smooth RGB image, 224-320 px a side, different for each (index, salt)."""
    rng = np.random.default_rng([index, *salt.encode()])
    width, height = (int(side) for side in rng.integers(224, 321, size=2))
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    channels = [rng.uniform(0, 255) * x + rng.uniform(0, 255) * y for _ in range(3)]
    noise = rng.normal(0, 4, size=(height, width, 3))
    return Image.fromarray(np.clip(np.dstack(channels) / 2 + noise + 40, 0, 255).astype(np.uint8))


def _mid_grey_16bit() -> Image.Image:
    return Image.fromarray(np.full((240, 256), 0x8080, dtype=np.uint16))  # 32896 = 128 * 257


def _transparent_palette() -> Image.Image:
    """Left half palette index 0 (transparent), right half index 1 (red)."""
    image = Image.new("P", (256, 240), 0)
    image.putpalette([0, 0, 0, *RED])
    image.paste(1, (128, 0, 256, 240))
    image.info["transparency"] = 0
    return image


def _exif_rotated_jpeg() -> bytes:
    """Stored 320x240, top half red, bottom half blue, EXIF orientation 6: upright 240x320, red on the right."""
    stored = Image.new("RGB", (320, 240), BLUE)
    stored.paste(RED, (0, 0, 320, 120))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(stored, "JPEG", exif=exif.tobytes())


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
