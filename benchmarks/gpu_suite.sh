#!/usr/bin/env bash
# supkd speed suite for ONE NVIDIA H100/H200, sized for one call of at most 10 minutes.
#
# Runs, on CUDA, in this order, each under its own time limit so that one overrun cannot
# lose the others' output; the whole suite ends within SUITE_LIMIT_S (550 s, about 9 min):
#   0. setup: editable install, env.txt                                   (~20 s)
#   1. CUDA-only tests: every test named *cuda* in the test files that skip
#      without CUDA (compile modes and CUDA graphs, fused optimizer with two
#      parameter groups, fast path, teacher cache, GPU loader, cutout)     CUDA_TESTS_LIMIT_S=120
#   2. benchmarks/kd_throughput.py: reference KD/SupCon loops vs supkd's
#      engine, compile break-even, batch 1024 rows, reduce-overhead rows   KD_LIMIT_S=240
#   3. benchmarks/time_to_accuracy.py: CE ResNet-18 recipe variants on
#      cifar10-jpeg, as many as its budget fits (the rest listed skipped)   the rest of
#                                               SUITE_LIMIT_S (at least 170 s if 0-2 use
#                                               their whole limits; TTA_LIMIT_S fixes it)
# Each benchmark prints its table even when its limit cuts it short (SIGTERM: the rows done
# so far; time_to_accuracy also stops by itself 15 s before its limit).
#
# Writes to $OUT (default: benchmarks/out/): env.txt, cuda_tests.log,
# kd_throughput.md/.log, time_to_accuracy.md/.log.
#
# Needs: python3 with torch (CUDA), torchvision, numpy, PyYAML, tqdm, pytest (scipy,
# matplotlib, scikit-learn for the rest of supkd). kornia is NOT needed: supkd's GPU loader
# does the SupCon augmentation with its own tensor ops. Data: the cifar10-jpeg pack at
# .data/cifar10-jpeg inside the repository (or $SUPKD_CIFAR10_JPEG); without it the
# throughput benchmark uses synthetic images and the accuracy benchmark the digits set.
#
# Usage (from anywhere):   OUT=/some/dir bash benchmarks/gpu_suite.sh
# Knobs (environment), with defaults:
#   SUITE_LIMIT_S=550  CUDA_TESTS_LIMIT_S=120  KD_LIMIT_S=240  TTA_LIMIT_S=(the rest)
#   KD_ARGS="--also-mode reduce-overhead"      extra kd_throughput.py arguments
#   TTA_VARIANTS="base@40 nodecay@40 cutout@40 b1024@40 ema@40 ls0@40"   (in this order)
#   TTA_KD=0 (1: also the KD student, KD_EPOCHS=30, distilled from the first CE run)
set -u
set -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-$REPO/benchmarks/out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

SUITE_LIMIT_S="${SUITE_LIMIT_S:-550}"
CUDA_TESTS_LIMIT_S="${CUDA_TESTS_LIMIT_S:-120}"
KD_LIMIT_S="${KD_LIMIT_S:-240}"
TTA_PLANNED_S=$((SUITE_LIMIT_S - 20 - CUDA_TESTS_LIMIT_S - KD_LIMIT_S))
KD_ARGS="${KD_ARGS:---also-mode reduce-overhead}"
TTA_VARIANTS="${TTA_VARIANTS:-base@40 nodecay@40 cutout@40 b1024@40 ema@40 ls0@40}"
TTA_KD="${TTA_KD:-0}"
T0=$(date +%s)

echo "=== plan (time limits in seconds; suite limit ${SUITE_LIMIT_S})"
echo "  0. setup + env.txt                                        ~20"
echo "  1. CUDA tests -> cuda_tests.log                           ${CUDA_TESTS_LIMIT_S}"
echo "  2. kd_throughput ${KD_ARGS} -> kd_throughput.md           ${KD_LIMIT_S}"
echo "  3. time_to_accuracy ${TTA_VARIANTS}$([ "$TTA_KD" = 1 ] && echo ' + KD')"
echo "     -> time_to_accuracy.md                                 ${TTA_LIMIT_S:-the rest, >= ${TTA_PLANNED_S}} (stops itself 15 s early)"
echo "  output: $OUT"

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
for m in ("torchvision", "numpy", "scipy", "yaml", "tqdm", "pytest", "kornia", "supkd"):
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
elapsed() { echo "$(( $(date +%s) - T0 ))s"; }

