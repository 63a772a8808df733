"""Measuring detectors: metrics, the accuracy protocols, multi-seed runs and plots.

Modules, inner first: :mod:`~vaegmm_jax.evaluation.metrics` (precision / recall / F1 at a
threshold, AUROC, AP), :mod:`~vaegmm_jax.evaluation.multiseed` (many seeds as one program),
:mod:`~vaegmm_jax.evaluation.splits` (seeded stratified splits),
:mod:`~vaegmm_jax.evaluation.run_data` (a protocol's runs: rows, scaling, fingerprint),
:mod:`~vaegmm_jax.evaluation.protocols` (the paper protocols),
:mod:`~vaegmm_jax.evaluation.specs` (the detectors to train),
:mod:`~vaegmm_jax.evaluation.running` (train, score, threshold, summarise) and
:mod:`~vaegmm_jax.evaluation.plots` (figures; not imported here, it loads matplotlib).
The public names of all but metrics and plots are here too (``__all__``: theirs).
"""

from vaegmm_jax.evaluation import multiseed, protocols, run_data, running, specs, splits
from vaegmm_jax.evaluation.multiseed import MultiSeedFit, fit_many, score_many
from vaegmm_jax.evaluation.protocols import (
    SCALINGS,
    alibi_kdd_runs,
    contaminated_mnist_runs,
    dagmm_runs,
    dagmm_validation_runs,
)
from vaegmm_jax.evaluation.run_data import FINGERPRINT_KIND_WORDS, RunData, fit_run_scalings, transform_definition
from vaegmm_jax.evaluation.running import last_finite, pick_restarts, run_protocol, summarize, threshold_metrics
from vaegmm_jax.evaluation.specs import (
    RESTART_SEED_STRIDE,
    DetectorSpec,
    dagmm_spec,
    isolation_forest_spec,
    random_init_spec,
    vae_spec,
    vaegmm_spec,
)
from vaegmm_jax.evaluation.splits import (
    Split,
    create_outlier_batch,
    dagmm_split,
    dagmm_validation_split,
    stratified_split,
)

__all__ = [*multiseed.__all__, *splits.__all__, *run_data.__all__, *protocols.__all__, *specs.__all__,
           *running.__all__]
