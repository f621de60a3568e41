#!/usr/bin/env bash
# supkd speed suite for ONE NVIDIA H100/H200 (about 8 minutes, compilation included).
#
# Runs, on CUDA, in this order, each under its own time limit so that one overrun cannot
# lose the other's table:
#   1. benchmarks/kd_throughput.py     reference KD/SupCon loops vs supkd's engine (~4 min)
#   2. benchmarks/time_to_accuracy.py  CE ResNet-18 on cifar10-jpeg, then one KD student (~4 min)
# and writes to $OUT (default: benchmarks/out/):
#   env.txt, kd_throughput.md/.log, time_to_accuracy.md/.log
#
# Needs: python3 with torch (CUDA), torchvision, numpy, PyYAML, tqdm (scipy, matplotlib,
# scikit-learn for the rest of supkd). kornia is NOT needed: supkd's GPU loader does the
# SupCon augmentation with its own tensor ops. Data: the cifar10-jpeg pack at
# .data/cifar10-jpeg inside the repository (or $SUPKD_CIFAR10_JPEG); without it the
# throughput benchmark uses synthetic images and the accuracy benchmark the digits set.
#
# Usage (from anywhere):   OUT=/some/dir bash benchmarks/gpu_suite.sh
# Knobs (environment):     KD_LIMIT_S (300) TTA_LIMIT_S (330) TTA_EPOCHS (60) KD_EPOCHS (30)
set -u
set -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-$REPO/benchmarks/out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

# supkd from this checkout: an editable install when pip can do it offline, and the source
# folder on PYTHONPATH in any case (so a failed install changes nothing).
"$PY" -m pip install --no-deps --no-build-isolation -q -e . >/dev/null 2>&1 \
  || echo "note: pip install -e . failed (offline?); using PYTHONPATH=src"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"

DATA="${SUPKD_CIFAR10_JPEG:-$REPO/.data/cifar10-jpeg}"
if [ -f "$DATA/train.npz" ]; then
  export SUPKD_CIFAR10_JPEG="$DATA"
  DATA_ARGS=(--data "$DATA")
else
  echo "WARNING: no cifar10-jpeg pack at $DATA: synthetic images / digits will be used"
  DATA_ARGS=()
fi

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) changed files"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  "$PY" - <<'EOF'
import importlib, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
for m in ("torchvision", "numpy", "scipy", "yaml", "tqdm", "kornia", "supkd"):
    try:
        mod = importlib.import_module(m)
        print(f"{m}: {getattr(mod, '__version__', '?')} ({mod.__file__})")
    except Exception as exc:  # kornia may be absent: supkd does not need it
        print(f"{m}: not available ({type(exc).__name__})")
EOF
} 2>&1 | tee "$OUT/env.txt"

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "ERROR: no CUDA device visible to torch; nothing to benchmark" | tee -a "$OUT/env.txt"
  exit 1
}

status=0
echo "=== 1/2 kd_throughput (limit ${KD_LIMIT_S:-300}s)"
timeout -k 10 "${KD_LIMIT_S:-300}" "$PY" benchmarks/kd_throughput.py --device cuda \
  "${DATA_ARGS[@]}" --out "$OUT/kd_throughput.md" 2>&1 | tee "$OUT/kd_throughput.log" \
  || { echo "kd_throughput exited with $?"; status=1; }

echo "=== 2/2 time_to_accuracy (limit ${TTA_LIMIT_S:-330}s)"
timeout -k 10 "${TTA_LIMIT_S:-330}" "$PY" benchmarks/time_to_accuracy.py --device cuda \
  "${DATA_ARGS[@]}" --epochs "${TTA_EPOCHS:-60}" --kd-epochs "${KD_EPOCHS:-30}" \
  --runs-dir "${TMPDIR:-/tmp}/supkd_tta_runs" --out "$OUT/time_to_accuracy.md" 2>&1 \
  | grep -v '^\s*$' | tee "$OUT/time_to_accuracy.log" \
  || { echo "time_to_accuracy exited with $?"; status=1; }

echo "=== tables in $OUT"
ls -l "$OUT"
exit $status
