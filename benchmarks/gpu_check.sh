#!/bin/bash
# The first GPU check, one call on a GPU machine: SFT LoRA steps of Qwen2.5-VL-3B (step time, tokens/s,
# peak memory, MFU), two GRPO steps with transformers' generation, and BERTScore / Sentence-BERT pairs/s,
# on random-weight models of the real sizes built offline from their configs (benchmarks/gpu_check.py).
# It needs torch, transformers and peft only (no vLLM, TRL or datasets) and takes about 5 minutes on one
# H100; it stops at LIMIT seconds (default 480). Copy the table into benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu_check.sh                       # real sizes, on the GPU
#   SIZE=tiny bash benchmarks/gpu_check.sh             # the same code on tiny models, on a CPU (the tests)
#
# The figures are also written as JSON to $JSON (default: $OUT/gpu_check.json where OUT is an output
# folder, else ./gpu_check.json).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-real}
PYTHON=${PYTHON:-python}
LIMIT=${LIMIT:-480}
JSON=${JSON:-${OUT:-.}/gpu_check.json}
if [[ $SIZE == real ]]; then
    if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; then
        echo "gpu_check.sh: no GPU here (nvidia-smi failed); SIZE=tiny runs the same code on a CPU" >&2
        exit 2
    fi
fi
"$PYTHON" -c "import torch, transformers, peft; print('torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__, '| cuda', torch.cuda.is_available())"
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" timeout "$LIMIT" "$PYTHON" -m benchmarks.gpu_check --size "$SIZE" --out "$JSON"
