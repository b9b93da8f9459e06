"""Reading images the way the models see them, and the checks an image must pass to be sampled.

:func:`load_rgb` gives any image PIL can read as upright 8-bit RGB: EXIF orientation
applied, 16-bit greyscale scaled to 8 bits, CMYK converted, transparency (alpha or a
palette's transparent index) composited on white. :func:`check_image` tells whether
a file's bytes make an image worth sampling (paper, section 3.1) and gives its
upright size and perceptual hash (:mod:`generation.near_duplicates`); a failure raises
:class:`ImageRejected` with a reason code. :func:`file_phash` hashes a file the same way.
:func:`read_file` reads a file's bytes, refusing (never opening) anything that is not
a regular file: a FIFO would block the reader forever.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from generation.near_duplicates import phash

MIN_SIDE = 224
MAX_PIXELS = 89_478_485  # PIL's default Image.MAX_IMAGE_PIXELS
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class ImageRejected(Exception):
    """An image that fails a check: ``reason`` is a short code, ``detail`` explains it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed).

    Anything else raises :class:`ImageRejected` without being opened: ``missing_file``,
    ``broken_link``, ``symlink_loop``, ``not_a_file`` (a folder), ``special_file``
    (a FIFO, socket or device: opening one can block forever) or ``unreadable``. The
    file is opened non-blocking and checked again, in case it was swapped meanwhile.
    """
    try:
        not_regular(os.stat(path).st_mode)
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with open(descriptor, "rb") as file:
            not_regular(os.fstat(descriptor).st_mode)
            return file.read()
    except OSError as error:
        raise ImageRejected(*os_error_reason(error, path)) from None


def not_regular(mode: int) -> None:
    """Raise :class:`ImageRejected` (``not_a_file`` or ``special_file``) unless ``mode`` is a regular file's."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise ImageRejected("not_a_file", "a folder where an image file was expected; not read")
    kind = next((name for test, name in SPECIAL_FILES if test(mode)), f"a special file (mode {mode:o})")
    raise ImageRejected("special_file", f"{kind}, not a regular file; never opened")


def os_error_reason(error: OSError, path: str | os.PathLike) -> tuple[str, str]:
    """``(reason, detail)`` of an error statting or reading ``path``."""
    if error.errno == errno.ELOOP:
        return "symlink_loop", f"{path} is a symlink loop (too many levels of symbolic links); not read"
    if error.errno == errno.ENOENT and os.path.islink(path):
        return "broken_link", f"{path} is a symlink to {os.readlink(path)!r}, which does not exist"
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return "missing_file", f"no file {path}"
    if error.errno == errno.EISDIR:
        return "not_a_file", "a folder where an image file was expected; not read"
    return "unreadable", f"{type(error).__name__}: {error}"


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """The image at ``path``, upright, in 8-bit RGB (see :func:`normalize`)."""
    with Image.open(path) as image:
        return normalize(image)


def normalize(image: Image.Image) -> Image.Image:
    """``image`` with its EXIF orientation applied, in 8-bit RGB, transparency composited on white."""
    upright = ImageOps.exif_transpose(image)
    if upright.mode in SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(upright)
    if upright.mode in ALPHA_MODES or "transparency" in upright.info:
        return _composite_on_white(upright.convert("RGBA"))
    return upright.convert("RGB")


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Greyscale with 16-bit values (``I`` values are read as 16-bit too) scaled to 0-255."""
    values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
    return Image.fromarray(np.rint(values / 257).astype(np.uint8)).convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


PLAIN_FORMATS = {"JPEG", "PNG", "WEBP"}
EXIF_ORIENTATION = 0x0112


def is_plain_rgb(image: Image.Image) -> bool:
    """An RGB JPEG/PNG/WebP without EXIF rotation or a transparent colour: a release can store
    its bytes as they are (they decode to what :func:`normalize` gives the annotators)."""
    return (
        image.mode == "RGB"
        and image.format in PLAIN_FORMATS
        and "transparency" not in image.info
        and image.getexif().get(EXIF_ORIENTATION, 1) == 1
    )


class CheckedImage(NamedTuple):
    width: int  # upright
    height: int
    plain_rgb: bool  # is_plain_rgb
    phash: str  # generation.near_duplicates.phash of the upright RGB picture


def check_image(data: bytes, *, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS) -> CheckedImage:
    """The upright size of an image file's bytes that pass the sampling checks, whether it is
    :func:`is_plain_rgb`, and its perceptual hash (computed from the picture decoded for the checks).

    In order: the file is not empty; PIL recognizes it; its declared size is at most
    ``max_pixels`` and its shorter side at least ``min_side`` (both read from the
    header, before any pixel is decoded); it decodes to the end and converts to RGB.
    Raises :class:`ImageRejected` with reason ``empty_file``, ``not_an_image``,
    ``decompression_bomb``, ``too_small``, ``truncated_file`` or ``unreadable``. PIL refuses
    on its own any image over twice ``Image.MAX_IMAGE_PIXELS``; that is a
    ``decompression_bomb`` too.
    """
    if not data:
        raise ImageRejected("empty_file", "the file is empty (0 bytes)")
    with _failures_as_rejections(), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            _check_declared_size(image.size, min_side, max_pixels)
            plain = is_plain_rgb(image)
            image.load()
            upright = normalize(image)
            return CheckedImage(*upright.size, plain, phash(upright))


def file_phash(path: str | os.PathLike) -> str:
    """The perceptual hash of the image file at ``path``, as :func:`check_image` computes it; "" for
    a file that is missing, odd (never opened) or not a readable image."""
    try:
        with Image.open(io.BytesIO(read_file(path))) as image:
            return phash(normalize(image))
    except (ImageRejected, OSError, ValueError, Image.DecompressionBombError):
        return ""


def files_phash(paths: Sequence[str | os.PathLike], workers: int | None = None) -> list[str]:
    """:func:`file_phash` of each path, in order, over ``workers`` processes (default: the cores)."""
    workers = min(workers or os.cpu_count() or 1, max(1, len(paths) // 64))
    if workers <= 1:
        return [file_phash(path) for path in paths]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(file_phash, paths, chunksize=64))


def _check_declared_size(size: tuple[int, int], min_side: int, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageRejected(
            "decompression_bomb",
            f"declares {width}x{height} = {width * height:,} pixels, over the {max_pixels:,} limit; not decoded",
        )
    if min(width, height) < min_side:
        raise ImageRejected("too_small", f"{width}x{height}: the shorter side is under {min_side} px")


@contextmanager
def _failures_as_rejections() -> Iterator[None]:
    """Turn whatever PIL raises on a bad file into an :class:`ImageRejected`."""
    try:
        yield
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", "PIL recognizes no image format in the file") from None
    except Image.DecompressionBombError as error:
        raise ImageRejected("decompression_bomb", f"{error}; not decoded") from None
    except Exception as error:
        reason = "truncated_file" if "truncated" in str(error).lower() else "unreadable"
        raise ImageRejected(reason, f"{type(error).__name__}: {error}") from None
