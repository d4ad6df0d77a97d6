#!/usr/bin/env bash
# Reproduce the domain adapter: prepare IMHI + CounselChat (+ the draft-format rows), LoRA SFT
# on the embedded SmolLM2-135M-Instruct, evaluate base vs adapter on IMHI (held-out and
# trained tasks side by side), then (SHIP=1) copy it to adapters/ with its card.
#   scripts/train_domain_adapter.sh [SHARED_DATA_DIR] [WORK_DIR] [extra `domain train` args]
# Needs a CUDA GPU for a run of minutes (one H100: ~6 min of training); CPU works for a smoke
# test (STAGES=prepare,train,eval with `--max-steps 2` and EVAL_LIMIT=2).
#
# Env:
#   FORMAT=drafts (default) the product's draft format (engine.dataprep.drafts) mixed with the
#          IMHI instructions; FORMAT=qa the earlier recipe (IMHI + CounselChat in their own form)
#   HOLD_OUT   IMHI tasks left out of training (default MultiWD; loneliness has no train file)
#   STAGES     comma list of prepare,bundle,train,eval,ship (default prepare,train,eval; ship
#              also when SHIP=1). `bundle` writes WORK/gpu_bundle.tar.gz: the prepared rows
#              (rows.jsonl.gz) and the IMHI test CSVs, all a GPU host needs besides the model.
#   TIME_BUDGET (training seconds, default 420), EVAL_LIMIT (rows per task, default 400),
#   EVAL_BATCH (default 200), EVAL_MAX_NEW (default 256), DEVICE (auto), DEST (adapters/smollm2-135m-drafts)
# On a GPU host without ../shared: tar xzf gpu_bundle.tar.gz -C WORK, then
#   STAGES=train,eval scripts/train_domain_adapter.sh WORK/shared WORK
set -euo pipefail
DATA=${1:-../shared/data}
WORK=${2:-build/domain}
shift $(( $# > 2 ? 2 : $# )) || true
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
FORMAT=${FORMAT:-drafts}
HOLD_OUT=${HOLD_OUT:-MultiWD}
STAGES=${STAGES:-prepare,train,eval${SHIP:+,ship}}
DEST=${DEST:-adapters/smollm2-135m-drafts}
DEVICE=${DEVICE:-auto}
phyassist=(python -m phyassist_tui)
has() { [[ ",$STAGES," == *",$1,"* ]]; }

if has prepare; then
  extra=()
  if [ "$FORMAT" = drafts ]; then
    extra=(--drafts --no-counselchat-qa --zh-cases data/training/drafts_zh.json
      --seed-case "$DATA/cases/seed_case_zh.json")
  fi
  "${phyassist[@]}" data prepare --imhi "$DATA/imhi" \
    --counselchat "$DATA/counsel_chat/counsel_chat.csv" --out "$WORK/data" \
    --hold-out "$HOLD_OUT" "${extra[@]}"
fi
if has bundle; then
  stage=$(mktemp -d)
  mkdir -p "$stage/data" "$stage/shared/imhi/test"
  cp "$WORK/data/rows.jsonl.gz" "$WORK/data/prepare_report.json" "$stage/data/"
  cp "$DATA"/imhi/test/*.csv "$stage/shared/imhi/test/"
  tar czf "$WORK/gpu_bundle.tar.gz" -C "$stage" data shared
  rm -rf "$stage"
  ls -l "$WORK/gpu_bundle.tar.gz"
fi
if has train; then
  # rows.jsonl.gz alone is enough (a bundle has no Arrow files)
  data="$WORK/data"; [ -f "$data/dataset_dict.json" ] || data="$WORK/data/rows.jsonl.gz"
  "${phyassist[@]}" domain train --data "$data" --out "$WORK/run" --no-4bit --no-resume \
    --epochs 3 --batch-size 32 --grad-accum 1 --lr 2e-4 --max-length 1024 --lora-r 16 \
    --lora-alpha 32 --no-gradient-checkpointing --logging-steps 50 --save-steps 100000 \
    --device "$DEVICE" --time-budget "${TIME_BUDGET:-420}" "$@"
fi
if has eval; then
  # every task, held out or trained; results.md then lists them under two means
  "${phyassist[@]}" eval imhi --data "$DATA/imhi" --adapter "$WORK/run/adapter" --compare-base \
    --limit "${EVAL_LIMIT:-400}" --batch-size "${EVAL_BATCH:-200}" --max-new-tokens "${EVAL_MAX_NEW:-256}" \
    --device "$DEVICE" --held-out "$HOLD_OUT,loneliness" --out "$WORK/eval"
fi
if has ship; then
  "${phyassist[@]}" domain ship --run "$WORK/run" --eval "$WORK/eval" --data "$WORK/data" \
    --dest "$DEST" --bf16
fi
