#!/bin/bash
# One node, several GPUs: one `imagenet-think generate` worker (one vLLM engine) per GPU, all
# writing into the same run folder. Rerun the same command to resume.
#
#   bash configs/launch/generate_one_node.sh configs/generation/glm41v_thinking.yaml manifest.parquet runs/glm
#
# For a model too large for one GPU set `engine.tensor_parallel_size` in its config and give each
# worker that many GPUs (GPUS_PER_WORKER=2).
set -euo pipefail
CONFIG=${1:?model config}
MANIFEST=${2:?image manifest}
OUT=${3:?run folder}
GPUS_PER_WORKER=${GPUS_PER_WORKER:-1}
NUM_GPUS=${NUM_GPUS:-$(nvidia-smi --list-gpus | wc -l)}
WORKERS=$((NUM_GPUS / GPUS_PER_WORKER))
mkdir -p "$OUT/logs"
for ((i = 0; i < WORKERS; i++)); do
    first=$((i * GPUS_PER_WORKER))
    devices=$(seq -s, "$first" $((first + GPUS_PER_WORKER - 1)))
    CUDA_VISIBLE_DEVICES=$devices imagenet-think generate --config "$CONFIG" --manifest "$MANIFEST" \
        --out "$OUT" --num-shards "$WORKERS" --shard-index "$i" > "$OUT/logs/worker-$i.log" 2>&1 &
done
wait
imagenet-think generate --config "$CONFIG" --manifest "$MANIFEST" --out "$OUT" --num-shards 1 --shard-index 0
