"""The detector shell shared by every model, and the public extension interface.

A detector is a thin class over the engine (:mod:`vaegmm_jax.detectors.fit_driver`,
:mod:`vaegmm_jax.detectors.score_driver`) and a pure model (:mod:`vaegmm_jax.models`). A new
detector subclasses :class:`BaseDetector` and provides:

- ``build_model(x_sample)``: sets ``self.model``, an object with ``init(key, x) -> params``;
- ``training_objective(X, fit_kwargs) -> training.Objective``: the loss on the scaled rows;
- ``score_chunk_fn(n_samples, output=None)``: the pure per-chunk score
  ``fn(params, state, x (C, *S), offset, key) -> (C,)``;
- ``_own_config()`` / ``_own_kwargs(config)``: its settings as JSON and back (checkpoints);
- ``fit(X, ..., **run)``: its own settings, then ``self._fit(X, fit_kwargs, **run)`` (``run``:
  :class:`~vaegmm_jax.detectors.fit_driver.FitRun`, the engine's arguments every detector takes);

and optionally ``reconstruct`` (for ``fit(log_metric=...)``), ``score_state``,
``n_score_samples``, ``after_fit_compiler``/``after_fit`` (state fixed from the training data
after training, e.g. the mixture), ``validate_input`` and ``extra_arrays``/``set_extra_arrays``
(arrays beyond the parameters that a checkpoint keeps). ``tests/test_extension.py`` builds one.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vaegmm_jax._version import __version__
from vaegmm_jax.core import scaling
from vaegmm_jax.core import vae as vae_lib
from vaegmm_jax.detectors.fit_driver import FitDriver, FitRun, NonFiniteLossError
from vaegmm_jax.detectors.score_driver import ScoreDriver
from vaegmm_jax.engine import members, parallel, training
from vaegmm_jax.engine.config import CompileOptions, default_optimizer
from vaegmm_jax.engine.validation import NotFittedError, check_array
from vaegmm_jax.io.checkpoint import save_detector


def check_scaler_arg(scaler) -> str | None:
    """The ``scaler`` constructor argument: 'auto', a kind of :mod:`vaegmm_jax.core.scaling`, or None."""
    if scaler == "auto":
        return scaler
    return scaling.check_kind(scaler, "scaler (or 'auto')")


class BaseDetector(FitDriver, ScoreDriver):
    """Shared detector behaviour. Not used directly."""

    #: names of the loss terms recorded in the history, in order.
    loss_terms: tuple[str, ...] = ("total",)

    def __init__(self, threshold: float | None = None, seed: int | Sequence[int] = 0, data_type: str | None = None,
                 scaler: str | None = "auto", n_members: int | None = None, devices: Sequence[jax.Device] | None = None):
        if threshold is not None and not np.isfinite(float(threshold)):
            raise ValueError(f"threshold must be a finite number or None, got {threshold!r}")
        self.threshold = None if threshold is None else float(threshold)
        #: the members' seeds (member i is the model a single detector with seed member_seeds[i] trains)
        self.member_seeds = members.member_seeds(seed, n_members)
        #: M, the number of independently seeded members (1: a single model)
        self.n_members = len(self.member_seeds)
        #: each member's median score and interquartile range on the training rows (M > 1),
        #: {'center': (M,), 'scale': (M,)}: the ensemble score is the mean of the standardised scores
        self.member_calibration: dict[str, np.ndarray] | None = None
        #: per member: the 0-based epoch of its first non-finite step (-1: none), after fit
        self.member_failed_epoch = np.full(self.n_members, -1, np.int64)
        #: per member: whether its after-fit state (the mixture) is finite, after fit
        self.member_after_fit_ok = np.ones(self.n_members, bool)
        #: {term: [[value per member] per epoch]} for M > 1 (NaN once a member failed)
        self.member_history: dict[str, list[list[float]]] = {}
        #: the requested input scaling ('auto', 'standard', 'minmax', 'robust' or None)
        self.scaler_kind = check_scaler_arg(scaler)
        #: the fitted scaling (a :class:`vaegmm_jax.core.scaling.Scaler`), set by fit
        self.scaler: scaling.Scaler | None = None
        self.seed = self.member_seeds[0]
        self.data_type = data_type
        self.input_shape: tuple[int, ...] | None = None  # one row's shape, set by fit
        self.params = None
        self.model = None
        #: the reconstruction likelihood's covariance fixed from the training rows (cov_elbo), if any
        self.recon_cov: vae_lib.ReconCovariance | None = None
        self.history: dict[str, list[float]] = {}
        #: wall-clock seconds of each epoch of the last fit (the first includes compilation)
        self.epoch_seconds: list[float] = []
        #: wall-clock seconds of each jitted training call (FitOptions.epochs_per_call epochs each)
        self.call_seconds: list[float] = []
        # setup (compiling the epoch and init programs included), epochs, after_fit_compile_wait (the
        # after-fit programs compile while the epochs run; what a short fit still waits), after_fit, total
        self.fit_seconds: dict[str, float] = {}
        self.epochs_done = 0
        self.opt_state = None  # optax state of the last fit (saved in checkpoints)
        self.fit_config: dict[str, Any] = {}
        self._score_jit: dict = {}
        self._score_ahead: dict = {}  # score programs compiled during fit: {(jit cache key, chunk rows): Compiled}
        self._devices = parallel.check_devices(devices)
        self.meta = {
            "name": type(self).__name__,
            "detector_type": "outlier",
            "data_type": data_type,
            "online": False,
            "version": __version__,
        }

    @property
    def devices(self) -> tuple[jax.Device, ...] | None:
        """The devices fit and score split rows (or members) over; None: all local devices.
        Devices of several processes (``jax.devices()``) make fit train across them. A setting
        (constructor ``devices=``, saved in checkpoints); assigning it drops compiled programs."""
        return self._devices

    @devices.setter
    def devices(self, devices: Sequence[jax.Device] | None) -> None:
        self._devices = parallel.check_devices(devices)
        self.clear_compiled()

    # -- the extension interface: what a detector provides to the engine ------------------
    def build_model(self, x_sample: np.ndarray) -> None:
        """Creates ``self.model`` for rows shaped like x_sample (B, *S) (nothing if it exists)."""
        raise NotImplementedError

    def training_objective(self, X: np.ndarray, fit_kwargs: dict) -> training.Objective:
        """The loss to minimise on the (scaled) training rows X (N, *S) with the fit's keyword
        settings: ``Objective(loss_fn(params, x, row_weights, key) -> (total, terms), recon_cov)``."""
        raise NotImplementedError

    def reconstruct(self, params, x: jax.Array, key: jax.Array) -> jax.Array:
        """x (B, *S) -> its reconstruction (B, *S) (for ``fit(log_metric=...)``)."""
        raise NotImplementedError

    def after_fit_compiler(self, X: jax.Array, batch_size: int, params_like, member_data: bool,
                           compile_options: CompileOptions) -> Callable | None:
        """Optionally, a no-argument function that compiles the after-fit program for the
        device-resident training set X ((N, *S), or (M, N, *S) with ``member_data``); fit runs it
        in a background thread while the epochs train and passes the result to
        :meth:`after_fit` as ``compiled``. ``compile_options``: the fit's
        (:class:`~vaegmm_jax.engine.config.CompileOptions`; ``run_once`` holds the XLA options of
        programs that run once, ``compiles_score_ahead()`` whether to compile the score program too)."""
        return None

    def after_fit(self, X: jax.Array, batch_size: int, compiled: Callable | None, member_data: bool,
                  strict: bool, compiler_options) -> np.ndarray:
        """Fixes any state that scoring needs (e.g. the mixture) from the training data, for
        every member. Returns ([M],) bool: the member's state is usable; ``strict`` raises instead."""
        return np.ones(self.n_members, bool)

    def score_chunk_fn(self, n_samples: int, output=None) -> Callable:
        """fn(params, state, x (C, *S), offset (), key) -> (C, ...) scores (pure): ``output`` None
        is the instance score (C,); a detector may define others (the VAE's feature scores)."""
        raise NotImplementedError

    def score_state(self) -> Any:
        """State beyond params that scoring needs (a pytree), e.g. the mixture."""
        return None

    def n_score_samples(self) -> int:
        """L, the latent samples a score averages over."""
        return 1

    def validate_input(self, X, name: str = "X", min_rows: int = 1, check_finite: bool = True) -> np.ndarray:
        """X checked (shape, dtype, and unless told not to, finite) and as an array; raises
        ValueError naming the problem. (Scoring checks finiteness on the device instead.)"""
        return check_array(X, name=name, row_shape=self.input_shape, min_rows=min_rows, check_finite=check_finite)

    def resolved_scaler_kind(self, X) -> str | None:
        """The scaling fit uses for X: ``scaler`` itself, or for 'auto' 'standard' on
        tabular rows (N, F) and none on images (pixels keep their range)."""
        if self.scaler_kind != "auto":
            return self.scaler_kind
        return "standard" if np.ndim(X) == 2 else None

    def _fit_scaler(self, X: np.ndarray) -> np.ndarray:
        """Fits the input scaling on a fresh fit (a warm start keeps the one the model
        learnt with) and returns X scaled (float32), or X itself without scaling."""
        if self.params is None:
            kind = self.resolved_scaler_kind(X)
            self.scaler = None if kind is None else scaling.fit_scaler(X, kind)
        return X if self.scaler is None else scaling.apply_scaler_numpy(self.scaler, X)

    # -- keys ----------------------------------------------------------------------------
    def _key(self, stream: int) -> jax.Array:
        """The first member's key for ``stream`` (the detector's own key when M = 1)."""
        return members.stream_key(self.seed, stream)

    def member_keys(self, stream: int) -> jax.Array:
        """([M,] 2) the members' keys for ``stream`` (no member axis when M = 1)."""
        return members.stream_keys(self.member_seeds, stream)

    # -- scoring -------------------------------------------------------------------------
    def clear_compiled(self) -> None:
        """Drops the compiled score programs (after the parameters or settings they were built
        for change: a load, a new scoring kernel); the next score compiles afresh."""
        self._score_jit = {}
        self._score_ahead = {}

    def check_fitted(self) -> None:
        if self.params is None or self.model is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(X) or load_detector(path) first")

    def params_like(self, input_shape: tuple[int, ...]):
        """The shapes of the parameters (``jax.ShapeDtypeStruct`` leaves, with the leading member
        axis when M > 1) for rows of ``input_shape``: builds the model, initialises nothing."""
        sample = np.zeros((2,) + tuple(input_shape), np.float32)
        self.build_model(sample)
        one = jax.eval_shape(lambda: self.model.init(jax.random.PRNGKey(0), jnp.asarray(sample)))
        return jax.tree.map(lambda a: members.stacked_shape(a, self.n_members), one)

    # -- members -------------------------------------------------------------------------
    def with_seeds(self, seeds: int | Sequence[int]) -> "BaseDetector":
        """An unfitted copy of this (unfitted) detector whose members have ``seeds`` (one per member)."""
        if self.params is not None:
            raise ValueError("with_seeds copies an unfitted detector; this one is fitted")
        det = _copy_unfitted(self)
        det.member_seeds = members.member_seeds(seeds)
        det.n_members, det.seed = len(det.member_seeds), det.member_seeds[0]
        det.member_failed_epoch = np.full(det.n_members, -1, np.int64)
        det.member_after_fit_ok = np.ones(det.n_members, bool)
        return det

    def member(self, i: int) -> "BaseDetector":
        """Member ``i`` as an ordinary fitted one-member detector (``score``, ``predict``, ``save`` work),
        the same as a single detector fitted with seed ``member_seeds[i]``."""
        self.check_fitted()
        i = int(i)
        if not 0 <= i < self.n_members:
            raise IndexError(f"member {i} of a detector with {self.n_members} members")
        det = _copy_unfitted(self)
        det.member_seeds, det.n_members, det.seed = (self.member_seeds[i],), 1, self.member_seeds[i]
        det.model = self.model
        n = self.n_members
        det.params = members.take_member(self.params, i, n)
        det.opt_state = None if self.opt_state is None else members.take_member(self.opt_state, i, n)
        arrays = {name: (members.take_member(tree, i, n) if name in self.member_arrays else tree)
                  for name, tree in self.extra_arrays().items() if name != "member_calibration"}
        det.set_extra_arrays(arrays)
        det.member_calibration = None
        det.fit_config = {k: v for k, v in self.fit_config.items()
                          if k not in ("n_members", "member_data", "member_group_size")}
        if n > 1:
            det.history = {k: [float(row[i]) for row in v if np.isfinite(row[i])] for k, v in self.member_history.items()}
        det.member_history = {}
        failed = int(self.member_failed_epoch[i])
        det.epochs_done = self.epochs_done if failed < 0 else failed
        det.member_failed_epoch = np.asarray([failed], np.int64)
        det.member_after_fit_ok = np.asarray([self.member_after_fit_ok[i]])
        det.clear_compiled()
        return det

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """:func:`vaegmm_jax.save_detector` (self, path)."""
        save_detector(self, path)

    #: constructor arguments that take networks or a whole model (their code is not saved)
    network_args: tuple[str, ...] = ()
    #: the constructor argument that takes a whole model
    model_arg: str | None = None

    def config_dict(self) -> dict:
        """The detector's settings as JSON (what a checkpoint stores to rebuild it): the shared
        ones here, a subclass adds its own (:meth:`_own_config`)."""
        config = {**self._own_config(), "data_type": self.data_type, "seed": self.seed, "scaler": self.scaler_kind}
        if self.n_members > 1:  # one member's checkpoint is what a single detector always wrote
            config.update(n_members=self.n_members, member_seeds=list(self.member_seeds))
        if self.devices is not None:
            config["devices"] = parallel.describe_devices(self.devices)
        return config

    def _own_config(self) -> dict:
        """A subclass's settings for :meth:`config_dict`."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict, **networks) -> "BaseDetector":
        """Rebuilds an unfitted detector from :meth:`config_dict` output.

        Custom networks (or a whole model) are not stored, only their parameters: pass the same
        objects again as keyword arguments. Saved devices that this machine lacks fall back to
        the default (all local devices).
        """
        unknown = set(networks) - set(cls.network_args)
        if unknown:
            raise TypeError(f"unexpected arguments {sorted(unknown)}; allowed: {sorted(cls.network_args)}")
        if cls.model_arg not in networks:
            missing = [n for n, custom in config["custom_nets"].items() if custom and networks.get(n) is None]
            if missing:
                raise ValueError(
                    f"this {cls.__name__} was built with custom networks {missing}; their code is not stored in "
                    f"the checkpoint (only parameters), so pass them again: load_detector(path, {missing[0]}=...)"
                )
        shared = dict(
            data_type=config["data_type"],
            # checkpoints written before ensembles existed hold one model
            seed=config.get("member_seeds", config["seed"]),
            # checkpoints written before the in-detector scaler existed were trained without one
            scaler=config.get("scaler"),
            devices=parallel.find_devices(config.get("devices")),
        )
        return cls(**shared, **cls._own_kwargs(config), **networks)

    @classmethod
    def _own_kwargs(cls, config: dict) -> dict:
        """A subclass's constructor arguments from its :meth:`_own_config` entries."""
        raise NotImplementedError

    #: names of :meth:`extra_arrays` entries that hold one value per member (a leading member
    #: axis when M > 1); the others (input scaling, likelihood scale) are shared
    member_arrays: tuple[str, ...] = ()

    def extra_arrays(self) -> dict[str, Any]:
        """Arrays beyond params to checkpoint (a pytree of arrays): the input scaling and the
        members' calibration."""
        out = {}
        if self.scaler is not None:
            out["scaler"] = {"shift": np.asarray(self.scaler.shift), "scale": np.asarray(self.scaler.scale)}
        if self.member_calibration is not None:
            out["member_calibration"] = dict(self.member_calibration)
        if self.recon_cov is not None:
            out["recon_scale"] = self.recon_cov.scale
        return out

    def set_extra_arrays(self, arrays: dict[str, Any]) -> None:
        if "member_calibration" in arrays:
            self.member_calibration = {k: np.asarray(v, np.float32) for k, v in arrays["member_calibration"].items()}
        if "scaler" in arrays:
            self.scaler = scaling.Scaler(shift=np.asarray(arrays["scaler"]["shift"], np.float32),
                                         scale=np.asarray(arrays["scaler"]["scale"], np.float32))
        if "recon_scale" in arrays and self.fit_config.get("cov_kind"):
            self.recon_cov = vae_lib.ReconCovariance(self.fit_config["cov_kind"], jnp.asarray(arrays["recon_scale"]))


