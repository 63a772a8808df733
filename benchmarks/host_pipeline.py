"""CPU proxy for host-fed scoring: the rows/s of the host pipeline alone (validation, chunking,
transfer, copy-back) around a trivial score program, beside the pipeline it replaced.

    python benchmarks/host_pipeline.py --rows 1000000 --json benchmarks/results/host_pipeline_cpu.json

'before' is the pre-#25 path, reproduced here as the reference: a whole-array NaN/inf pass on
the host (``check_finite_rows``), then one thread putting chunk after chunk and reading every
result back at the end. 'after' is ``map_chunks(..., checked=True)``: the finiteness check is
part of the chunk program, chunks are cut by a background thread and transferred by a small
pool, results are read back a few chunks behind. Both score the same KDD-shaped float32 rows
(``common.make_data``) with the same jitted program (a row sum), for each chunk size. 'program
alone' runs that program on the chunks with nothing else: the bound of any pipeline.
With ``--detector`` it also times ``OutlierVAEGMM().score`` on the same host rows (the whole
score program; compare runs of this script at two commits for before/after).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _before(fn, x, chunk):
    """The replaced pipeline: host finiteness pass, then a sequential put/compute loop."""
    from vaegmm_jax.engine.streaming import iter_chunks
    from vaegmm_jax.engine.validation import check_finite_rows

    check_finite_rows(x)
    pending = []
    for c in iter_chunks(x, chunk):
        out = fn(c.x, np.int32(c.offset))  # NumPy straight into the program, as the old map_chunks did
        out.copy_to_host_async()
        pending.append((out, c.n_valid))
    return np.concatenate([np.asarray(o)[:n] for o, n in pending])


def _after(fn_checked, x, chunk):
    from vaegmm_jax.engine.streaming import map_chunks

    return map_chunks(fn_checked, x, chunk, checked=True)


def _program_only(fn, x, chunk):
    """The floor: the trivial program on every chunk, nothing else (no check, no read-back
    beyond waiting for the last result). No pipeline can beat one pass over the rows."""
    import jax

    outs = [fn(x[i:i + chunk], np.int32(i)) for i in range(0, x.shape[0] - chunk + 1, chunk)]
    jax.block_until_ready(outs)


def _time(run, repeats):
    run()  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--chunks", type=int, nargs="+", default=[2048, 16384, 65536])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--detector", action="store_true", help="also time OutlierVAEGMM().score on the host rows")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from vaegmm_jax.engine.validation import nonfinite_rows

    x = common.make_data(args.rows)

    @jax.jit
    def trivial(x, offset):
        return jnp.sum(x, axis=1)

    @jax.jit
    def trivial_checked(x, offset):
        return jnp.sum(x, axis=1), nonfinite_rows(x)

    rows = []
    for chunk in args.chunks:
        ref = _before(trivial, x, chunk)
        np.testing.assert_array_equal(_after(trivial_checked, x, chunk), ref)
        t_before = _time(lambda: _before(trivial, x, chunk), args.repeats)
        t_after = _time(lambda: _after(trivial_checked, x, chunk), args.repeats)
        t_floor = _time(lambda: _program_only(trivial, x, chunk), args.repeats)
        rows.append({"chunk": chunk, "before_rows_per_s": args.rows / t_before, "after_rows_per_s": args.rows / t_after,
                     "speedup": t_before / t_after, "program_only_rows_per_s": args.rows / t_floor,
                     "speedup_bound": t_before / t_floor})
        print(f"chunk {chunk:6d}: before {args.rows / t_before / 1e6:7.1f}M rows/s, after "
              f"{args.rows / t_after / 1e6:7.1f}M rows/s, x{t_before / t_after:.2f}; the program alone "
              f"{args.rows / t_floor / 1e6:7.1f}M rows/s (at most x{t_before / t_floor:.2f})", flush=True)
    result = {"runner": "host pipeline proxy (trivial score program)", "rows": args.rows,
              "features": common.N_FEATURES, "pipeline": rows}
    if args.detector:
        import vaegmm_jax as vj

        det = vj.OutlierVAEGMM(n_gmm=4, latent_dim=2)
        det.fit(x[:20_000], epochs=1, verbose=False)
        n = min(args.rows, 200_000)
        t = _time(lambda: det.score(x[:n]), args.repeats)
        result["detector_score_rows_per_s"] = n / t
        print(f"OutlierVAEGMM().score on {n} host rows: {n / t / 1e6:.3f}M rows/s", flush=True)
    dev = jax.devices()[0]
    result["device_name"] = dev.device_kind if dev.platform != "cpu" else common.cpu_name()
    common.write_result(args.json, result)


if __name__ == "__main__":
    main()
