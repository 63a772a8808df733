"""The development suite: do the detectors rank outliers well at their defaults?

Nineteen public ODDS/ADBench sets (``$VAEGMM_DATA/adbench``, ``$VAEGMM_DATA/odds``: the 17 of
the data README's development suite plus Thyroid and Arrhythmia), two protocols:

* ``novelty`` (the DAGMM paper's): a stratified random 50/50 split per seed, training on the
  normal rows of the train half only;
* ``contaminated`` (ADBench's unsupervised setting): training on every row of the train half.

Every method gets the same rows, min-max scaled on its training rows (constant columns become 0,
test values outside the training range are kept), and scores the whole test half; AUROC and
average precision (higher score = more anomalous) per set and seed. Baselines run in the same
command: scikit-learn's ``IsolationForest()`` and ``LocalOutlierFactor(novelty=True)`` and PyOD's
``ECOD()`` and ``AutoEncoder()`` (PyOD and torch are benchmark-only: ``pip install -e .[bench]``),
all at their defaults.

Every finished run (one method, one set, one protocol, one seed) is written at once to the run
store as a small JSON file (``--store``, atomic), keyed by everything that decides it; a repeated
command reuses the stored runs and computes only the missing ones, and ``--stored-only`` renders
the report without computing anything.

A method is a name from :data:`METHODS`, or ``NAME=JSON`` for a configuration under study, e.g.
``--methods 'v_lr3={"cls":"vaegmm","init":{},"fit":{"optimizer_lr":1e-3}}'``. Defaults are chosen on
the suite as a whole (mean AUROC, mean rank, worst set), never per set. ``"init":{"n_members":M}``
is an ensemble whose members never overlap another seed's (seed s: members s*M ... s*M + M - 1);
``"fixed_split":true`` trains every seed on split 0, so the spread over seeds is the model's alone.

    VAEGMM_DATA=../shared/data python benchmarks/suite.py --jobs 2
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_STORE = HERE / "results" / "suite_store"

#: name -> file under the data root; the order of the report's rows
SETS = {
    "ALOI": "adbench/1_ALOI.npz",
    "breastw": "adbench/4_breastw.npz",
    "cover": "adbench/10_cover.npz",
    "http": "adbench/16_http.npz",
    "Ionosphere": "adbench/18_Ionosphere.npz",
    "mnist": "adbench/24_mnist.npz",
    "Pima": "adbench/29_Pima.npz",
    "satimage-2": "adbench/31_satimage-2.npz",
    "smtp": "adbench/34_smtp.npz",
    "vowels": "adbench/40_vowels.npz",
    "WBC": "adbench/42_WBC.npz",
    "WDBC": "adbench/43_WDBC.npz",
    "wine": "adbench/45_wine.npz",
    "yeast": "adbench/47_yeast.npz",
    "glass": "odds/glass.mat",
    "lympho": "odds/lympho.mat",
    "vertebral": "odds/vertebral.mat",
    "thyroid": "odds/thyroid.npz",
    "arrhythmia": "odds/arrhythmia.mat",
}
PROTOCOLS = ("novelty", "contaminated")
BASELINES = ("iforest", "lof", "ecod", "pyod_ae")
#: the library's defaults are not in a stored run's key by value: bump this whenever they change
#: (2: the defaults chosen on this suite, 2026-12-04)
DEFAULTS_REVISION = 2
#: our detectors at their library defaults: the user passes only the data and a seed
DETECTORS = {
    "vaegmm": {"cls": "vaegmm", "init": {}, "fit": {}},
    "dagmm": {"cls": "dagmm", "init": {}, "fit": {}},
    "vae": {"cls": "vae", "init": {}, "fit": {}},
}
METHODS = tuple(DETECTORS) + BASELINES
#: |difference of mean AUROC| below this is a tie in the wins/ties/losses columns
TIE = 0.01
STORE_FORMAT = 1


# ----------------------------------------------------------------------------- data
def data_root() -> Path:
    root = os.environ.get("VAEGMM_DATA")
    if not root:
        raise SystemExit("set VAEGMM_DATA to the shared data folder (e.g. ../shared/data)")
    return Path(root)


def load_set(name: str) -> tuple[np.ndarray, np.ndarray]:
    """X (N, F) float64, y (N,) int (1 = anomaly) of one suite set."""
    from vaegmm_jax.data import load_odds

    ds = load_odds(data_root() / SETS[name], verify=False)
    return ds.X.astype(np.float64), ds.y.astype(np.int64)


def split(X: np.ndarray, y: np.ndarray, protocol: str, seed: int):
    """(x_train, x_test, y_test): a stratified 50/50 split, min-max scaled on the training rows."""
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(X, y, test_size=0.5, stratify=y, random_state=seed)
    if protocol == "novelty":
        x_tr = x_tr[y_tr == 0]
    lo, hi = x_tr.min(axis=0), x_tr.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    scale = lambda a: ((a - lo) / span).astype(np.float32)  # noqa: E731
    return scale(x_tr), scale(x_te), y_te


def fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- methods
def method_config(name: str) -> dict:
    """The configuration that decides a method's runs (part of the store key)."""
    if name in DETECTORS:
        return dict(DETECTORS[name], library_defaults=DEFAULTS_REVISION)
    if name in BASELINES:
        return {"baseline": name}
    if "=" in name:
        label, spec = name.split("=", 1)
        cfg = json.loads(spec)
        if cfg.get("cls") not in ("vaegmm", "dagmm", "vae"):
            raise SystemExit(f"method {label!r}: 'cls' must be vaegmm, dagmm or vae, got {cfg.get('cls')!r}")
        return {k: v for k, v in cfg.items()
                if k in ("cls", "init", "fit", "prescale", "steps", "max_epochs", "fixed_split")}
    raise SystemExit(f"unknown method {name!r}; choose from {METHODS} or give NAME=JSON")


