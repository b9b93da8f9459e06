#!/bin/bash
# One node, several GPUs: one `imagenet-think generate` worker (one vLLM engine) per GPU, all
# writing into the same run folder. Rerun the same command to resume.
#
#   bash configs/launch/generate_one_node.sh configs/generation/glm41v_thinking.yaml manifest.parquet runs/glm
#
# For a model too large for one GPU set `engine.tensor_parallel_size` in its config and give each
# worker that many GPUs (GPUS_PER_WORKER=2). A worker that fails is named with its exit status and
# log, and the script exits 1 after the others finish: the run stays resumable, rerun once fixed.
set -euo pipefail
CONFIG=${1:?model config}
MANIFEST=${2:?image manifest}
OUT=${3:?run folder}
GPUS_PER_WORKER=${GPUS_PER_WORKER:-1}
NUM_GPUS=${NUM_GPUS:-$(nvidia-smi --list-gpus | wc -l)}
WORKERS=$((NUM_GPUS / GPUS_PER_WORKER))
if ((WORKERS < 1)); then
    echo "generate_one_node.sh: $NUM_GPUS GPU(s) cannot hold a worker of $GPUS_PER_WORKER GPU(s)" >&2
    exit 2
fi
mkdir -p "$OUT/logs"
pids=()
for ((i = 0; i < WORKERS; i++)); do
    first=$((i * GPUS_PER_WORKER))
    devices=$(seq -s, "$first" $((first + GPUS_PER_WORKER - 1)))
    CUDA_VISIBLE_DEVICES=$devices imagenet-think generate --config "$CONFIG" --manifest "$MANIFEST" \
        --out "$OUT" --num-shards "$WORKERS" --shard-index "$i" > "$OUT/logs/worker-$i.log" 2>&1 &
    pids+=($!)
done
failed=0
for ((i = 0; i < WORKERS; i++)); do
    status=0
    wait "${pids[$i]}" || status=$?
    if ((status != 0)); then
        echo "generate_one_node.sh: worker $i (GPUs $((i * GPUS_PER_WORKER))+) exited with status $status; see $OUT/logs/worker-$i.log" >&2
        failed=$((failed + 1))
    fi
done
if ((failed > 0)); then
    echo "generate_one_node.sh: $failed of $WORKERS worker(s) failed; fix the cause and rerun the same command to resume" >&2
    exit 1
fi
# Every shard done: one pass over the whole run checks it and annotates anything left.
imagenet-think generate --config "$CONFIG" --manifest "$MANIFEST" --out "$OUT" --num-shards 1 --shard-index 0
