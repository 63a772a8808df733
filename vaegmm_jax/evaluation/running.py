"""Running a protocol: train a detector spec on every run of a RunData, score, threshold, summarise."""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np
from joblib import Parallel, delayed

from vaegmm_jax.evaluation import metrics, multiseed
from vaegmm_jax.evaluation.run_data import RunData
from vaegmm_jax.evaluation.specs import RESTART_SEED_STRIDE, DetectorSpec

__all__ = ["run_protocol", "threshold_metrics", "pick_restarts", "last_finite", "summarize"]


def threshold_metrics(rule: str, perc: float | None, scores: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    """One run's metrics on its 'test' set, flagged with the threshold of ``rule`` (:attr:`RunData.threshold_rule`).

    Args:
      rule: 'ratio', 'percentile' (with ``perc``) or 'f1_val'.
      perc: the percentile of the 'threshold' set's scores, for 'percentile'.
      scores: {eval set name: (n,) scores, higher = more anomalous}.
      labels: {eval set name: (n,) binary labels, 1 = anomaly}.

    Returns:
      {'precision', 'recall', 'f1', 'auroc', 'ap', 'threshold'} as floats.
    """
    s_test, y_test = scores["test"], labels["test"]
    if rule == "ratio":
        ratio = float(y_test.mean())
        prf = metrics.precision_recall_f1_at_ratio(s_test, y_test, ratio)
        threshold = metrics.threshold_at_ratio(s_test, ratio)
    elif rule == "percentile":
        threshold = float(np.percentile(scores["threshold"], perc))
        prf = metrics.precision_recall_f1(y_test, (s_test > threshold).astype(np.int64))
    elif rule == "f1_val":
        threshold, _ = metrics.f1_optimal_threshold(labels["val"], scores["val"])
        prf = metrics.precision_recall_f1(y_test, (s_test >= threshold).astype(np.int64))
    else:
        raise ValueError(f"unknown threshold rule {rule!r}")
    return {
        "precision": prf.precision, "recall": prf.recall, "f1": prf.f1,
        "auroc": metrics.auroc(y_test, s_test), "ap": metrics.average_precision(y_test, s_test),
        "threshold": float(threshold),
    }


#: the metrics of :func:`threshold_metrics`, NaN for a failed run
_METRIC_NAMES = ("precision", "recall", "f1", "auroc", "ap", "threshold")


def _sklearn_scores(data: RunData, spec: DetectorSpec, n_jobs: int | None) -> tuple[list[dict], float]:
    """Per-seed {eval name: (n,) scores} for a sklearn estimator (runs in parallel threads), and the wall seconds."""
    def flat(a):
        return a.reshape(a.shape[0], -1)

    def one(i):
        est = spec.sklearn_factory(data.seeds[i])
        est.fit(flat(data.host("train", i)))
        return {k: -est.score_samples(flat(data.host(k, i))).astype(np.float64) for k in data.evals}

    t0 = time.perf_counter()
    jobs = n_jobs if n_jobs is not None else min(data.n_seeds, os.cpu_count() or 1)
    out = Parallel(n_jobs=jobs, prefer="threads")(delayed(one)(i) for i in range(data.n_seeds))
    return out, time.perf_counter() - t0


def _detector_scores(data: RunData, spec: DetectorSpec):
    """Trains and scores a vaegmm_jax detector spec on every run as one program (restarts included).

    Returns:
      per_seed: S dicts {eval name: (n,) scores} of each run's picked model;
      wall: seconds for training and scoring;
      ok: (S,) bool, the picked model trained without a non-finite step and has a valid mixture;
      epochs: epochs trained;
      timing: {fit_wall_s, first_call_s, epochs_per_call, steady_epoch_ms, mixture_s};
      per_seed_rows: S dicts of each run's failed_epoch, final_loss (and restart, restart_losses).
    """
    restarts = int(spec.restarts)
    if restarts > 1:  # a wrong name fails before the training, not after it
        terms = tuple(spec.factory(data.seeds[0]).loss_terms)
        if spec.restart_select not in terms:
            raise ValueError(f"restart_select must be a loss term of the detector, one of {sorted(terms)}; "
                             f"got {spec.restart_select!r}")

    def tiled(name):  # (S * restarts, n, *R): restart r of run i at r * S + i
        x = data.device(name)
        return x if restarts == 1 else jnp.concatenate([x] * restarts, axis=0)

    model_seeds = [s + RESTART_SEED_STRIDE * r for r in range(restarts) for s in data.seeds]
    t0 = time.perf_counter()
    fit = multiseed.fit_many(
        spec.factory, tiled("train"), model_seeds, per_seed_data=True,
        epochs_per_call=spec.epochs_per_call, seed_batch_size=spec.seed_batch_size, **spec.fit_args,
    )
    all_scores = {
        k: multiseed.score_many(fit, tiled(k), per_seed_data=True, chunk_size=spec.score_chunk)
        for k in data.evals
    }
    wall = time.perf_counter() - t0
    chosen = pick_restarts(fit, data.n_seeds, restarts, spec.restart_select)
    per_seed = [{k: v[j] for k, v in all_scores.items()} for j in chosen]
    steady = fit.call_s[1:]
    timing = {
        "fit_wall_s": fit.wall_s,
        "first_call_s": fit.call_s[0] if fit.call_s else 0.0,
        "epochs_per_call": fit.epochs_per_call,
        "steady_epoch_ms": 1e3 * float(np.mean(steady)) / fit.epochs_per_call if steady else None,
        "mixture_s": fit.mixture_s,
    }
    per_seed_rows = []
    for i, j in enumerate(chosen):
        row = {"failed_epoch": int(fit.failed_epoch[j]),
               "final_loss": {term: last_finite(h[j]) for term, h in fit.history.items()}}
        if restarts > 1:
            row["restart"] = int(j // data.n_seeds)
            row["restart_losses"] = [last_finite(fit.history[spec.restart_select][i + r * data.n_seeds])
                                     for r in range(restarts)]
        per_seed_rows.append(row)
    return per_seed, wall, fit.ok[chosen], fit.epochs, timing, per_seed_rows


def run_protocol(data: RunData, spec: DetectorSpec, *, n_jobs: int | None = None) -> list[dict]:
    """Trains ``spec`` on every run of ``data`` and evaluates it.

    vaegmm_jax detectors train all seeds as one vmapped program
    (:func:`vaegmm_jax.evaluation.multiseed.fit_many` with per-seed data, gathered and scaled on
    the device) and score likewise; a sklearn estimator runs the seeds in parallel threads.

    Args:
      data: from :func:`~vaegmm_jax.evaluation.protocols.dagmm_runs`,
        :func:`~vaegmm_jax.evaluation.protocols.alibi_kdd_runs` or
        :func:`~vaegmm_jax.evaluation.protocols.contaminated_mnist_runs`.
      spec: the detector.
      n_jobs: threads for sklearn estimators (default: one per seed, at most the CPU count).

    Returns:
      One dict per seed: protocol, dataset, detector, seed, precision, recall, f1, auroc,
      ap, threshold, ok (False: training diverged, the mixture is invalid or a score
      is not finite; metrics NaN), wall_s (the batch's wall time / S), batch_wall_s,
      n_train, n_test, test_anomaly_ratio, epochs, contamination; for vaegmm_jax
      detectors also failed_epoch and final_loss ({loss term: its mean over the last
      epoch that finished, NaN if none}: training data only, so it may pick among runs),
      and with ``spec.restarts`` > 1 the picked restart and every restart's selecting loss.
    """
    if spec.factory is not None:
        per_seed, wall, ok, epochs, timing, per_seed_rows = _detector_scores(data, spec)
    elif spec.sklearn_factory is not None:
        per_seed, wall = _sklearn_scores(data, spec, n_jobs)
        ok, epochs, timing, per_seed_rows = np.ones(data.n_seeds, bool), None, {}, [{}] * data.n_seeds
    else:
        raise ValueError(f"detector spec {spec.name!r} has neither factory nor sklearn_factory")

    results = []
    for i, seed in enumerate(data.seeds):
        sc = per_seed[i]
        labels = {k: data.labels(k)[i] for k in data.evals}
        good = bool(ok[i]) and all(np.isfinite(v).all() for v in sc.values())
        if good:
            m = threshold_metrics(data.threshold_rule, data.threshold_perc, sc, labels)
        else:
            m = {k: float("nan") for k in _METRIC_NAMES}
        results.append({
            "protocol": data.protocol, "dataset": data.dataset, "detector": spec.name, "seed": int(seed),
            **m, "ok": good, "wall_s": wall / data.n_seeds, "batch_wall_s": wall,
            "n_train": data.n_train, "n_test": int(labels["test"].shape[0]),
            "test_anomaly_ratio": float(labels["test"].mean()), "epochs": epochs,
            "contamination": data.info.get("contamination", 0.0), **timing, **per_seed_rows[i],
        })
    return results


def pick_restarts(fit, n_runs: int, restarts: int, term: str) -> np.ndarray:
    """(n_runs,) index into ``fit``'s models: per run, the finished restart with the lowest final ``term``.

    Model ``r * n_runs + i`` is restart r of run i. A restart that failed (``fit.ok``
    False) is never picked unless all of the run's restarts failed (then restart 0,
    which reports the failure). With one restart, run i is model i, whatever loss terms the
    detector has (a VAE has no energy).
    """
    chosen = np.arange(n_runs)
    if restarts == 1:
        return chosen
    for i in range(n_runs):
        cands = [i + r * n_runs for r in range(restarts)]
        vals = [last_finite(fit.history[term][j]) if fit.ok[j] else np.nan for j in cands]
        if np.isfinite(vals).any():
            chosen[i] = cands[int(np.nanargmin(vals))]
    return chosen


def last_finite(values: np.ndarray) -> float:
    """The last finite entry of a 1-D history, NaN if none."""
    finite = np.flatnonzero(np.isfinite(values))
    return float(values[finite[-1]]) if finite.size else float("nan")


def summarize(results: Sequence[dict], keys: Sequence[str] = ("precision", "recall", "f1", "auroc", "ap")) -> dict:
    """Mean and standard deviation (ddof=1) over the runs that are ``ok``.

    Returns:
      {key: (mean, std)} plus 'n_runs', 'n_failed', 'wall_s' (total of the batch) and 'wall_s_per_run'.
    """
    good = [r for r in results if r.get("ok", True)]
    out: dict[str, Any] = {"n_runs": len(results), "n_failed": len(results) - len(good)}
    for k in keys:
        vals = np.asarray([r[k] for r in good], dtype=np.float64)
        if vals.size == 0:
            out[k] = (float("nan"), float("nan"))
        else:
            out[k] = (float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0)
    if results:
        out["wall_s"] = float(results[0].get("batch_wall_s", sum(r["wall_s"] for r in results)))
        out["wall_s_per_run"] = out["wall_s"] / len(results)
    return out
