#!/usr/bin/env bash
# The GPU side of scripts/train_domain_adapter.sh, one step per call (each fits a 10-minute
# command limit on one H100/H200), on a host that has the repository, the embedded model in
# its cache and WORK/gpu_bundle.tar.gz (made on a CPU host by
# `STAGES=prepare,bundle scripts/train_domain_adapter.sh ../shared/data build/domain`).
#   scripts/gpu_domain_run.sh train|eval|bench [WORK]     (WORK default build/domain)
# Results are copied to $OUT when it is set (the device runner brings that folder back).
#   train: unpack the bundle, LoRA SFT (TIME_BUDGET s, default 360) -> WORK/gpu/run/adapter
#   eval:  IMHI base vs adapter, 400 rows per task, held-out (MultiWD, loneliness) and
#          trained tasks' means apart -> WORK/gpu/eval/results.{md,json}
#   bench: bench/drafts.py on base or the new adapter (MODELS=base / MODELS=adapter, one
#          call each; all 61 statements, 3 modes; BENCH_ARGS e.g. "--limit 20")
set -euo pipefail
STEP=${1:?train, eval or bench}
WORK=${2:-build/domain}
GPU="$WORK/gpu"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=${PYTHONPATH:-$PWD}
out() { if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/$1"; cp -r "${@:2}" "$OUT/$1/"; fi; }
case "$STEP" in
  train)
    rm -rf "$GPU" && mkdir -p "$GPU"
    tar xzf "$WORK/gpu_bundle.tar.gz" -C "$GPU"
    STAGES=train DEVICE=cuda TIME_BUDGET=${TIME_BUDGET:-360} \
      scripts/train_domain_adapter.sh "$GPU/shared" "$GPU" 2>&1 | grep -v "examples/s"
    out run "$GPU/run/adapter" "$GPU/run/training_summary.json"
    ;;
  eval)
    STAGES=eval DEVICE=cuda scripts/train_domain_adapter.sh "$GPU/shared" "$GPU" 2>&1 \
      | grep -v "examples/s"
    out eval "$GPU/eval/results.md" "$GPU/eval/results.json"
    ;;
  bench)
    # MODELS=base or MODELS=adapter per call: 61 statements x 3 modes of one model is about
    # 180 drafts. Each figure is printed to the .err file as soon as it exists, so a call
    # stopped by its time limit (BENCH_TIMEOUT, default 560 s) still brings back what it has.
    models=${MODELS:-base,adapter}; tag=${models//,/_}
    rc=0
    timeout "${BENCH_TIMEOUT:-560}" python bench/drafts.py --models "$models" \
      --adapter "$GPU/run/adapter" --threads 0 ${BENCH_ARGS:-} \
      > "$GPU/drafts_$tag.json" 2> "$GPU/drafts_$tag.err" || rc=$?
    grep '^{' "$GPU/drafts_$tag.err" || true
    cat "$GPU/drafts_$tag.json"
    out bench "$GPU/drafts_$tag.json" "$GPU/drafts_$tag.err"
    exit $rc
    ;;
  *) echo "unknown step $STEP (train, eval or bench)" >&2; exit 2 ;;
esac
