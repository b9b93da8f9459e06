"""Tiny random-weight VLMs built locally, so tests and the demo run real engines with no hub.

``build_tiny_model("glm4v", out)`` writes a complete checkpoint folder (float32 safetensors,
tokenizer, processor, chat template, generation config) for one of :data:`ARCHS`: GLM-4.1V-Thinking
(``glm4v``), Qwen2-VL (``qwen2_vl``) or Qwen2.5-VL (``qwen2_5_vl``). A model has about 1.4 M
parameters, builds in seconds, is bit-identical for one seed, and transformers and vLLM load it like
the real one: a byte-level BPE tokenizer trained on the ImageNet-21K class lemmas and definitions
(with the family's special tokens and :data:`REASONING_TOKENS` as single tokens), the family's chat
template, and 4 to 16 image tokens an image.

Configs name these models ``tiny:<arch>`` or ``tiny:<arch>@seed=<n>``;
:func:`common.model_refs.resolve_model` turns such a reference into :func:`cached_tiny_model`'s
folder (``$IMAGENET_THINK_CACHE/tiny-models``, default ``~/.cache/imagenet_think``).
``imagenet-think tiny-model ARCH`` builds one into a folder of your choice.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

BUILD_VERSION = 2  # bump when a build changes, so caches rebuild
EXAMPLE = "imagenet-think tiny-model glm4v --out tiny-glm"
RULES = "the tiny models and where they are used: docs/development.md"

VOCAB_SIZE = 3000  # BPE merges and bytes, before the special and reasoning tokens
MAX_POSITIONS = 4096
TEXT_HIDDEN, TEXT_HEADS, VISION_HIDDEN = 128, 4, 64  # text head_dim 32: vLLM's CPU attention minimum
PATCH, MERGE, TEMPORAL_PATCH = 14, 2, 2
VISION_SIZES = {
    "depth": 2,
    "num_heads": 2,
    "patch_size": PATCH,
    "spatial_merge_size": MERGE,
    "temporal_patch_size": TEMPORAL_PATCH,
}
# mrope_section splits a head's rotary frequencies between time, height and width.
QWEN_ROPE = {"rope_theta": 1_000_000.0, "mrope_section": [4, 6, 6]}  # head_dim 32: 16 frequencies
GLM_ROPE = {"rope_theta": 10_000.0, "partial_rotary_factor": 0.5, "mrope_section": [2, 3, 3]}  # 8 frequencies
# An image becomes 2x2 to 4x4 merged patches: 4 to 16 image tokens.
MIN_PIXELS, MAX_PIXELS = (PATCH * MERGE * 2) ** 2, (PATCH * MERGE * 4) ** 2
REASONING_TOKENS = ("<think>", "</think>", "<answer>", "</answer>", "◁think▷", "◁/think▷")
_SEEDING = threading.Lock()  # weights come from torch's global generator: one seeded build at a time

# GLM-4.1V-Thinking: `[gMASK]<sop>`, then a `<|role|>` marker per turn; the
# generation prompt is `<|assistant|>\n`; assistant turns are kept verbatim.
GLM4V_CHAT_TEMPLATE = r"""[gMASK]<sop>
{%- for message in messages -%}
    {%- if message.role == 'system' -%}
        <|system|>{{ '\n' }}{{ message.content }}
    {%- elif message.role == 'user' -%}
        <|user|>{{ '\n' }}
        {%- if message.content is string -%}
            {{ message.content }}
        {%- else -%}
            {%- for part in message.content -%}
                {%- if part.type == 'video' or 'video' in part -%}
                    <|begin_of_video|><|video|><|end_of_video|>
                {%- elif part.type == 'image' or 'image' in part -%}
                    <|begin_of_image|><|image|><|end_of_image|>
                {%- elif part.type == 'text' -%}
                    {{ part.text }}
                {%- endif -%}
            {%- endfor -%}
        {%- endif -%}
    {%- elif message.role == 'assistant' -%}
        <|assistant|>{{ message.metadata or '' }}{{ '\n' }}
        {%- if message.content is string -%}
            {{ message.content }}
        {%- else -%}
            {%- for part in message.content if part.type == 'text' -%}{{ part.text }}{%- endfor -%}
        {%- endif -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    <|assistant|>{{ '\n' }}
{%- endif -%}
"""

# Qwen2-VL and Qwen2.5-VL: ChatML with a default system turn; an image is
# `<|vision_start|><|image_pad|><|vision_end|>`, numbered ("Picture 1: ") with add_vision_id.
QWEN2_VL_CHAT_TEMPLATE = r"""
{%- set counts = namespace(image=0, video=0) -%}
{%- for message in messages -%}
    {%- if loop.first and message.role != 'system' -%}
        <|im_start|>system{{ '\n' }}You are a helpful assistant.<|im_end|>{{ '\n' }}
    {%- endif -%}
    <|im_start|>{{ message.role }}{{ '\n' }}
    {%- if message.content is string -%}
        {{ message.content }}
    {%- else -%}
        {%- for part in message.content -%}
            {%- if part.type == 'image' or 'image' in part or 'image_url' in part -%}
                {%- set counts.image = counts.image + 1 -%}
                {%- if add_vision_id -%}{{ 'Picture ' ~ counts.image ~ ': ' }}{%- endif -%}
                <|vision_start|><|image_pad|><|vision_end|>
            {%- elif part.type == 'video' or 'video' in part -%}
                {%- set counts.video = counts.video + 1 -%}
                {%- if add_vision_id -%}{{ 'Video ' ~ counts.video ~ ': ' }}{%- endif -%}
                <|vision_start|><|video_pad|><|vision_end|>
            {%- elif 'text' in part -%}
                {{ part.text }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    <|im_end|>{{ '\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    <|im_start|>assistant{{ '\n' }}
{%- endif -%}
"""


def _text_config(tokenizer, rope_parameters: dict) -> dict:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 2 * TEXT_HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": TEXT_HEADS,
        "num_key_value_heads": 2,
        "max_position_embeddings": MAX_POSITIONS,
        "rope_parameters": {"rope_type": "default", **rope_parameters},
        "pad_token_id": tokenizer.pad_token_id,
    }


def _glm4v_config(tokenizer):
    from transformers import Glm4vConfig

    ids = tokenizer.convert_tokens_to_ids
    return Glm4vConfig(
        text_config=_text_config(tokenizer, GLM_ROPE),
        vision_config={
            **VISION_SIZES,
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": 2 * TEXT_HIDDEN,
            "out_hidden_size": TEXT_HIDDEN,
            "image_size": PATCH * MERGE * 4,  # the learned position grid, interpolated to other sizes
        },
        image_token_id=ids("<|image|>"),
        video_token_id=ids("<|video|>"),
        image_start_token_id=ids("<|begin_of_image|>"),
        image_end_token_id=ids("<|end_of_image|>"),
        video_start_token_id=ids("<|begin_of_video|>"),
        video_end_token_id=ids("<|end_of_video|>"),
    )


def _qwen_config(tokenizer, config_class: str, vision: dict):
    import transformers

    ids = tokenizer.convert_tokens_to_ids
    text = {
        **_text_config(tokenizer, QWEN_ROPE),
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
    }
    return getattr(transformers, config_class)(
        text_config=text,
        vision_config={**VISION_SIZES, **vision},
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


def _qwen2_vl_config(tokenizer):
    vision = {"embed_dim": VISION_HIDDEN, "hidden_size": TEXT_HIDDEN, "mlp_ratio": 2}
    return _qwen_config(tokenizer, "Qwen2VLConfig", vision)


def _qwen2_5_vl_config(tokenizer):
    vision = {
        "hidden_size": VISION_HIDDEN,
        "intermediate_size": 2 * VISION_HIDDEN,
        "out_hidden_size": TEXT_HIDDEN,
        "fullatt_block_indexes": [1],
    }
    return _qwen_config(tokenizer, "Qwen2_5_VLConfig", vision)


# fmt: off
GLM4V_SPECIAL_TOKENS = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
    "<|begin_of_video|>", "<|end_of_video|>", "<|image|>", "<|video|>", "<|begin_of_box|>", "<|end_of_box|>",
)
QWEN2_VL_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
# fmt: on


@dataclass(frozen=True)
class Family:
    """What one model family needs: classes, tokens, chat template and config."""

    model_class: str
    processor_class: str
    image_processor_class: str
    video_processor_class: str
    special_tokens: tuple[str, ...]
    eos_token: str
    pad_token: str
    stop_tokens: tuple[str, ...]  # generation_config.eos_token_id
    chat_template: str
    config: Callable
    temporal_pixels: int = 1  # GLM's resize budget counts the pixels of both frames of a temporal patch


GLM4V = Family(
    model_class="Glm4vForConditionalGeneration",
    processor_class="Glm4vProcessor",
    image_processor_class="Glm4vImageProcessor",
    video_processor_class="Glm4vVideoProcessor",
    special_tokens=GLM4V_SPECIAL_TOKENS,
    eos_token="<|endoftext|>",
    pad_token="<|endoftext|>",
    stop_tokens=("<|endoftext|>", "<|user|>", "<|observation|>"),
    chat_template=GLM4V_CHAT_TEMPLATE,
    config=_glm4v_config,
    temporal_pixels=TEMPORAL_PATCH,
)
QWEN2_VL = Family(
    model_class="Qwen2VLForConditionalGeneration",
    processor_class="Qwen2VLProcessor",
    image_processor_class="Qwen2VLImageProcessor",
    video_processor_class="Qwen2VLVideoProcessor",
    special_tokens=QWEN2_VL_SPECIAL_TOKENS,
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    chat_template=QWEN2_VL_CHAT_TEMPLATE,
    config=_qwen2_vl_config,
)
ARCHS: dict[str, Family] = {
    "glm4v": GLM4V,
    "qwen2_vl": QWEN2_VL,
    "qwen2_5_vl": replace(
        QWEN2_VL,
        model_class="Qwen2_5_VLForConditionalGeneration",
        processor_class="Qwen2_5_VLProcessor",
        config=_qwen2_5_vl_config,
    ),
}


def build_tiny_model(arch: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build the tiny ``arch`` model into ``out_dir`` and return it; one seed gives identical files."""
    import torch
    import transformers

    family = _family(arch)
    tokenizer = _tokenizer(family)
    with _SEEDING, torch.random.fork_rng():
        torch.manual_seed(seed)
        model = getattr(transformers, family.model_class)(family.config(tokenizer)).float()
    model.generation_config = transformers.GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids(list(family.stop_tokens)),
        pad_token_id=tokenizer.pad_token_id,
    )
    out = Path(out_dir)
    model.save_pretrained(out)
    _processor(family, tokenizer).save_pretrained(out)
    return out


def _family(arch: str) -> Family:
    try:
        return ARCHS[arch]
    except KeyError:
        raise ValueError(
            f"unknown tiny model architecture {arch!r}; expected one of {sorted(ARCHS)}"
        ) from None


def _tokenizer(family: Family):
    """A byte-level BPE trained on ImageNet class text, plus the family's and the reasoning tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    bpe.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in family.special_tokens]
    )
    bpe.add_tokens([AddedToken(token, special=False, normalized=False) for token in REASONING_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=family.eos_token,
        pad_token=family.pad_token,
        chat_template=family.chat_template,
        model_max_length=MAX_POSITIONS,
    )


def _corpus() -> Iterator[str]:
    """The lemmas and definitions of the ImageNet-21K-P classes, in class order."""
    from common.classes import imagenet21k_classes

    classes = imagenet21k_classes()
    for wnid in classes.wnids:
        yield f"{', '.join(classes.lemmas[wnid])}: {classes.definitions[wnid]}\n"


def _processor(family: Family, tokenizer):
    import transformers

    sizes = {
        "size": {
            "shortest_edge": MIN_PIXELS * family.temporal_pixels,
            "longest_edge": MAX_PIXELS * family.temporal_pixels,
        },
        "patch_size": PATCH,
        "temporal_patch_size": TEMPORAL_PATCH,
        "merge_size": MERGE,
    }
    return getattr(transformers, family.processor_class)(
        image_processor=getattr(transformers, family.image_processor_class)(**sizes),
        video_processor=getattr(transformers, family.video_processor_class)(**sizes),
        tokenizer=tokenizer,
        chat_template=family.chat_template,
    )


def cached_tiny_model(arch: str, seed: int = 0) -> Path:
    """The tiny ``arch`` model of ``seed`` in the cache, built there on first use."""
    _family(arch)
    folder = cache_dir() / "tiny-models" / f"{arch}-seed{seed}-v{BUILD_VERSION}"
    if not folder.is_dir():
        _build_once(arch, seed, folder)
    return folder


def cache_dir() -> Path:
    """``$IMAGENET_THINK_CACHE``, default ``~/.cache/imagenet_think``."""
    return Path(os.environ.get("IMAGENET_THINK_CACHE") or "~/.cache/imagenet_think").expanduser()


def _build_once(arch: str, seed: int, folder: Path) -> None:
    """Build in a temporary sibling folder and rename it: readers never see a half-written model."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build_tiny_model(arch, scratch, seed)
        scratch.rename(folder)
    except OSError:
        if not folder.is_dir():  # else a concurrent builder renamed its copy first
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def add_arguments(parser) -> None:
    parser.add_argument("arch", choices=sorted(ARCHS), help="model family")
    parser.add_argument("--out", type=Path, help="folder to write (default: tiny-<arch>)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")


def run(args) -> int:
    out = build_tiny_model(args.arch, args.out or Path(f"tiny-{args.arch}"), args.seed)
    print(f"tiny {args.arch} model (seed {args.seed}) written to {out}")
    return 0
