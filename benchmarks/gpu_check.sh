#!/usr/bin/env bash
# The GPU check: the full-budget LLaVA, one other design (X-Former, which also reads the MIM encoder), a run on real
# (transformers + timm) backbones and, with more than one GPU, the full LLaVA under DDP; each prints one JSON line
# with samples/s and peak GPU memory, collected in $OUT/gpu_check.jsonl.
#
#   benchmarks/gpu_check.sh [OUT]            # OUT defaults to papermill_runs/gpu_check
#   REAL_LM=DIR REAL_CL=SPEC benchmarks/gpu_check.sh   # real checkpoints for the real-backbone run (default: tiny
#                                                      # random ones in the real formats, which check the path only)
#   BUDGET=default benchmarks/gpu_check.sh   # a shorter pass
#
# The first full-budget run builds the full backbones (vlmlab pretrain --budget full) when they are missing: that
# takes the longest. Nothing else in the repository needs a GPU; this script is not run by the tests.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${1:-papermill_runs/gpu_check}
BUDGET=${BUDGET:-full}
PRECISION=${PRECISION:-auto}  # auto: bf16 autocast on CUDA
PY=${PYTHON:-python}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.jsonl"
: > "$LOG"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device visible to torch; nothing measured" >&2
    exit 1
fi
NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(0), "x", torch.cuda.device_count(), "torch", torch.__version__)'

check() {  # check NAME ARGS...: one measured run, its JSON line appended to the log
    local name=$1
    shift
    echo "gpu_check: $name" >&2
    local start=$SECONDS
    "$PY" benchmarks/gpu_check.py "$@" | tail -n 1 | tee -a "$LOG"
    echo "gpu_check: $name took $((SECONDS - start)) s" >&2
}

"$PY" -m vlmlab.cli pretrain --budget "$BUDGET"
check "llava, budget $BUDGET" design --arch llava --budget "$BUDGET" --precision "$PRECISION"
check "xformer, budget $BUDGET" design --arch xformer --budget "$BUDGET" --precision "$PRECISION"
if [[ -n "${REAL_LM:-}" && -n "${REAL_CL:-}" ]]; then
    check "llava on real backbones" real --budget "$BUDGET" --precision "$PRECISION" --lm "$REAL_LM" --cl "$REAL_CL"
else
    check "llava on tiny real-format backbones" real --budget "$BUDGET" --precision "$PRECISION"
fi

if (( NGPU > 1 )); then  # one run on every GPU: DDP under torchrun, rank 0's record
    echo "gpu_check: llava on $NGPU GPUs (DDP)" >&2
    "$PY" -m vlmlab.cli run --arch llava --budget "$BUDGET" --precision "$PRECISION" --nproc "$NGPU" \
        --out "$OUT/llava-ddp" > "$OUT/llava-ddp.log"
    "$PY" -c 'import json, sys
rec = json.load(open(sys.argv[1]))
print(json.dumps({"check": "llava-ddp", "world_size": rec["environment"]["world_size"],
                  "samples_per_s": rec["samples_per_s"], "train_seconds": rec["train_seconds"],
                  "test_overall": rec["metrics"]["test"]["overall"]}))' "$OUT/llava-ddp/record.json" | tee -a "$LOG"
fi
echo "gpu_check: results in $LOG" >&2
