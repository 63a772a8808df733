#!/usr/bin/env bash
# The GPU side of the speed benchmark, in one go (used on the lent H100; see RESULTS.md).
#   OUT=out/gpu bash benchmarks/gpu_speed.sh   # leaves gpu_results.tar (logs, JSON), ckpt.tar, gpu_scores.npy
set -u
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, optax, orbax.checkpoint as o, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
python3 benchmarks/jax_vaegmm.py --rows 200000 --epochs 4 --score-rows 8000000 --bf16 --json "$OUT/jax_gpu.json" > "$OUT/jax_gpu.log" 2>&1; echo "jax rc=$?"
python3 benchmarks/torch_vaegmm.py --rows 200000 --epochs 4 --score-rows 8000000 --device cuda --json "$OUT/torch_gpu.json" > "$OUT/torch_gpu.log" 2>&1; echo "torch rc=$?"
python3 benchmarks/dagmm_kdd_timing.py --rows 200000 --epochs 200 --json "$OUT/dagmm_kdd_gpu.json" > "$OUT/dagmm.log" 2>&1; echo "dagmm rc=$?"
# the same with parameter initialisation compiled and run on the host CPU (CompileOptions(init_platform=...)),
# each in its own process, alternated so both see the same machine state
for i in 1 2; do
  python3 benchmarks/dagmm_kdd_timing.py --rows 200000 --epochs 200 --init-platform cpu --json "$OUT/dagmm_kdd_gpu_hostinit$i.json" >> "$OUT/dagmm.log" 2>&1; echo "dagmm host-init rc=$?"
  python3 benchmarks/dagmm_kdd_timing.py --rows 200000 --epochs 200 --json "$OUT/dagmm_kdd_gpu_devinit$i.json" >> "$OUT/dagmm.log" 2>&1; echo "dagmm device-init rc=$?"
done
# a checkpoint written on the GPU, to load back on a CPU-only machine
python3 - <<'PY'
import os, tarfile, numpy as np, optax, sys
sys.path.insert(0, "benchmarks")
import common, vaegmm_jax as vj
x = common.make_data(4096, n_features=12, seed=9)
det = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, hidden=(8, 4), seed=1)
det.fit(x, epochs=2, batch_size=256, verbose=False, optimizer=optax.adam(1e-3))
out = os.environ.get("OUT", "out/gpu")
vj.save_detector(det, f"{out}/ckpt")
np.save(f"{out}/gpu_scores.npy", det.score(x[:512]))
with tarfile.open(f"{out}/ckpt.tar", "w") as t:
    t.add(f"{out}/ckpt", arcname="ckpt")
print("checkpoint saved on", det.meta, "device", __import__("jax").devices()[0].device_kind)
PY
rm -rf "$OUT/ckpt"
grep -h -E '"(epoch_s_steady|first_epoch_s|score_rows_per_s|score_rows_per_s_device_resident|bf16_score_rows_per_s_device_resident|auroc_change_bf16|fit_s_including_compile|steady_epoch_s_median|device_peak_memory_mb|cuda_max_memory_allocated_mb)"' "$OUT"/*.json
# the device tool brings back at most 8 files: bundle the small outputs into one archive
(cd "$OUT" && tar -cf gpu_results.tar --remove-files gpu.txt ./*.json ./*.log) && ls "$OUT"
