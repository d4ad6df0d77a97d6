#!/usr/bin/env bash
# Reproduce the shipped domain adapter (adapters/smollm2-135m-imhi-counselchat): prepare IMHI +
# CounselChat, LoRA SFT on the embedded SmolLM2-135M-Instruct, evaluate base vs adapter on IMHI,
# then (SHIP=1) copy it to adapters/ with its card. Needs a CUDA GPU for a run of minutes (the
# shipped run: one H100, 361 s of training; CPU works, but takes many hours).
#   scripts/train_domain_adapter.sh [SHARED_DATA_DIR] [WORK_DIR] [extra `domain train` args]
# The `phyassist` commands used here import no textual: a headless GPU host needs only the
# engine's dependencies. With several GPUs `domain train` relaunches itself under accelerate.
# Env: TIME_BUDGET (training seconds, default 360 as shipped; on other hardware pass
# `--max-steps 614` for the shipped step count), EVAL_LIMIT (rows per task, default 400),
# EVAL_BATCH (default 200), SHIP=1 (write adapters/...).
set -euo pipefail
DATA=${1:-../shared/data}
WORK=${2:-build/domain}
shift $(( $# > 2 ? 2 : $# )) || true
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
phyassist=(python -m phyassist_tui)
prepare=("${phyassist[@]}" data prepare); train=("${phyassist[@]}" domain train)
evaluate=("${phyassist[@]}" eval imhi); ship=("${phyassist[@]}" domain ship)
"${prepare[@]}" --imhi "$DATA/imhi" --counselchat "$DATA/counsel_chat/counsel_chat.csv" \
  --out "$WORK/data"
"${train[@]}" --data "$WORK/data" --out "$WORK/run" --no-4bit --no-resume --epochs 3 \
  --batch-size 32 --grad-accum 1 --lr 2e-4 --max-length 1024 --lora-r 16 --lora-alpha 32 \
  --no-gradient-checkpointing --logging-steps 50 --save-steps 100000 \
  --time-budget "${TIME_BUDGET:-360}" "$@"
"${evaluate[@]}" --data "$DATA/imhi" --adapter "$WORK/run/adapter" --compare-base \
  --limit "${EVAL_LIMIT:-400}" --batch-size "${EVAL_BATCH:-200}" --max-new-tokens 256 \
  --out "$WORK/eval"
if [ -n "${SHIP:-}" ]; then
  "${ship[@]}" --run "$WORK/run" --eval "$WORK/eval" --data "$WORK/data" \
    --dest adapters/smollm2-135m-imhi-counselchat --bf16
fi
