#!/usr/bin/env bash
# The ensemble issue's GPU measurement in one device call (not yet run: no GPU was lent to the
# session that wrote it). KDD shape: 200k training rows x 120, 10 epochs; 8M rows scored.
#   run: OUT=$OUT bash benchmarks/ensemble_device.sh      (about 3-5 minutes on an H100/H200)
# CPU dry run of the same script: SMALL=1 OUT=/tmp/ens bash benchmarks/ensemble_device.sh
set -u
OUT=${OUT:-out/ensemble}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ "${SMALL:-0}" = 1 ]; then ARGS="--rows 2000 --epochs 2 --score-rows 20000 --members 1,4 --repeats 1"
else ARGS="--rows 200000 --epochs 10 --batch-size 1024 --score-rows 8000000 --members 1,4,8,16"; fi
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true) | tee "$OUT/device.txt"
python3 benchmarks/ensemble_cost.py $ARGS --json "$OUT/ensemble_cost.json" 2>&1 | tee "$OUT/ensemble_cost.log"
echo "ensemble_cost rc=${PIPESTATUS[0]}"