def method_label(name: str) -> str:
    return name.split("=", 1)[0]


def _detector_scores(cfg: dict, x_train, x_test, seed: int) -> np.ndarray:
    import optax

    from vaegmm_jax import OutlierAEGMM, OutlierVAE, OutlierVAEGMM

    cls = {"vaegmm": OutlierVAEGMM, "dagmm": OutlierAEGMM, "vae": OutlierVAE}[cfg["cls"]]
    fit = dict(cfg.get("fit", {}))
    if "optimizer_lr" in fit:  # JSON cannot carry an optax object
        fit["optimizer"] = optax.adam(fit.pop("optimizer_lr"))
    # study knobs: scaling in front of the detector, and a training length in optimizer steps
    prescale = cfg.get("prescale")
    if prescale == "standard":
        mu, sd = x_train.mean(0), x_train.std(0)
        sd = np.where(sd > 0, sd, 1.0)
        x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    elif prescale is not None:
        raise ValueError(f"unknown prescale {prescale!r}")
    if "steps" in cfg:
        batch = min(fit.get("batch_size", 64), len(x_train))
        per_epoch = -(-len(x_train) // batch)
        fit["epochs"] = int(max(1, min(cfg.get("max_epochs", 10**6), round(cfg["steps"] / per_epoch))))
    init = dict(cfg.get("init", {}))
    n_members = int(init.pop("n_members", 1))
    # an ensemble's members never overlap another seed's: seed s has members s*M, ..., s*M + M - 1
    det = cls(seed=[seed * n_members + i for i in range(n_members)], **init)
    det.fit(x_train, verbose=False, **fit)
    return np.asarray(det.score(x_test), np.float64)


def _baseline_scores(name: str, x_train, x_test, seed: int) -> np.ndarray:
    if name == "iforest":
        from sklearn.ensemble import IsolationForest

        return -IsolationForest(random_state=seed).fit(x_train).score_samples(x_test)
    if name == "lof":
        from sklearn.neighbors import LocalOutlierFactor

        return -LocalOutlierFactor(novelty=True).fit(x_train).score_samples(x_test)
    if name == "ecod":
        from pyod.models.ecod import ECOD

        return ECOD().fit(x_train).decision_function(x_test)
    if name == "pyod_ae":
        import torch
        from pyod.models.auto_encoder import AutoEncoder

        torch.manual_seed(seed)
        torch.set_num_threads(1)
        return AutoEncoder(random_state=seed, verbose=0).fit(x_train).decision_function(x_test)
    raise ValueError(name)


def run_one(task: dict) -> dict:
    """One method on one set, protocol and seed -> a record (errors are recorded, not raised)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    X, y = load_set(task["set"])
    cfg = task["config"]
    x_train, x_test, y_test = split(X, y, task["protocol"], split_seed(task))
    started = time.perf_counter()
    record = dict(task, n_train=int(len(x_train)), n_test=int(len(x_test)), n_features=int(X.shape[1]))
    try:
        if "baseline" in cfg:
            scores = _baseline_scores(cfg["baseline"], x_train, x_test, task["seed"])
        else:
            scores = _detector_scores(cfg, x_train, x_test, task["seed"])
        n_bad = int((~np.isfinite(scores)).sum())
        record["n_nonfinite"] = n_bad
        if n_bad:
            # a NaN score ranks nowhere: count it as the least anomalous, which is what a
            # threshold on it does (NaN > t is false)
            scores = np.where(np.isfinite(scores), scores, -np.inf)
            scores = np.where(np.isneginf(scores), np.min(scores[np.isfinite(scores)], initial=0.0) - 1, scores)
        record["auroc"] = float(roc_auc_score(y_test, scores))
        record["ap"] = float(average_precision_score(y_test, scores))
    except Exception as err:  # recorded: a method that fails on a set loses that set
        record["error"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc(limit=4)
        record["auroc"] = record["ap"] = float("nan")
    record["seconds"] = time.perf_counter() - started
    return record


# ----------------------------------------------------------------------------- store
def run_key(task: dict, rows: str) -> str:
    body = json.dumps({"format": STORE_FORMAT, "set": task["set"], "protocol": task["protocol"],
                       "seed": task["seed"], "config": task["config"], "rows": rows}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:20]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def store_path(store: Path, task: dict, key: str) -> Path:
    return store / task["protocol"] / task["set"] / f"{task['label']}-s{task['seed']}-{key}.json"


def write_atomic(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def split_seed(task: dict) -> int:
    """The data split of a run: its seed, or split 0 for every seed of a ``fixed_split`` method
    (then the spread over seeds is the model's alone)."""
    return 0 if task["config"].get("fixed_split") else task["seed"]


def _rows_fingerprint(name: str, protocol: str, seed: int, cache: dict) -> str:
    if (name, protocol, seed) not in cache:
        X, y = load_set(name)
        cache[(name, protocol, seed)] = fingerprint(*split(X, y, protocol, seed))
    return cache[(name, protocol, seed)]


def _worker_init() -> None:
    # benchmark processes (never the library) keep a persistent compilation cache: seeds of
    # the same set compile the same programs
    import jax

    jax.config.update("jax_compilation_cache_dir", str(Path.home() / ".cache" / "vaegmm_jax_suite_xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run_tasks(tasks: list[dict], store: Path, jobs: int, log=print) -> list[dict]:
    """Runs the tasks whose record is not stored yet; returns every record."""
    records, todo = [], []
    fp_cache: dict = {}
    for t in tasks:
        key = run_key(t, _rows_fingerprint(t["set"], t["protocol"], split_seed(t), fp_cache))
        path = store_path(store, t, key)
        if path.exists():
            records.append(json.loads(path.read_text()))
        else:
            todo.append((t, path))
    log(f"{len(records)} runs reused from {store}, {len(todo)} to compute")
    meta = {"commit": _commit(), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
            "date": _dt.date.today().isoformat()}
    if not todo:
        return records
    # big sets first, so the pool does not end on one long run
    todo.sort(key=lambda tp: -os.path.getsize(data_root() / SETS[tp[0]["set"]]))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
        futures = {pool.submit(run_one, t): path for t, path in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            rec = dict(fut.result(), **meta)
            write_atomic(futures[fut], rec)
            records.append(rec)
            err = f"  ERROR {rec['error']}" if "error" in rec else ""
            log(f"[{i}/{len(todo)}] {rec['protocol']:<12} {rec['set']:<11} {rec['label']:<10} seed {rec['seed']}: "
                f"AUROC {rec['auroc']:.3f}  AP {rec['ap']:.3f}  {rec['seconds']:.1f}s{err}")
    return records


# ----------------------------------------------------------------------------- report
def summarise(records: list[dict], labels: list[str], sets: list[str], protocol: str) -> dict:
    """Per method: per-set mean/std AUROC and AP, mean AUROC, mean rank, worst set."""
    import scipy.stats

    cell = {}
    for lab in labels:
        for s in sets:
            rs = [r for r in records if r["label"] == lab and r["set"] == s and r["protocol"] == protocol]
            au = np.array([r["auroc"] for r in rs], float)
            ap = np.array([r["ap"] for r in rs], float)
            cell[lab, s] = {"n": len(rs), "auroc": au.mean() if len(au) else np.nan,
                            "auroc_std": au.std() if len(au) else np.nan, "ap": ap.mean() if len(ap) else np.nan,
                            "seconds": float(np.sum([r["seconds"] for r in rs])),
                            "errors": sum("error" in r for r in rs)}
    table = np.array([[cell[lab, s]["auroc"] for lab in labels] for s in sets])  # (sets, methods)
    filled = np.where(np.isnan(table), 0.0, table)  # a failed method ranks last on that set
    ranks = np.vstack([scipy.stats.rankdata(-row) for row in filled])
    out = {"cell": cell, "table": table}
    for j, lab in enumerate(labels):
        col = table[:, j]
        out[lab] = {"mean_auroc": float(np.nanmean(col)) if np.isfinite(col).any() else np.nan,
                    "mean_ap": float(np.nanmean([cell[lab, s]["ap"] for s in sets])),
                    "mean_rank": float(ranks[:, j].mean()),
                    "mean_std": float(np.nanmean([cell[lab, s]["auroc_std"] for s in sets])),
                    "worst": sets[int(np.nanargmin(col))] if np.isfinite(col).any() else "-",
                    "worst_auroc": float(np.nanmin(col)) if np.isfinite(col).any() else np.nan,
                    "seconds": float(sum(cell[lab, s]["seconds"] for s in sets)),
                    "errors": int(sum(cell[lab, s]["errors"] for s in sets)),
                    "complete": all(cell[lab, s]["n"] > 0 for s in sets)}
    return out


def wtl(summary: dict, a: str, b: str, sets: list[str]) -> str:
    w = t = l = 0
    for s in sets:
        d = summary["cell"][a, s]["auroc"] - summary["cell"][b, s]["auroc"]
        if np.isnan(d):
            continue
        if abs(d) < TIE:
            t += 1
        elif d > 0:
            w += 1
        else:
            l += 1
    return f"{w}/{t}/{l}"


def render(records: list[dict], labels: list[str], sets: list[str], protocols: list[str], header: str = "") -> str:
    lines = [header] if header else []
    baselines = [b for b in BASELINES if b in labels]
    for protocol in protocols:
        sm = summarise(records, labels, sets, protocol)
        lines += [f"### {protocol} protocol: AUROC, mean ± std over seeds", "",
                  "| set | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for i, s in enumerate(sets):
            row = sm["table"][i]
            best = np.nanmax(row) if np.isfinite(row).any() else np.nan
            cells = []
            for lab in labels:
                c = sm["cell"][lab, s]
                if not c["n"]:
                    cells.append("-")
                    continue
                txt = f"{c['auroc']:.3f} ± {c['auroc_std']:.3f}"
                if c["errors"]:
                    txt += f" ({c['errors']} failed)"
                cells.append(f"**{txt}**" if c["auroc"] >= best - 1e-12 else txt)
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines += ["", "| summary | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        lines.append("| mean AUROC | " + " | ".join(f"{sm[l]['mean_auroc']:.3f}" for l in labels) + " |")
        lines.append("| mean AP | " + " | ".join(f"{sm[l]['mean_ap']:.3f}" for l in labels) + " |")
        lines.append("| mean rank | " + " | ".join(f"{sm[l]['mean_rank']:.2f}" for l in labels) + " |")
        lines.append("| mean std over seeds | " + " | ".join(f"{sm[l]['mean_std']:.3f}" for l in labels) + " |")
        lines.append("| worst set | " + " | ".join(f"{sm[l]['worst']} {sm[l]['worst_auroc']:.3f}" for l in labels) + " |")
        for b in baselines:
            lines.append(f"| W/T/L vs {b} | " + " | ".join("-" if l == b else wtl(sm, l, b, sets) for l in labels) + " |")
            gaps = []
            for l in labels:
                d = [sm["cell"][l, s]["auroc"] - sm["cell"][b, s]["auroc"] for s in sets]
                j = int(np.nanargmin(d))
                gaps.append("-" if l == b else f"{d[j]:+.3f} ({sets[j]})")
            lines.append(f"| largest deficit vs {b} | " + " | ".join(gaps) + " |")
        lines.append("| wall time, s (all seeds) | " + " | ".join(f"{sm[l]['seconds']:.0f}" for l in labels) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="all", help="comma-separated set names (default all 19)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--protocols", default="novelty,contaminated")
    p.add_argument("--methods", nargs="+", default=list(METHODS),
                   help="method names (default: the three detectors and the four baselines) or NAME=JSON")
    p.add_argument("--store", type=Path, default=DEFAULT_STORE)
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--stored-only", action="store_true", help="compute nothing; render the stored runs")
    p.add_argument("--out", type=Path, help="write the Markdown report there too")
    args = p.parse_args(argv)
    sets = list(SETS) if args.sets == "all" else args.sets.split(",")
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise SystemExit(f"unknown sets {unknown}; choose from {list(SETS)}")
    protocols = args.protocols.split(",")
    if not set(protocols) <= set(PROTOCOLS):
        raise SystemExit(f"protocols must be among {PROTOCOLS}")
    labels = [method_label(m) for m in args.methods]
    tasks = [dict(set=s, protocol=pr, seed=seed, label=method_label(m), config=method_config(m))
             for pr in protocols for s in sets for m in args.methods for seed in range(args.seeds)]
    started = time.perf_counter()
    if args.stored_only:
        fp: dict = {}
        records = []
        for t in tasks:
            path = store_path(args.store, t, run_key(t, _rows_fingerprint(t["set"], t["protocol"], split_seed(t), fp)))
            if path.exists():
                records.append(json.loads(path.read_text()))
    else:
        records = run_tasks(tasks, args.store, args.jobs, log=lambda m: print(m, file=sys.stderr, flush=True))
    wall = time.perf_counter() - started
    machines = sorted({r.get("machine", "?") for r in records})
    commits = sorted({r.get("commit", "?") for r in records})
    header = (f"suite: {len(sets)} sets, {args.seeds} seeds, {len(records)} runs; made on {', '.join(machines)} at "
              f"commit(s) {', '.join(commits)}; this command took {wall:.0f} s\n")
    report = render(records, labels, sets, protocols, header)
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
