#!/usr/bin/env bash
# One device call for the defaults issue: the default score's speed and GPU kernel check on the
# GPU, then the development suite on the machine's 16 CPU cores (JAX on CPU, one process per
# core: the suite's small programs are compile- and dispatch-bound, which a GPU does not help).
# Prepare here (both folders are git-ignored; carry them): mkdir -p .devdata .whl &&
#   cp -r ../shared/data/adbench ../shared/data/odds .devdata/ &&
#   pip download --no-deps --python-version 3.12 --only-binary=:all: -d .whl tqdm
# Usage (device machine, repo root): VAEGMM_DATA=.devdata bash benchmarks/suite_device.sh SUITE_SECONDS
# Already stored runs are skipped; bring suite_store.tgz back and unpack it into benchmarks/results/.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -1
nvidia-smi -L; python -c "import jax; print(jax.__version__, jax.devices())"
(cd benchmarks && timeout 150 python default_speed.py --train-rows 200000 --score-rows 8000000) 2>&1 | tee "$OUT/default_speed_gpu.jsonl"
export JAX_PLATFORMS=cpu OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
timeout "${1:-400}" python benchmarks/suite.py --jobs 15 --methods vaegmm dagmm vae iforest lof --out "$OUT/suite.md" \
  > "$OUT/suite.log" 2>&1
echo "suite exit $?"; tail -3 "$OUT/suite.log"
tar czf "$OUT/suite_store.tgz" -C benchmarks/results suite_store
