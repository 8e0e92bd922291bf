#!/usr/bin/env bash
# Every GPU number issue 14 asks for, in ONE call of the device tool on the lent H200 (at most 8 minutes,
# each step capped;
# a session has 15 minutes of device time in all, the machine's start included). Run it from the repo
# root there; everything it writes lands in $OUT (8 files, the most the device tool brings back):
#
#   summary.log      versions, GPU, each step's time and exit code
#   pytest_gpu.log   pytest -m gpu: kernels, CUDA-graph decode == eager, the bank, the runtime on CUDA
#   exactness.md     every path against float64, per layer and per op (benchmarks/gpu_exactness.py)
#   exactness.log    its full output
#   bench_small.md   bench_gpu.py for mamba-130m and mamba-1.4b (with the scan tile sweep)
#   bench_large.md   bench_gpu.py for mamba-2.8b
#   bench.log        both benchmarks' full output
#   RESULTS.md       the tables above in one file, for README and the note
#
# Needs: transformers 5.23 carried as a wheel in .whl/ (the image has 5.17): see README "GPU runtime".
# The image has torch, triton, pytest, tokenizers and safetensors; no chromadb (nothing here needs it).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/gpu_check}
mkdir -p "$OUT"
START=$(date +%s)
log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/summary.log"; }
step() {  # step NAME SECONDS LOGFILE COMMAND...: run with a time limit, keep going whatever happens
    local name=$1 limit=$2 logfile=$3; shift 3
    log "start $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >>"$logfile" 2>&1
    local rc=$?
    log "end $name: exit $rc$([ $rc = 124 ] && echo ' (time limit)')"
}

# ---- packages: the carried transformers wheel, skillsoup and kernels/ as skillsoup_kernels --------
LOGFILE="$OUT/summary.log"
. "$ROOT/scripts/gpu_site.sh"
python3 - >>"$OUT/summary.log" 2>&1 <<'EOF'
import torch, triton, transformers, skillsoup_kernels, skillsoup
print(f"python OK: torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}, "
      f"transformers {transformers.__version__}, GPU {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >>"$OUT/summary.log" 2>&1
tail -n 3 "$OUT/summary.log"

# ---- 1. correctness on CUDA (at most 2 minutes) ----------------------------------------------------
step "pytest -m gpu" 120 "$OUT/pytest_gpu.log" \
    python3 -m pytest -q -p no:cacheprovider -m gpu -o addopts="-ra" \
        tests/kernels tests/models tests/states tests/routing/test_runtime_gpu.py
tail -n 15 "$OUT/pytest_gpu.log"

# ---- 2. exactness against float64 (at most 75 s) -------------------------------------------------
step "gpu_exactness" 75 "$OUT/exactness.log" python3 benchmarks/gpu_exactness.py --out "$OUT/exactness.md"

# ---- 3. the benchmark table (at most 4.5 minutes) ------------------------------------------------------
step "bench 130m + 1.4b" 180 "$OUT/bench.log" python3 benchmarks/bench_gpu.py --shapes mamba-130m,mamba-1.4b \
    --reps 3 --skip-equal --markdown "$OUT/bench_small.md"
step "bench 2.8b" 90 "$OUT/bench.log" python3 benchmarks/bench_gpu.py --shapes mamba-2.8b --reps 3 --skip-equal \
    --sweep-tiles "" --markdown "$OUT/bench_large.md"

# ---- 4. one file of results -------------------------------------------------------------------------
{
    echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo '```'
    cat "$OUT/summary.log"
    echo '```'
    echo
    echo "## pytest -m gpu"
    echo '```'
    tail -n 25 "$OUT/pytest_gpu.log"
    echo '```'
    for f in bench_small.md bench_large.md exactness.md; do
        echo
        echo "## $f"
        echo
        if [ -s "$OUT/$f" ]; then cat "$OUT/$f"; else echo "(missing: see bench.log / exactness.log)"; fi
    done
} >"$OUT/RESULTS.md"
log "done; results in $OUT/RESULTS.md"
cat "$OUT/RESULTS.md" | tail -n 80
