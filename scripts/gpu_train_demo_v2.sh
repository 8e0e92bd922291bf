#!/usr/bin/env bash
# Demo model v2 on the lent H200 in ONE device call: train under a hard time limit, evaluate, and
# leave everything under $OUT (7 files; the device tool brings back at most 8):
#
#   demo_model_v2/   config.json, model.safetensors (bf16, ~15 MB), tokenizer.json,
#                    tokenizer_config.json, training.json (args, device, loss log, steps, minutes)
#   eval.md          the v2 table (zero-shot, k = 1, 4, 8, state (8), held-out phrasings; per skill and
#                    mean), the no-skill line, the goals as pass/fail
#   run.log          versions, the training log, the eval's progress
#
# Run it from the session's checkout (the device tool sends the git checkout; carry the transformers
# 5.23 wheel in .whl/ as scripts/gpu_check.sh explains, else the image's 5.17 is used):
#
#   run(command="bash scripts/gpu_train_demo_v2.sh", carry=[".whl"], timeout_s=600)
#
# Budget (15 device minutes a session, a start costs 1-2; one command at most 10): training stops
# itself after TRAIN_MINUTES (default 7; `--preset v2` plans 2,400 steps for ~6 of them, see that
# preset's comment) and is killed 30 s later if it has not saved by then; the eval (Triton kernels
# compile on first use) is cut at EVAL_SECONDS (default 110). Worst case ~9.8 minutes in all.
# The text-router column needs Chroma and MiniLM, which that machine lacks: run it afterwards here,
#   python scripts/eval_demo_model.py --corpus v2 --model <the fetched demo_model_v2> --markdown eval_full.md
# Extra arguments go to train_demo_model.py (e.g. --steps 3000).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/demo_v2}
TRAIN_MINUTES=${TRAIN_MINUTES:-7}
EVAL_SECONDS=${EVAL_SECONDS:-110}
DEVICE=${DEVICE:-cuda}  # cpu: a smoke test of this script off the GPU machine
mkdir -p "$OUT"
LOG="$OUT/run.log"
START=$(date +%s)
log() { echo "[gpu_train_demo_v2 +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

LOGFILE="$LOG"
. "$ROOT/scripts/gpu_site.sh"
python3 -c "import torch, transformers; print(f'torch {torch.__version__} CUDA {torch.version.cuda}, transformers \
{transformers.__version__}, GPU {torch.cuda.get_device_name(0)}')" 2>&1 | tee -a "$LOG"

log "train (stops itself after $TRAIN_MINUTES min; hard limit +30 s)"
timeout --kill-after=5 $(( TRAIN_MINUTES * 60 + 30 )) python3 scripts/train_demo_model.py --preset v2 --device "$DEVICE" \
    --minutes "$TRAIN_MINUTES" --out "$OUT/demo_model_v2" "$@" 2>&1 | grep --line-buffered -v "Writing model shards" | tee -a "$LOG"
log "train: exit ${PIPESTATUS[0]}"
rm -f "$OUT/demo_model_v2/generation_config.json"  # not read by load_model; keeps $OUT within 8 files

log "eval (limit ${EVAL_SECONDS}s)"
EVAL_END=$(( $(date +%s) + EVAL_SECONDS ))
for IMPL in auto ref; do  # the Triton kernels first; the PyTorch ops if they fail
    LEFT=$(( EVAL_END - $(date +%s) ))
    [ "$LEFT" -gt 20 ] || break
    timeout --kill-after=5 "$LEFT" python3 scripts/eval_demo_model.py --corpus v2 --model "$OUT/demo_model_v2" \
        --device "$DEVICE" --impl "$IMPL" --n "${EVAL_N:-50}" --routers "" --markdown "$OUT/eval.md" >>"$LOG" 2>&1
    RC=$?
    log "eval (impl $IMPL): exit $RC"
    [ "$RC" = 0 ] || [ "$RC" = 124 ] && break
done
cat "$OUT/eval.md" 2>/dev/null || log "no eval.md: see run.log"
ls -la "$OUT" "$OUT/demo_model_v2" | tee -a "$LOG"
