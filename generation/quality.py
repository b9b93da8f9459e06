"""Why a generation record is kept out of a release's default configs.

A record is rejected when its think was never closed, the generation hit its
token limit, the answer is empty, or the text is caught in a repetition loop
(the paper's 196,388-token maximum is surely one). Releases keep rejected
records reachable, with their reason, in the ``rejected`` config.
"""

from __future__ import annotations

import zlib

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
    # build (rejection_reason below, imagenet_think.judge_records)
    "truncated": "generation stopped at max_tokens (finish_reason=length)",
    "think_not_closed": "the reasoning delimiter was never closed",
    "empty_answer": "no answer after the reasoning",
    "repetition_loop": "the text degenerates into a repetition loop",
    "duplicate_record": "a second record for the same image and annotator",
    "image_not_in_manifest": "the record's image is not in the manifest",
}

LOOP_WINDOW_CHARS = 4000
LOOP_MIN_CHARS = 1000
LOOP_MAX_COMPRESSION = 0.10
LOOP_ZLIB_LEVEL = 1


def is_repetition_loop(text: str) -> bool:
    """True when ``text`` ends caught in a repetition loop.

    The last 4,000 characters (the whole text if shorter, from 1,000 up) are
    compressed with zlib: a loop shrinks below 10% of its size, while English
    prose, reasoning included, stays around 40–60%. Level 1 is twice as fast as
    the default and moves the boundary little (a 700-character period repeated
    compresses to 9.7% instead of 9.1%).
    """
    window = text[-LOOP_WINDOW_CHARS:].encode("utf-8")
    return len(window) >= LOOP_MIN_CHARS and len(
        zlib.compress(window, LOOP_ZLIB_LEVEL)
    ) < LOOP_MAX_COMPRESSION * len(window)


def rejection_reason(think_closed: bool, finish_reason: str, think: str, answer: str) -> str | None:
    """The reason code a record is kept out of the default configs, or None if it is good."""
    if finish_reason == "length":
        return "truncated"
    if not think_closed:
        return "think_not_closed"
    if not answer.strip():
        return "empty_answer"
    if is_repetition_loop(think) or is_repetition_loop(answer):
        return "repetition_loop"
    return None
