"""What the command line's persistent compilation cache saves: wall seconds of a first and a
second ``vaegmm fit`` and ``vaegmm score`` of the same shapes, with the cache (the default, in a
fresh folder) and without it (``--no-compile-cache``), each a fresh process.

    python benchmarks/cli_compile_cache.py --rows 20000 --json benchmarks/results/cli_cache_cpu.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    result = {"runner": "vaegmm CLI, compile cache", "rows": args.rows, "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "rows.npy"
        np.save(data, common.make_data(args.rows))
        for mode in ("cache", "no_cache"):
            env = dict(os.environ, VAEGMM_CACHE_DIR=str(tmp / f"xla_{mode}"))
            flag = [] if mode == "cache" else ["--no-compile-cache"]
            for run in ("first", "second"):
                model = tmp / f"model_{mode}_{run}"
                result[f"fit_s_{mode}_{run}"] = common.timed_cli(flag + ["fit", data, "--detector", "vaegmm", "--epochs",
                                                             args.epochs, "--out", model], env)
                result[f"score_s_{mode}_{run}"] = common.timed_cli(flag + ["score", data, "--model", model, "--out",
                                                               tmp / f"s_{mode}_{run}.csv"], env)
                print(mode, run, f"fit {result[f'fit_s_{mode}_{run}']:.1f} s, "
                      f"score {result[f'score_s_{mode}_{run}']:.1f} s", flush=True)
    result["device_name"] = common.cpu_name()
    common.write_result(args.json, result)


if __name__ == "__main__":
    main()
