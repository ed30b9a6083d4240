#!/usr/bin/env bash
# The GPU path in one table (issue 14), for a person with a CUDA machine:
#   1. the CUDA tests (tests/test_cuda.py: no host sync inside a training step, and the CPU proxy)
#   2. steps/s of one run against groups of M = 1, 16, 64, 256 on the reference preset bursty/small
#      (benchmarks/batched_throughput.py; target: 64 members in at most 2x one run's wall time)
#   3. the trainer (bridge and lean forward, eager and compiled: default, max-autotune-no-cudagraphs,
#      reduce-overhead = CUDA graphs) against a plain-PyTorch loop of the same model, eager and
#      compiled, with the roofline (benchmarks/train_throughput.py)
#   4. wall time of the modular/nanda preset trained to 40k steps (icl-lab train)
#
#     bash benchmarks/gpu_check.sh                                   # from the repository root
#     GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 bash benchmarks/gpu_check.sh   # dry run: each command, tiny, on CPU
#
# GPU_CHECK_DEVICE (default cuda) is passed to every command; GPU_CHECK_QUICK=1 shrinks every
# command to a few steps; GPU_CHECK_OUT (default a new temporary folder) keeps each command's
# full output (*.log) and the nanda run. Exit code 1 when there is no CUDA device (for a cuda
# device) or a test failed; the measurements run either way.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE="${GPU_CHECK_DEVICE:-cuda}"
QUICK="${GPU_CHECK_QUICK:-0}"
PYTHON="${PYTHON:-python}"
OUT="${GPU_CHECK_OUT:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$OUT"

if [[ "$DEVICE" == cuda* ]] && ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  torch_version="$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'not importable')"
  echo "gpu_check: no CUDA device: torch $torch_version with $PYTHON sees no GPU (torch.cuda.is_available() is False)." >&2
  echo "gpu_check: run it on a machine with a GPU and a CUDA build of torch, or try the commands on CPU with" >&2
  echo "gpu_check:     GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 bash benchmarks/gpu_check.sh" >&2
  exit 1
fi

if [[ "$QUICK" == 1 ]]; then
  TESTS=(tests/test_cuda.py::test_no_host_sync_in_a_cuda_training_step tests/test_cuda.py::test_the_cuda_guard_catches_a_sync)
  BATCHED=(--steps 3 --members 1,2 --threads 1)
  TRAINER=(--steps 5 --repeats 1 --compile "")  # no compiling in the dry run (a minute of C++ builds on CPU)
  NANDA=(--steps 20 --set task.p=23)  # the same command on a small grid
else
  TESTS=(tests/test_cuda.py)
  BATCHED=(--steps 1000 --members 1,16,64,256)
  TRAINER=(--steps 2000 --repeats 3 --compile default,max-autotune-no-cudagraphs,reduce-overhead)
  NANDA=(--steps 40000)
fi
echo "gpu_check: device $DEVICE, quick=$QUICK, logs in $OUT"

echo "gpu_check: [1/4] CUDA tests"
tests_status=0
"$PYTHON" -m pytest -q "${TESTS[@]}" > "$OUT/tests.log" 2>&1 || tests_status=$?
tests_summary="$(tail -n 1 "$OUT/tests.log")"

echo "gpu_check: [2/4] single run vs groups (bursty/small)"
"$PYTHON" benchmarks/batched_throughput.py --device "$DEVICE" --sequential one "${BATCHED[@]}" > "$OUT/batched.log" 2>&1

echo "gpu_check: [3/4] trainer vs plain PyTorch"
"$PYTHON" benchmarks/train_throughput.py --device "$DEVICE" "${TRAINER[@]}" > "$OUT/trainer.log" 2>&1

echo "gpu_check: [4/4] modular/nanda: ${NANDA[*]}"
start=$(date +%s)
"$PYTHON" -m icl_lab.cli train modular --preset nanda "${NANDA[@]}" --device "$DEVICE" \
  --out "$OUT/nanda" --overwrite --no-progress > "$OUT/nanda.log" 2>&1
nanda_wall=$(( $(date +%s) - start ))

# -- the table -----------------------------------------------------------------------------
row() { printf '%-34s %s\n' "$1" "$2"; }
echo
echo "gpu_check on $("$PYTHON" -c "
import torch
print(torch.cuda.get_device_name() if torch.cuda.is_available() and '$DEVICE'.startswith('cuda') else 'cpu', 'torch', torch.__version__)")"
row "check" "result"
row "CUDA tests (tests/test_cuda.py)" "$([[ $tests_status == 0 ]] && echo ok || echo FAILED): $tests_summary"
# batched_throughput rows: M, group wall s, group member-steps/s, sequential member-steps/s, ratio, group wall / one run
single=$(awk '$1 ~ /^[0-9]+$/ { printf "%.1f", $4; exit }' "$OUT/batched.log")
row "one run, bursty/small" "$single steps/s"
awk '$1 ~ /^[0-9]+$/ { printf "%-34s %.1f member-steps/s (%.2fx one run), group wall %.2fx one run\n", "group of M = " $1, $3, $5, $6 }' "$OUT/batched.log"
# train_throughput rows: | loop | steps/s | vs plain eager (wall) | (CPU) | GFLOP/s | of the matmul peak |
row "trainer vs plain PyTorch" "bursty/small, steps/s (x plain eager by wall time; fraction of the matmul peak; target >= 0.9)"
awk -F'|' '$2 ~ /plain PyTorch|icl_lab/ { gsub(/^ +| +$/, "", $2); printf "  %-32s %s steps/s (%sx; %s)\n", $2, $3+0, $4+0, $7 }' "$OUT/trainer.log"
row "modular/nanda, ${NANDA[*]}" "${nanda_wall} s wall for the command ($(grep -h '^done in' "$OUT/nanda.log" | sed 's/;.*//'))"
exit "$tests_status"
