"""The memory a run needs on one GPU, from the model's config: an estimate to book the right GPU with.

:func:`model_shape` instantiates the model on PyTorch's ``meta`` device (no weights, no memory) to
count its parameters exactly and to find the linear layers LoRA would adapt; the KV cache per token
comes from the text config (grouped-query attention, or the latent cache of DeepSeek-V2-style MLA,
which Kimi-VL uses). :func:`generation_plan` is vLLM's budget: weights, a working reserve, and the KV
cache left for ``max_model_len``-token sequences. :func:`training_plan` adds up weights, trainable
states (LoRA or full with Adam), the logits of a micro-batch and the activations (checkpointed or
not), plus vLLM's share when GRPO colocates it. The activation and logits terms follow the usual
transformer accounting (about 34 bytes per token and hidden unit per layer without checkpointing)
and are meant to be right within tens of percent, not to the byte.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}
VLLM_RESERVE_GIB = 2.0  # vLLM's non-KV working memory: activations of a step, CUDA graphs, sampler
VISION_NAMES = ("visual", "vision")  # module names of vision towers (LoRA adapts the language model only)
ADAM_STATE_BYTES = 16  # per trainable parameter: fp32 master weight, gradient, Adam's two moments
ACTIVATION_BYTES = 34  # per token x hidden unit x layer, bf16, no checkpointing (Korthikanti et al. 2022)
CHECKPOINT_BYTES = 2  # per token x hidden unit x layer: the layer input kept by gradient checkpointing
# Per token x vocabulary entry of a micro-batch's logits: SFT's loss (transformers) upcasts the bf16 logits
# to fp32; TRL's GRPO takes log-probabilities a row at a time, so bf16 logits and their gradient.
SFT_LOGIT_BYTES = 6
GRPO_LOGIT_BYTES = 4


@dataclass(frozen=True)
class ModelShape:
    """What the memory of a model depends on."""

    parameters: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    kv_values_per_token: int  # KV cache elements per token, all layers
    linears: dict[str, tuple[int, int]]  # language-model linear layers: name -> (in, out) features


def _text_config(config):
    getter = getattr(config, "get_text_config", None)
    return getter() if getter else config


def kv_values_per_token(config) -> int:
    """KV cache elements per token over all layers: MLA's latent (``kv_lora_rank`` +
    ``qk_rope_head_dim``) or ``2 x kv_heads x head_dim`` per layer."""
    text = _text_config(config)
    layers = text.num_hidden_layers
    if getattr(text, "kv_lora_rank", None):
        return layers * (text.kv_lora_rank + text.qk_rope_head_dim)
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return layers * 2 * kv_heads * head_dim


def model_shape(config, trust_remote_code: bool = False) -> ModelShape:
    """Count the parameters of ``config``'s model on the meta device (nothing is allocated)."""
    import torch
    from torch import nn
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

    model, errors = None, []
    for auto in (AutoModelForImageTextToText, AutoModelForCausalLM, AutoModel):
        try:
            with torch.device("meta"):
                model = auto.from_config(config, trust_remote_code=trust_remote_code)
            break
        except (ValueError, KeyError, ImportError, TypeError) as error:
            errors.append(f"{auto.__name__}: {error}")
    if model is None:
        raise ValueError("no transformers class builds this config (" + "; ".join(errors)[:400] + ")")
    linears = {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not any(part in name for part in VISION_NAMES)
    }
    text = _text_config(config)
    return ModelShape(
        parameters=sum(p.numel() for p in model.parameters()),
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
        vocab=text.vocab_size,
        kv_values_per_token=kv_values_per_token(config),
        linears=linears,
    )


def dtype_bytes(name: str | None, default: int = 2) -> int:
    return DTYPE_BYTES.get(str(name).removeprefix("torch."), default) if name else default


@dataclass(frozen=True)
class GenerationPlan:
    weights_gib: float
    kv_budget_gib: float  # what is left for the KV cache on one GPU
    kv_bytes_per_token: float
    capacity_tokens: int  # KV cache tokens that fit
    full_sequences: int  # max_model_len-token sequences that fit at once


def generation_plan(
    shape: ModelShape,
    gpu_gib: float,
    utilization: float,
    dtype: int,
    tensor_parallel: int,
    max_model_len: int,
) -> GenerationPlan:
    """vLLM's memory on one of ``tensor_parallel`` GPUs: weights, then the KV cache in what is left of
    ``utilization`` x ``gpu_gib`` after :data:`VLLM_RESERVE_GIB`."""
    weights = shape.parameters * dtype / tensor_parallel / GIB
    budget = gpu_gib * utilization - weights - VLLM_RESERVE_GIB
    per_token = shape.kv_values_per_token * dtype / tensor_parallel
    capacity = max(0, int(budget * GIB / per_token)) if per_token else 0
    return GenerationPlan(weights, budget, per_token, capacity, capacity // max(1, max_model_len))


def lora_parameters(shape: ModelShape, rank: int, targets: list[str] | tuple[str, ...]) -> int:
    """Parameters LoRA of ``rank`` adds to the language model's linears named in ``targets``."""
    wanted = set(targets)
    return sum(
        rank * (fan_in + fan_out)
        for name, (fan_in, fan_out) in shape.linears.items()
        if name.rsplit(".", 1)[-1] in wanted
    )


@dataclass(frozen=True)
class TrainingPlan:
    parts: dict[str, float]  # GiB on one GPU, by what holds it

    @property
    def total_gib(self) -> float:
        return sum(self.parts.values())


def training_plan(
    shape: ModelShape,
    *,
    dtype: int,
    micro_batch: int,
    sequence: int,
    loss_tokens: int,
    checkpointing: bool,
    lora: int | None,
    logit_bytes: int = SFT_LOGIT_BYTES,
    gpus: int = 1,
    vllm_gib: float = 0.0,
) -> TrainingPlan:
    """One GPU's memory for a training step: ``sequence`` tokens per example, ``loss_tokens`` of them
    with logits, ``micro_batch`` examples; ``lora`` trainable parameters (None: all, their states
    sharded over ``gpus`` as ZeRO-3 does); ``vllm_gib`` for a colocated vLLM."""
    tokens = micro_batch * sequence
    trainable = shape.parameters if lora is None else lora
    shards = gpus if lora is None else 1
    per_layer = CHECKPOINT_BYTES if checkpointing else ACTIVATION_BYTES
    activations = shape.layers * tokens * shape.hidden * per_layer
    if checkpointing:  # the layer being recomputed holds its full activations
        activations += tokens * shape.hidden * ACTIVATION_BYTES
    parts = {
        "weights": shape.parameters * dtype / shards / GIB,
        "trainable states": trainable * ADAM_STATE_BYTES / shards / GIB,
        "activations": activations / GIB,
        "logits": micro_batch * loss_tokens * shape.vocab * logit_bytes / GIB,
    }
    if vllm_gib:
        parts["vLLM (colocated)"] = vllm_gib
    return TrainingPlan(parts)
