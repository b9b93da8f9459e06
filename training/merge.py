"""Merge a LoRA adapter written by ``training/sft.py`` into its base model, for vLLM and transformers.

    python training/merge.py --adapter runs/qwen2_5_vl_7b_lora --out runs/qwen2_5_vl_7b_lora-merged
    vllm serve runs/qwen2_5_vl_7b_lora-merged

The output is a plain checkpoint folder: the merged weights (in the base
model's dtype), its config and generation config, and the processor saved with
the adapter (tokenizer, image processor with the training pixel budget, chat
template). The base model is the one named in ``adapter_config.json``, or
``--base`` (a hub id, a folder or a ``tiny:`` reference).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor

from generation.tiny_models import resolve_model

ADAPTER_CONFIG = "adapter_config.json"


def base_model_of(adapter: Path) -> str:
    """The base model recorded in the adapter's config."""
    config = adapter / ADAPTER_CONFIG
    if not config.is_file():
        raise FileNotFoundError(
            f"{config} not found: {adapter} is not a LoRA adapter (a full fine-tuning output is already a model)"
        )
    return json.loads(config.read_text(encoding="utf-8"))["base_model_name_or_path"]


def merge_adapter(adapter: str | Path, out: str | Path, base: str | None = None, dtype: str = "auto") -> Path:
    """Write the base model with the adapter merged in, and the adapter's processor, to ``out``."""
    adapter, out = Path(adapter), Path(out)
    base_path = resolve_model(base or base_model_of(adapter))
    model = AutoModelForImageTextToText.from_pretrained(base_path, dtype=dtype)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(out)
    AutoProcessor.from_pretrained(adapter).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", required=True, help="the output_dir of a LoRA run of training/sft.py")
    parser.add_argument("--out", required=True, help="folder to write the merged model to")
    parser.add_argument("--base", help="base model (default: the one in adapter_config.json)")
    parser.add_argument(
        "--dtype", default="auto", help="auto (the base checkpoint's), bfloat16, float32, ..."
    )
    args = parser.parse_args(argv)
    out = merge_adapter(args.adapter, args.out, args.base, args.dtype)
    print(f"merged model written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