def _copy_unfitted(det: BaseDetector) -> BaseDetector:
    """A copy of ``det``'s configuration and model description without its fitted state."""
    state = {name: getattr(det, name)
             for name in ("params", "opt_state", "_score_jit", "_score_ahead", "history", "member_history")}
    try:
        for name in state:
            setattr(det, name, None if name in ("params", "opt_state") else {})
        # jax Devices cannot be deep-copied: the copy shares them (the ``devices`` attribute)
        clone = copy.deepcopy(det, {id(d): d for d in det.devices or ()})
    finally:
        for name, value in state.items():
            setattr(det, name, value)
    return clone


def cov_elbo_arrays(cov_elbo: dict) -> dict:
    """A stored cov_elbo setting ({'sim': 1.0} or {'cov_full': [[...]]}) with arrays for its lists."""
    return {k: (None if v is None else np.asarray(v)) for k, v in cov_elbo.items()}


def check_cov_elbo(cov_elbo: dict) -> dict:
    """A cov_elbo setting checked and made JSON-able (arrays as lists), as fit records it."""
    if not isinstance(cov_elbo, dict) or len(cov_elbo) != 1:
        raise ValueError(
            f"cov_elbo must be a dict with exactly one of 'sim', 'cov_diag', 'cov_full', got {cov_elbo!r}"
        )
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in cov_elbo.items()}



__all__ = ["BaseDetector", "FitRun", "NonFiniteLossError", "NotFittedError", "default_optimizer", "check_cov_elbo",
           "cov_elbo_arrays"]
