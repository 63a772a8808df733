"""Does a run's final training loss tell its good seeds from its poor ones?

Reads the per-run JSON that ``accuracy.py --json``, ``select_beta.py --json`` or
``select_init.py --json`` writes (``evaluation.run_protocol`` rows, whose ``final_loss``
holds each loss term's mean over the last training epoch) and prints, per detector, the
Spearman rank correlation of every loss term with a metric, and what picking the
lower-loss run of pairs of runs would give:

    python benchmarks/seed_diagnostics.py out/val.json --metric f1

or every cell of a run store (``accuracy.py --store``), one group per data set and detector::

    python benchmarks/seed_diagnostics.py benchmarks/results/run_store --detector "kddcup / DAGMM"

Only training-data quantities are used to rank runs, so a rule read off a validation
JSON can be checked once on a test JSON without tuning on it. The pairing is post hoc:
runs of different seeds also differ in their split, so it shows whether the loss ranks
models, not what restarts on one split would score.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="per-run JSON written by accuracy.py / select_*.py, or a run store folder")
    ap.add_argument("--metric", default="f1", help="run metric to correlate with (default f1)")
    ap.add_argument("--detector", default=None, help="only this detector label (default: every one)")
    return ap.parse_args(argv)


def _read_json(file: Path):
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"{file} is unreadable ({err})") from err


def load_runs(source: str | Path) -> list[dict]:
    """Result rows from a per-run JSON list, or from every record of a run store folder.

    A store record's row is labelled "<data set folder> / <detector>" (plus its settings where
    there are any), so each cell of the store is one group. Store rows come sorted by label, then
    seed; a group holding one seed twice (two configurations under one name) is refused, since the
    pairing of runs would mix them.
    """
    source = Path(source)
    if not source.exists():
        raise SystemExit(f"{source} does not exist (expected a per-run JSON file or a run store folder)")
    if not source.is_dir():
        return _read_json(source)
    runs = []
    # RunStore writes through ".<name>.*.tmp" files, so "*.json" never picks up an interrupted write
    for file in sorted(source.rglob("*.json")):
        rec = _read_json(file)
        if not (isinstance(rec, dict) and "row" in rec and "detector" in rec):
            continue
        label = f"{file.parent.parent.name} / {rec['detector']}"
        if rec.get("settings"):
            label += " " + json.dumps(rec["settings"], sort_keys=True)
        runs.append(dict(rec["row"], label=label, seed=rec["seed"]))
    if not runs:
        raise SystemExit(f"{source} holds no run store records (*.json files with a 'row')")
    seen = set()
    for r in runs:
        if (r["label"], r["seed"]) in seen:
            raise SystemExit(f"{source}: '{r['label']}' holds seed {r['seed']} twice (runs of two configurations "
                             "under one detector name); move one configuration's files to a folder of their own")
        seen.add((r["label"], r["seed"]))
    return sorted(runs, key=lambda r: (r["label"], r["seed"]))


def correlations(runs: list[dict], metric: str) -> dict[str, tuple[float, float]]:
    """{loss term: (Spearman rho, two-sided p)} of the final loss terms with ``metric``.

    Args:
      runs: R result rows with ``final_loss`` and ``metric``; runs that failed are dropped.
    """
    good = [r for r in runs if r.get("ok", True) and "final_loss" in r]
    y = np.asarray([r[metric] for r in good], np.float64)
    out = {}
    for term in good[0]["final_loss"] if good else ():
        v = np.asarray([r["final_loss"][term] for r in good], np.float64)
        if np.ptp(v) == 0 or len(v) < 3:
            continue  # a constant term (e.g. DAGMM's KL) has no rank
        rho, p = spearmanr(v, y)
        out[term] = (float(rho), float(p))
    return out


def pick_lower(runs: list[dict], term: str, metric: str) -> tuple[float, float, float]:
    """Pairs consecutive runs (0, 1), (2, 3), ...; per pair keeps the run with the lower ``term``.

    Returns:
      (mean metric of the kept runs, mean of all runs, mean of the better run of each pair).
    """
    good = [r for r in runs if r.get("ok", True) and "final_loss" in r]
    pairs = [(good[i], good[i + 1]) for i in range(0, len(good) - 1, 2)]
    kept = [min(p, key=lambda r: r["final_loss"][term])[metric] for p in pairs]
    best = [max(a[metric], b[metric]) for a, b in pairs]
    return float(np.mean(kept)), float(np.mean([r[metric] for r in good])), float(np.mean(best))


def main(argv=None) -> int:
    args = parse_args(argv)
    runs = load_runs(args.source)
    labels = sorted({r.get("label", r["detector"]) for r in runs})
    for label in labels:
        if args.detector and label != args.detector:
            continue
        rows = [r for r in runs if r.get("label", r["detector"]) == label and "final_loss" in r]
        if len(rows) < 3:
            continue
        print(f"## {label}: {len(rows)} runs, {args.metric} per seed "
              + ", ".join(f"{r['seed']}: {r[args.metric]:.3f}" for r in rows))
        print(f"| loss term | Spearman rho with {args.metric} | p | lower of each pair | all runs | better of each pair |")
        print("|---|---|---|---|---|---|")
        for term, (rho, p) in correlations(rows, args.metric).items():
            kept, mean, best = pick_lower(rows, term, args.metric)
            print(f"| {term} | {rho:+.2f} | {p:.3f} | {kept:.3f} | {mean:.3f} | {best:.3f} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
