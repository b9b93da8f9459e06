"""Merge a LoRA adapter written by ``training/sft.py`` into its base model, for vLLM and transformers.

    python training/merge.py --adapter runs/qwen2_5_vl_7b_lora --out runs/qwen2_5_vl_7b_lora-merged
    vllm serve runs/qwen2_5_vl_7b_lora-merged

The output is a plain checkpoint folder: the merged weights (in the base
model's dtype), its config and generation config, and the processor saved with
the adapter (tokenizer, image processor with the training pixel budget, chat
template). The base model is the one named in ``adapter_config.json``, or
``--base`` (a hub id, a folder or a ``tiny:`` reference).

A wrong input (no adapter folder, a folder that holds no LoRA adapter) is printed
as one ``training/merge.py: error: ...`` line and the script exits 1; ``--debug``
or ``IMAGENET_THINK_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor

from common.model_refs import resolve_model
from imagenet_think_errors import DEBUG_ENV, DEBUG_FLAG, InputError, MissingInputError, run_reporting

ADAPTER_CONFIG = "adapter_config.json"
PROG = "training/merge.py"


def _require_folder(adapter: Path) -> None:
    if not adapter.is_dir():
        raise MissingInputError(f"--adapter {adapter}: no such folder; give the output_dir of a LoRA run")


def base_model_of(adapter: Path) -> str:
    """The base model recorded in the adapter's config."""
    _require_folder(adapter)
    config = adapter / ADAPTER_CONFIG
    if not config.is_file():
        raise MissingInputError(
            f"{config} not found: {adapter} is not a LoRA adapter (a full fine-tuning output is already a model)"
        )
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (json.JSONDecodeError, AttributeError) as error:
        raise InputError(f"{config} is not a PEFT adapter config: {error}") from error
    if not base:
        raise InputError(f"{config} names no base_model_name_or_path; pass the base model with --base")
    return base


def merge_adapter(adapter: str | Path, out: str | Path, base: str | None = None, dtype: str = "auto") -> Path:
    """Write the base model with the adapter merged in, and the adapter's processor, to ``out``."""
    adapter, out = Path(adapter), Path(out)
    _require_folder(adapter)
    base_path = resolve_model(base or base_model_of(adapter))
    model = AutoModelForImageTextToText.from_pretrained(base_path, dtype=dtype)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(out)
    AutoProcessor.from_pretrained(adapter).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", required=True, help="the output_dir of a LoRA run of training/sft.py")
    parser.add_argument("--out", required=True, help="folder to write the merged model to")
    parser.add_argument("--base", help="base model (default: the one in adapter_config.json)")
    parser.add_argument(
        "--dtype", default="auto", help="auto (the base checkpoint's), bfloat16, float32, ..."
    )
    parser.add_argument(
        DEBUG_FLAG, action="store_true", help=f"show the traceback of an error (or {DEBUG_ENV}=1)"
    )
    args = parser.parse_args(argv)

    def merge() -> int:
        out = merge_adapter(args.adapter, args.out, args.base, args.dtype)
        print(f"merged model written to {out}")
        return 0

    return run_reporting(PROG, merge, args.debug)


if __name__ == "__main__":
    sys.exit(main())
