"""scikit-learn (and PyOD-style) estimators over the library's detectors.

Three thin adapters, :class:`VAEGMMOutlierDetector`, :class:`DAGMMOutlierDetector` and
:class:`VAEOutlierDetector`, give :class:`~vaegmm_jax.OutlierVAEGMM`,
:class:`~vaegmm_jax.OutlierAEGMM` and :class:`~vaegmm_jax.OutlierVAE` scikit-learn's
outlier-detector API, so they work in ``Pipeline``, ``ColumnTransformer``, ``GridSearchCV``
(also with ``n_jobs > 1``), ``clone`` and ``joblib``. No model maths lives here: ``fit``
builds the detector from the hyper-parameters and fits it, and every score is the
detector's own ``score``.

Signs (they differ between the libraries):

* ``score_samples(X)``: scikit-learn's, higher = MORE NORMAL (= ``-detector_.score(X)``).
* ``decision_function(X) = score_samples(X) - offset_``: negative = outlying;
  ``predict(X)`` is +1 (inlier) where it is >= 0, -1 (outlier) elsewhere (a score that is not
  a number is never an inlier, as in the detectors).
* ``anomaly_score(X)``: PyOD's and alibi-detect's, higher = MORE ANOMALOUS (= ``-score_samples``);
  PyOD calls it ``decision_function``, which scikit-learn's name already takes here.

``offset_`` (the threshold in scikit-learn's sign): for ``contamination=c`` (a float in
(0, 0.5]) the ``100 c``-th percentile of the training rows' ``score_samples`` (as
IsolationForest), so a fraction ``c`` of the training rows is flagged (up to ties). For
``contamination="auto"`` the same rule with ``c = AUTO_CONTAMINATION = 0.05``: the 95th
percentile of the training anomaly scores, which is the detectors' own
``infer_threshold(X, threshold_perc=95)`` default. (IsolationForest's fixed -0.5 has no
counterpart: these scores have no fixed scale.) The fitted ``detector_`` gets that threshold
too, so ``detector_.predict(X)`` flags the same rows.

PyOD's fitted attributes: ``decision_scores_`` ((N,) training anomaly scores),
``threshold_`` (``= -offset_``, in the anomaly sign) and ``labels_`` ((N,) 1 = outlier,
0 = inlier, ``decision_scores_ > threshold_``).

Pickling (scikit-learn's process-parallel search and joblib need it): the fitted detector
holds jax arrays and compiled functions, which do not pickle, so ``__getstate__`` stores it
as plain data: its class name, one JSON text (``config_dict()``, threshold, input shape,
fit settings, history) and NumPy arrays (the parameters and ``extra_arrays()`` as nested
trees, the form a checkpoint stores them in). ``__setstate__`` rebuilds it with
``from_config`` and restores the parameters against the rebuilt model's tree: scores are
bit-identical to the pickled estimator's. The optimizer state is not kept (scoring does
not need it; a scikit-learn ``fit`` always starts afresh). Nothing jax or Flax is pickled.
"""

from __future__ import annotations

import inspect
import json
from numbers import Integral, Real
from typing import Any

import numpy as np
import optax
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from vaegmm_jax.engine.config import DEFAULT_LEARNING_RATE
from vaegmm_jax.engine.scoring import flag_outliers, percentile_threshold
from vaegmm_jax.detectors.gmm_detectors import SCORE_TYPES as GMM_SCORE_TYPES
from vaegmm_jax.detectors.gmm_detectors import OutlierAEGMM, OutlierVAEGMM
from vaegmm_jax.detectors.loading import DETECTOR_CLASSES
from vaegmm_jax.detectors.vae_detector import SCORE_TYPES as VAE_SCORE_TYPES
from vaegmm_jax.detectors.vae_detector import OutlierVAE
from vaegmm_jax.io.metadata import apply_meta, detector_record, json_default
from vaegmm_jax.io.pytrees import drop_empty, nest_flat_names, restore_like, stored_form

try:
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # scikit-learn < 1.6: the same checks as an estimator method
    def _sk_validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)

#: the contamination ``contamination="auto"`` stands for: offset_ is the 5th percentile of the
#: training rows' score_samples (the 95th of their anomaly scores, the detectors'
#: infer_threshold default)
AUTO_CONTAMINATION = 0.05

#: version of the pickled detector state (``__getstate__``): 2 stores the arrays as nested trees,
#: 1 (still read) stored the parameters flat by tree path; a newer one is refused on load
_STATE_FORMAT = 2
_READABLE_STATE_FORMATS = (1, 2)

_SCALERS = {"auto", "standard", "minmax", "robust"}