# The test files holding CUDA-only tests (they skip without CUDA); the CUDA-graph and
# compile-mode tests first, as they are new. -k cuda picks the tests named *cuda* there
# (every such test is; CPU tests in those files are not rerun), "not on_cpu" drops the CPU
# compile test whose parameter (max-autotune-no-cudagraphs) contains the word.
mapfile -t CUDA_FILES < <(
  { echo tests/train/test_compile_mode.py; echo tests/train/test_cuda_path.py;
    grep -rlE 'torch\.cuda\.is_available\(\)' tests --include='test_*.py' | sort; } \
    | awk '!seen[$0]++' | while read -r f; do [ -f "$f" ] && echo "$f"; done
)
# pytest-xdist (in the CUDA image) runs 4 tests at once: most of their time is compilation
# on the CPU cores, and the tiny models share the GPU easily. -rA keeps the output of
# passing tests in the log.
XDIST=()
"$PY" -c "import xdist" 2>/dev/null && XDIST=(-n 4)
echo "=== 1/3 CUDA tests (limit ${CUDA_TESTS_LIMIT_S}s, at $(elapsed), ${XDIST[*]:-no xdist}): ${CUDA_FILES[*]}"
timeout -k 10 "$CUDA_TESTS_LIMIT_S" "$PY" -m pytest -v -rA -p no:cacheprovider "${XDIST[@]}" \
  -k "cuda and not on_cpu" "${CUDA_FILES[@]}" 2>&1 | tee "$OUT/cuda_tests.log" \
  || { echo "CUDA tests exited with $? (124: time limit)"; status=1; }

echo "=== 2/3 kd_throughput (limit ${KD_LIMIT_S}s, at $(elapsed))"
# shellcheck disable=SC2086  # KD_ARGS is a list of words
timeout -k 10 "$KD_LIMIT_S" "$PY" benchmarks/kd_throughput.py --device cuda \
  "${DATA_ARGS[@]}" $KD_ARGS --out "$OUT/kd_throughput.md" 2>&1 | tee "$OUT/kd_throughput.log" \
  || { echo "kd_throughput exited with $?"; status=1; }

# Whatever steps 0-2 left of the suite's limit (they often end early), unless TTA_LIMIT_S.
LEFT_S=$((SUITE_LIMIT_S - ($(date +%s) - T0)))
TTA_LIMIT_S="${TTA_LIMIT_S:-$((LEFT_S > 60 ? LEFT_S : 60))}"
TTA_BUDGET_S=$((TTA_LIMIT_S > 30 ? TTA_LIMIT_S - 15 : TTA_LIMIT_S))
echo "=== 3/3 time_to_accuracy (limit ${TTA_LIMIT_S}s, budget ${TTA_BUDGET_S}s, at $(elapsed))"
VARIANT_ARGS=()
for v in $TTA_VARIANTS; do VARIANT_ARGS+=(--variant "$v"); done
KD_FLAGS=(--skip-kd)
[ "$TTA_KD" = 1 ] && KD_FLAGS=(--kd-epochs "${KD_EPOCHS:-30}")
timeout -k 10 "$TTA_LIMIT_S" "$PY" benchmarks/time_to_accuracy.py --device cuda \
  "${DATA_ARGS[@]}" "${VARIANT_ARGS[@]}" "${KD_FLAGS[@]}" --budget-s "$TTA_BUDGET_S" \
  --runs-dir "${TMPDIR:-/tmp}/supkd_tta_runs" --out "$OUT/time_to_accuracy.md" 2>&1 \
  | grep -v '^\s*$' | tee "$OUT/time_to_accuracy.log" \
  || { echo "time_to_accuracy exited with $?"; status=1; }

echo "=== done in $(elapsed); tables in $OUT"
ls -l "$OUT"
exit $status
