#!/usr/bin/env bash
# Reproduce the shipped domain adapter (adapters/smollm2-135m-imhi-counselchat):
# prepare IMHI + CounselChat, LoRA SFT on the embedded SmolLM2-135M-Instruct, then evaluate
# base vs adapter on IMHI. Needs a CUDA GPU for a run of minutes (CPU works, but takes hours).
#   scripts/train_domain_adapter.sh [SHARED_DATA_DIR] [WORK_DIR] [extra `domain train` args]
# Env: PHYASSIST (command to run, default "python -m phyassist_tui"; use the engine modules on
# a host without textual: PHYASSIST_ENGINE=1), EVAL_LIMIT (rows per task, default 300),
# EVAL_BATCH (default 64).
set -euo pipefail
DATA=${1:-../shared/data}
WORK=${2:-build/domain}
shift $(( $# > 2 ? 2 : $# )) || true
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -n "${PHYASSIST_ENGINE:-}" ]; then
  prepare=(python -m engine.dataprep); train=(python -m engine.domain_train)
  evaluate=(python -m engine.evaluation)
else
  prepare=(python -m phyassist_tui data prepare); train=(python -m phyassist_tui domain train)
  evaluate=(python -m phyassist_tui eval imhi)
fi
"${prepare[@]}" --imhi "$DATA/imhi" --counselchat "$DATA/counsel_chat/counsel_chat.csv" \
  --out "$WORK/data"
"${train[@]}" --data "$WORK/data" --out "$WORK/run" --no-4bit "$@"
"${evaluate[@]}" --data "$DATA/imhi" --adapter "$WORK/run/adapter" --compare-base \
  --limit "${EVAL_LIMIT:-300}" --batch-size "${EVAL_BATCH:-64}" --out "$WORK/eval"