class _DetectorEstimator(OutlierMixin, BaseEstimator):
    """The shared adapter (not used directly): fit/score/predict over one detector class."""

    #: the library's detector class the estimator fits
    _detector_class: type

    _parameter_constraints: dict = {
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "hidden": [None, list, tuple],
        "n_members": [Interval(Integral, 1, None, closed="left")],
        "epochs": [None, Interval(Integral, 1, None, closed="left")],
        "batch_size": [None, Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "scaler": [StrOptions(_SCALERS), None],
        # (0, 0.5]: the interval scikit-learn's own check_outlier_contamination asks for
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # -- hooks ---------------------------------------------------------------------------
    def _detector_kwargs(self) -> dict[str, Any]:
        """The detector's constructor arguments (all but the seed) from the hyper-parameters."""
        raise NotImplementedError

    # -- fitting -------------------------------------------------------------------------
    def _seed(self) -> int:
        """The detector seed: ``random_state`` itself when it is an int, 0 for None (so an
        unseeded estimator is still reproducible, unlike most of scikit-learn), and one draw
        from a ``np.random.RandomState`` instance."""
        if self.random_state is None:
            return 0
        if isinstance(self.random_state, Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _contamination(self) -> float:
        return AUTO_CONTAMINATION if isinstance(self.contamination, str) else float(self.contamination)

    def fit(self, X, y=None):
        """Fits a fresh detector on X (rows of inliers, mostly) and sets the threshold.

        Args:
          X: (N, F) array-like or DataFrame, N >= 2, numeric and finite.
          y: ignored (scikit-learn's API).

        Returns:
          self, with ``detector_``, ``offset_``, ``decision_scores_`` (N,), ``threshold_``,
          ``labels_`` (N,), ``history_``, ``n_features_in_`` (and ``feature_names_in_`` for a
          DataFrame).
        """
        self._validate_params()
        # scikit-learn's own validation first, so its error messages (NaN, complex, object,
        # sparse, 1-D, too few rows) are the ones scikit-learn's users and checks expect;
        # the detectors need at least 2 rows (a mixture / a scaling needs a spread)
        X = _sk_validate_data(self, X, dtype=np.float32, ensure_min_samples=2, reset=True)
        detector = self._detector_class(seed=self._seed(), **self._detector_kwargs())
        # Adam at the detectors' default rate is the detectors' own default optimizer: passing
        # None then keeps fit_config (and so checkpoints) what detector.fit alone writes
        rate = float(self.learning_rate)
        optimizer = None if rate == DEFAULT_LEARNING_RATE else optax.adam(rate)
        history = detector.fit(X, optimizer=optimizer, epochs=self.epochs, batch_size=self.batch_size,
                               verbose=bool(self.verbose))
        anomaly = detector.score(X).astype(np.float64)
        contamination = self._contamination()
        # percentile_threshold refuses non-finite training scores with a clear error (never a NaN offset)
        offset = percentile_threshold(-anomaly, 100.0 * contamination)
        self.detector_ = detector
        self.history_ = history
        self.offset_ = float(offset)
        self.threshold_ = -self.offset_
        self.decision_scores_ = anomaly
        self.labels_ = flag_outliers(anomaly, self.threshold_)
        # the alibi-style detector flags exactly the rows predict flags (score > threshold)
        detector.threshold = self.threshold_
        detector.fit_config["threshold_perc"] = 100.0 * (1.0 - contamination)
        return self

    def fit_predict(self, X, y=None, **kwargs):
        """fit(X) then the labels of the training rows, (N,) int +1 inlier / -1 outlier
        (= ``fit(X).predict(X)``, without scoring X twice)."""
        self.fit(X, y, **kwargs)
        return np.where(self.labels_ == 1, -1, 1)

    # -- scoring -------------------------------------------------------------------------
    def _check_X(self, X) -> np.ndarray:
        check_is_fitted(self)
        return _sk_validate_data(self, X, dtype=np.float32, reset=False)

    def score_samples(self, X) -> np.ndarray:
        """(N,) float64 normality scores of X (N, F): higher = more normal (= -detector score)."""
        X = self._check_X(X)  # before detector_ is read: an unfitted estimator raises NotFittedError
        return -self.detector_.score(X).astype(np.float64)

    def anomaly_score(self, X) -> np.ndarray:
        """(N,) float64 anomaly scores of X (N, F) in PyOD's and alibi-detect's sign: higher =
        more anomalous (= -score_samples(X) = detector_.score(X))."""
        X = self._check_X(X)
        return self.detector_.score(X).astype(np.float64)

    def decision_function(self, X) -> np.ndarray:
        """(N,) float64 ``score_samples(X) - offset_``: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """(N,) int labels of X (N, F): +1 inlier, -1 outlier (``decision_function < 0``; a
        score that is not a number is an outlier)."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    # -- tags ----------------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    # -- pickling ------------------------------------------------------------------------
    def __getstate__(self):
        state = super().__getstate__()
        if "detector_" in state:
            state = dict(state, detector_=detector_state(state["detector_"]))
        return state

    def __setstate__(self, state):
        if isinstance(state.get("detector_"), dict):
            state = dict(state, detector_=detector_from_state(state["detector_"]))
        super().__setstate__(state)


class VAEGMMOutlierDetector(_DetectorEstimator):
    """scikit-learn estimator over :class:`~vaegmm_jax.OutlierVAEGMM` (variational autoencoder +
    Gaussian mixture). Defaults are the detector's.

    Args:
      n_gmm: K mixture components.
      latent_dim: d, the latent size.
      hidden: widths of the default encoder's hidden layers (decoder mirrored), or None for
        the DAGMM shape scaled to the data.
      samples: L latent samples per row when scoring.
      beta: KL weight.
      score_type: 'energy_recon' (default) or 'energy' (the paper's sample energy).
      scaler: input scaling fitted on the training rows: 'auto' ('standard' for tables),
        'standard', 'minmax', 'robust' or None.
      n_members: M independently seeded members (seeds random_state + i), averaged.
      epochs, batch_size: training length and minibatch (None: about 2,000 optimizer steps,
        batches of 128).
      learning_rate: Adam's step size.
      contamination: 'auto' (= 0.05, see the module docstring) or the fraction of training
        rows flagged, in (0, 0.5].
      random_state: int seed, None (seed 0: unlike most of scikit-learn, an unseeded
        estimator is reproducible) or a ``np.random.RandomState`` (one int is drawn).
      verbose: a per-epoch progress bar on a terminal.

    Fitted attributes: ``detector_`` (the fitted OutlierVAEGMM), ``offset_``,
    ``decision_scores_`` (N,), ``threshold_``, ``labels_`` (N,), ``history_`` (loss per
    epoch), ``n_features_in_``, ``feature_names_in_`` (DataFrames).
    """

    _detector_class = OutlierVAEGMM
    _parameter_constraints: dict = {
        **_DetectorEstimator._parameter_constraints,
        "n_gmm": [Interval(Integral, 1, None, closed="left")],
        "samples": [Interval(Integral, 1, None, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "score_type": [StrOptions(set(GMM_SCORE_TYPES))],
    }

    def __init__(self, n_gmm: int = 2, latent_dim: int = 2, hidden: tuple[int, ...] | None = None,
                 samples: int = 10, beta: float = 1.0, score_type: str = "energy_recon",
                 scaler: str | None = "auto", n_members: int = 1, epochs: int | None = None,
                 batch_size: int | None = None, learning_rate: float = DEFAULT_LEARNING_RATE,
                 contamination: str | float = "auto", random_state=None, verbose: bool = False):
        _keep_hyper_parameters(self, locals())

    def _detector_kwargs(self) -> dict[str, Any]:
        return dict(n_gmm=self.n_gmm, latent_dim=self.latent_dim, hidden=_hidden(self.hidden), samples=self.samples,
                    beta=self.beta, score_type=self.score_type, scaler=self.scaler, n_members=self.n_members)


class DAGMMOutlierDetector(_DetectorEstimator):
    """scikit-learn estimator over :class:`~vaegmm_jax.OutlierAEGMM` (DAGMM: a deterministic
    autoencoder + Gaussian mixture). Arguments as :class:`VAEGMMOutlierDetector` without
    ``samples`` and ``beta`` (the latent is not sampled: scores need no samples)."""

    _detector_class = OutlierAEGMM
    _parameter_constraints: dict = {
        **_DetectorEstimator._parameter_constraints,
        "n_gmm": [Interval(Integral, 1, None, closed="left")],
        "score_type": [StrOptions(set(GMM_SCORE_TYPES))],
    }

    def __init__(self, n_gmm: int = 2, latent_dim: int = 2, hidden: tuple[int, ...] | None = None,
                 score_type: str = "energy_recon", scaler: str | None = "auto", n_members: int = 1,
                 epochs: int | None = None, batch_size: int | None = None,
                 learning_rate: float = DEFAULT_LEARNING_RATE, contamination: str | float = "auto",
                 random_state=None, verbose: bool = False):
        _keep_hyper_parameters(self, locals())

    def _detector_kwargs(self) -> dict[str, Any]:
        return dict(n_gmm=self.n_gmm, latent_dim=self.latent_dim, hidden=_hidden(self.hidden),
                    score_type=self.score_type, scaler=self.scaler, n_members=self.n_members)


class VAEOutlierDetector(_DetectorEstimator):
    """scikit-learn estimator over :class:`~vaegmm_jax.OutlierVAE` (a variational autoencoder).

    Arguments as :class:`VAEGMMOutlierDetector` without ``n_gmm``; ``score_type`` is the
    VAE's: 'mse' (default, alibi-detect's), 'recon_prob' (An & Cho) or 'recon_prob_mean'.
    The Gaussian likelihood is used (tables need no [0, 1] pixels).
    """

    _detector_class = OutlierVAE
    _parameter_constraints: dict = {
        **_DetectorEstimator._parameter_constraints,
        "samples": [Interval(Integral, 1, None, closed="left")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "score_type": [StrOptions(set(VAE_SCORE_TYPES))],
    }

    def __init__(self, latent_dim: int = 2, hidden: tuple[int, ...] | None = None, samples: int = 10,
                 beta: float = 1.0, score_type: str = "mse", scaler: str | None = "auto", n_members: int = 1,
                 epochs: int | None = None, batch_size: int | None = None,
                 learning_rate: float = DEFAULT_LEARNING_RATE, contamination: str | float = "auto",
                 random_state=None, verbose: bool = False):
        _keep_hyper_parameters(self, locals())

    def _detector_kwargs(self) -> dict[str, Any]:
        return dict(latent_dim=self.latent_dim, hidden=_hidden(self.hidden), samples=self.samples, beta=self.beta,
                    score_type=self.score_type, scaler=self.scaler, n_members=self.n_members)


def _keep_hyper_parameters(estimator, arguments: dict[str, Any]) -> None:
    """Sets every argument of the estimator's ``__init__`` (``arguments``: its ``locals()``) as
    the attribute of the same name, unchanged: scikit-learn's rule, ``get_params`` reads them
    back by the signature's names (and ``clone`` checks they are the very objects passed)."""
    for name in inspect.signature(type(estimator).__init__).parameters:
        if name != "self":
            setattr(estimator, name, arguments[name])


def _hidden(hidden):
    """A copy of ``hidden`` for the detector (the estimator's own value stays unchanged)."""
    return None if hidden is None else tuple(hidden)


# --------------------------------------------------------------------------- #
# The fitted detector as plain data (pickling)
# --------------------------------------------------------------------------- #

def detector_state(detector) -> dict[str, Any]:
    """A fitted detector as plain data: {'format', 'detector' (class name), 'json' (one JSON
    text: config, threshold, input shape, fit settings, history, member records), 'arrays'
    ({'params': the parameters, 'extra': ``extra_arrays()``}, each as nested dicts and lists
    of np.ndarray: a checkpoint's stored form, see :mod:`vaegmm_jax.io.pytrees`)}.

    No jax array, compiled function or Flax module is in it, so it pickles anywhere.
    """
    name = type(detector).__name__
    if DETECTOR_CLASSES.get(name) is not type(detector):
        raise TypeError(f"cannot store a {name}: only {sorted(DETECTOR_CLASSES)} are supported")
    if detector.params is None or detector.input_shape is None:
        raise ValueError(f"the {name} is not fitted: there is nothing to store")
    return {
        "format": _STATE_FORMAT,
        "detector": name,
        "json": json.dumps(detector_record(detector, with_members=True), default=json_default),
        "arrays": {"params": stored_form(detector.params),
                   "extra": stored_form(drop_empty(detector.extra_arrays())) or {}},
    }


def detector_from_state(state: dict[str, Any]):
    """The detector :func:`detector_state` stored, rebuilt with ``from_config`` and its arrays
    set: its scores are bit-identical to the stored detector's."""
    if state.get("format") not in _READABLE_STATE_FORMATS:
        raise ValueError(f"stored detector state has format {state.get('format')!r}; this library reads "
                         f"formats {' and '.join(map(str, _READABLE_STATE_FORMATS))}")
    cls = DETECTOR_CLASSES.get(state.get("detector"))
    if cls is None:
        raise ValueError(f"stored detector state names the class {state.get('detector')!r}, not one of "
                         f"{sorted(DETECTOR_CLASSES)}")
    record = json.loads(state["json"])
    det = cls.from_config(record["config"])
    if state["format"] == 1:  # the parameters flat by tree path ('params/encoder/...')
        params, extra = nest_flat_names(state["params"], "params"), state["extra"]
    else:
        params, extra = state["arrays"]["params"], state["arrays"]["extra"]
    # the same pieces a checkpoint load uses: settings first (set_extra_arrays reads fit_config,
    # the likelihood covariance's kind), then the arrays into the rebuilt model's tree
    apply_meta(det, record)
    det.params = restore_like(det.params_like(det.input_shape), params, "params", where="the pickled estimator",
                              expects="the model that its configuration describes")
    det.set_extra_arrays(extra)
    det.clear_compiled()
    return det


__all__ = ["AUTO_CONTAMINATION", "DAGMMOutlierDetector", "VAEGMMOutlierDetector", "VAEOutlierDetector",
           "detector_from_state", "detector_state"]
