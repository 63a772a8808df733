#!/usr/bin/env bash
# The host-fed scoring issue's GPU measurements in one device call, like for like:
# host-fed against host-fed (vaegmm_jax score(NumPy) vs the PyTorch port pageable and pinned),
# device-resident against device-resident (eager and torch.compile), fp32 and bf16; the host
# pipeline alone; the default-constructed detector against the benchmark configuration; fits
# with their compilation on a cold cache (a fresh process each).
#   run:     OUT=$OUT bash benchmarks/host_fed_device.sh       (about 6-8 minutes on an H100/H200)
#   CPU dry run of the same script: SMALL=1 OUT=/tmp/hf bash benchmarks/host_fed_device.sh
set -u
OUT=${OUT:-out/host_fed}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ "${SMALL:-0}" = 1 ]; then
  ROWS=2000; SCORE=20000; EPOCHS=2; PIPE=200000; DEV=cpu; KDD="--rows 2000 --epochs 3"
else
  ROWS=200000; SCORE=8000000; EPOCHS=4; PIPE=8000000; DEV=cuda; KDD=""
fi
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true) | tee "$OUT/device.txt"
run() {  # name, command...: its output to $OUT/name.log, its rc printed
  local name=$1; shift
  "$@" > "$OUT/$name.log" 2>&1; echo "$name rc=$?"; tail -n 3 "$OUT/$name.log"
}
export JAX_COMPILATION_CACHE_DIR=  # cold: no persistent cache anywhere below
run jax python3 benchmarks/jax_vaegmm.py --rows $ROWS --epochs $EPOCHS --score-rows $SCORE --bf16 --quiet-epochs 3 --json "$OUT/jax.json"
run torch python3 benchmarks/torch_vaegmm.py --rows $ROWS --epochs $EPOCHS --score-rows $SCORE --device $DEV --json "$OUT/torch.json"
run torch_compile python3 benchmarks/torch_vaegmm.py --rows $ROWS --epochs $EPOCHS --score-rows $SCORE --device $DEV --compile --json "$OUT/torch_compile.json"
run pipeline python3 benchmarks/host_pipeline.py --rows $PIPE --chunks 65536 262144 --json "$OUT/host_pipeline.json"
run default python3 benchmarks/default_speed.py --train-rows $ROWS --score-rows $SCORE
run fit10 python3 benchmarks/jax_vaegmm.py --rows $ROWS --epochs 10 --score-rows 1000 --json "$OUT/fit10.json"
run dagmm_kdd python3 benchmarks/dagmm_kdd_timing.py $KDD --json "$OUT/dagmm_kdd.json"
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
def get(name):
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else {}
j, t, tc, f = get("jax"), get("torch"), get("torch_compile"), get("fit10")
print(json.dumps({
    "host_fed_rows_per_s": {"vaegmm_jax": j.get("score_rows_per_s_host"), "torch_pageable": t.get("score_rows_per_s_host_pageable"),
                            "torch_pinned": t.get("score_rows_per_s_host_pinned"),
                            "torch_compile_pinned": tc.get("score_rows_per_s_host_pinned")},
    "device_resident_rows_per_s": {"vaegmm_jax": j.get("score_rows_per_s_device_resident"),
                                   "vaegmm_jax_bf16": j.get("bf16_score_rows_per_s_device_resident"),
                                   "torch": t.get("score_rows_per_s"), "torch_compile": tc.get("score_rows_per_s")},
    "epoch_s": {"vaegmm_jax_during_after_fit_compile": j.get("epoch_s_steady_median"),
                "vaegmm_jax_quiet": j.get("epoch_s_quiet_median"), "torch": t.get("epoch_s_steady_median"),
                "torch_compile": tc.get("epoch_s_steady_median")},
    "fit10_s_including_compile": f.get("fit_total_s"), "fit10_phases_s": f.get("fit_phases_s"),
    "after_fit_s": j.get("gmm_fit_s"),
}, indent=1))
PY
