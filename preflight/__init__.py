"""``imagenet-think preflight``: what a GPU run would hit, found on a login node before GPUs are booked.

It reads a generation or baseline config (``configs/generation/``, ``configs/models/``) or a training
recipe (``configs/sft/``, ``configs/grpo/``), loads the model's config, tokenizer and processor as the
run will (remote code included, through :mod:`common.remote_code_compat`), renders one prompt with one
image through the model's own chat template and processor, and checks what would stop the run:
prompt and output tokens against the context length, the parser's markers through the tokenizer,
unpinned remote code, and a memory plan against the GPU's memory. :mod:`preflight.checks` holds the
checks, :mod:`preflight.memory` the memory arithmetic, :mod:`preflight.cli` the command.
"""
