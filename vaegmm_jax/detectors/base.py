"""The detector shell shared by every model: validation, the fit driver, chunked
scoring, thresholds, alibi-detect's predict dict, checkpoint hooks.

Subclasses say only what differs between models (how to build the model, its loss,
its per-chunk score, and any state fixed after training such as the mixture).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaegmm_jax import parallel, training
from vaegmm_jax.core import scaling
from vaegmm_jax.streaming import effective_chunk_size, map_chunks
from vaegmm_jax.validation import NotFittedError, check_array, check_positive_int

#: rows per scoring chunk (padded, fixed shape) when none is given: small enough to stay
#: in CPU caches (the L decoded samples of a 2k-row chunk are ~10 MB), large enough to
#: fill an accelerator. Bounds device and host memory either way.
DEFAULT_SCORE_BATCH = None
#: a fixed chunk for callers that need a number (multi-seed scoring)
FIXED_SCORE_BATCH = 16384
_CPU_SCORE_BATCH, _ACCELERATOR_SCORE_BATCH = 2048, 262_144


def default_score_batch() -> int:
    """The default scoring chunk for the default backend (2048 rows on CPU, 262,144 on GPU/TPU)."""
    return _CPU_SCORE_BATCH if jax.default_backend() == "cpu" else _ACCELERATOR_SCORE_BATCH

# Independent PRNG streams derived from the detector seed.
_STREAM_INIT, _STREAM_TRAIN, _STREAM_STATS, _STREAM_SCORE = 0, 1, 2, 3


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss or gradient; the detector keeps the last good parameters."""


#: Adam's learning rate when fit gets no optimizer. 1e-3 (Adam's usual default, alibi-detect's
#: fit default) rather than the DAGMM paper's 1e-4: with the step budget below, 1e-4 leaves the
#: autoencoder far from converged on the development suite (benchmarks/RESULTS.md).
DEFAULT_LEARNING_RATE = 1e-3
#: optimizer steps a fit aims for when ``epochs`` is None: epochs = steps / batches per epoch,
#: within [1, MAX_AUTO_EPOCHS]. A fixed epoch count is far too short for 100 rows and far too
#: long for 500k; a step budget trains both alike (chosen on the development suite).
DEFAULT_TRAIN_STEPS = 2000
MAX_AUTO_EPOCHS = 5000
#: minibatch rows when ``batch_size`` is None (capped at the number of training rows)
DEFAULT_BATCH_SIZE = 128


def default_optimizer(learning_rate: float = DEFAULT_LEARNING_RATE) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


def auto_epochs(n_rows: int, batch_size: int, steps: int = DEFAULT_TRAIN_STEPS) -> int:
    """Epochs that make about ``steps`` optimizer steps over ``n_rows`` rows at ``batch_size``.

    At least 1 (a large data set trains one full pass), at most :data:`MAX_AUTO_EPOCHS`.
    """
    per_epoch = -(-int(n_rows) // int(batch_size))
    return int(min(MAX_AUTO_EPOCHS, max(1, round(steps / per_epoch))))


def check_scaler_arg(scaler) -> str | None:
    """The ``scaler`` constructor argument: 'auto', a kind of :mod:`vaegmm_jax.core.scaling`, or None."""
    if scaler == "auto":
        return scaler
    return scaling.check_kind(scaler, "scaler (or 'auto')")


def _library_version() -> str:
    from vaegmm_jax import __version__

    return __version__


class BaseDetector:
    """Shared detector behaviour. Not used directly."""

    #: names of the loss terms recorded in the history, in order.
    loss_terms: tuple[str, ...] = ("total",)

    def __init__(self, threshold: float | None = None, seed: int = 0, data_type: str | None = None,
                 scaler: str | None = "auto"):
        if threshold is not None and not np.isfinite(float(threshold)):
            raise ValueError(f"threshold must be a finite number or None, got {threshold!r}")
        self.threshold = None if threshold is None else float(threshold)
        #: the requested input scaling ('auto', 'standard', 'minmax', 'robust' or None)
        self.scaler_kind = check_scaler_arg(scaler)
        #: the fitted scaling (a :class:`vaegmm_jax.core.scaling.Scaler`), set by fit
        self.scaler: scaling.Scaler | None = None
        self.seed = int(seed)
        self.data_type = data_type
        self.input_shape: tuple[int, ...] | None = None  # one row's shape, set by fit
        self.params = None
        self.model = None
        self.history: dict[str, list[float]] = {}
        #: wall-clock seconds of each epoch of the last fit (the first includes compilation)
        self.epoch_seconds: list[float] = []
        self.fit_seconds: dict[str, float] = {}  # setup (incl. compiling init), epochs, after_fit (mixture)
        self.epochs_done = 0
        self.opt_state = None  # optax state of the last fit (saved in checkpoints)
        self.fit_config: dict[str, Any] = {}
        self._score_jit: dict = {}
        #: devices to shard rows over (default: all local devices); set before fit/score.
        #: Devices of several processes (jax.devices()) make fit train across them.
        self.devices = None
        self.meta = {
            "name": type(self).__name__,
            "detector_type": "outlier",
            "data_type": data_type,
            "online": False,
            "version": _library_version(),
        }

    # -- hooks for subclasses ------------------------------------------------------------
    def _build(self, x_sample: np.ndarray) -> None:
        """Creates self.model for rows shaped like x_sample (B, *S)."""
        raise NotImplementedError

    def _make_loss(self, X: np.ndarray, fit_kwargs: dict) -> Callable:
        """Returns loss_fn(params, x, row_weights, key) -> (total, terms)."""
        raise NotImplementedError

    def _after_fit_compiler(self, X: jax.Array, batch_size: int, params_like) -> Callable | None:
        """Optionally, a no-argument function that compiles the after-fit program for the
        device-resident training set X; fit runs it in a background thread while the
        epochs train and passes the result to :meth:`_after_fit` as ``compiled``."""
        return None

    def _after_fit(self, X: np.ndarray, batch_size: int, compiled: Callable | None = None) -> None:
        """Fixes any state that scoring needs (e.g. the mixture) from the training data."""

    def _score_chunk_fn(self, n_samples: int) -> Callable:
        """Returns fn(params, extra, x (C, *S), offset (), key) -> (C,) scores (pure)."""
        raise NotImplementedError

    def _score_extra(self) -> Any:
        """State beyond params that scoring needs (a pytree), e.g. the mixture."""
        return None

    def _validate_input(self, X, name: str = "X", min_rows: int = 1) -> np.ndarray:
        return check_array(X, name=name, row_shape=self.input_shape, min_rows=min_rows)

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
        return jax.random.fold_in(jax.random.PRNGKey(self.seed), stream)

    # -- training ------------------------------------------------------------------------
    def _fit(
        self,
        X,
        *,
        optimizer: optax.GradientTransformation | None,
        epochs: int,
        batch_size: int,
        verbose: bool,
        log_metric: tuple[str, Callable] | None,
        checkpoint_dir: str | os.PathLike | None,
        checkpoint_every: int | None,
        resume: bool,
        fit_kwargs: dict,
    ) -> dict[str, list[float]]:
        fit_started = time.perf_counter()
        X = check_array(X, name="X", row_shape=self.input_shape, min_rows=2)
        epochs = None if epochs is None else check_positive_int(epochs, "epochs")
        batch_size = DEFAULT_BATCH_SIZE if batch_size is None else check_positive_int(batch_size, "batch_size")
        if checkpoint_every is not None:
            checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
            if checkpoint_dir is None:
                raise ValueError("checkpoint_every needs checkpoint_dir")
        # Devices of several processes (opt-in, det.devices = jax.devices()): every process
        # passes the same X and trains on one mesh over all of them (see parallel.py).
        multi_process = parallel.spans_processes(self.devices)
        if multi_process and not parallel.process_devices(self.devices):
            raise ValueError(
                f"det.devices spans several processes but none of them is process {jax.process_index()}'s: every "
                "process taking part in a multi-process fit needs its devices in the list (e.g. jax.devices())"
            )
        if multi_process:
            parallel.check_same_in_all_processes(X)
        if self.model is None:
            self._build(X[: min(len(X), 8)])
        if self.input_shape is None:  # also when a whole model was passed in
            self.input_shape = tuple(X.shape[1:])
        opt_desc = {"name": "adam", "learning_rate": DEFAULT_LEARNING_RATE} if optimizer is None else {"name": "custom"}
        optimizer = optimizer if optimizer is not None else default_optimizer()
        batch_size = min(batch_size, X.shape[0])
        epochs_requested = epochs
        if epochs is None:
            epochs = auto_epochs(X.shape[0], batch_size)

        if resume:
            if checkpoint_dir is None:
                raise ValueError("resume=True needs checkpoint_dir")
            from vaegmm_jax.checkpoint import _restore_into

            if os.path.exists(checkpoint_dir):
                _restore_into(self, checkpoint_dir, optimizer=optimizer)
        X = self._fit_scaler(X)  # after a resume, which restores the scaler the model learnt with
        loss_fn = self._make_loss(X, fit_kwargs)
        self.fit_config = dict(fit_kwargs, epochs=epochs, batch_size=batch_size, optimizer=opt_desc,
                               scaler=None if self.scaler is None else self.resolved_scaler_kind(X))
        if epochs_requested is None:
            self.fit_config["epochs_rule"] = f"auto: about {DEFAULT_TRAIN_STEPS} optimizer steps"

        metric_fn = None
        term_names = tuple(self.loss_terms)
        if log_metric is not None:
            metric_name, metric = log_metric
            metric_fn = self._make_metric_fn(metric)
            term_names_out = term_names + (str(metric_name),)
        else:
            term_names_out = term_names
        # One process: a mesh over its devices. Several: one mesh over all of them, so XLA
        # all-reduces the gradients across processes.
        mesh = parallel.global_mesh(self.devices)
        # Rows of each minibatch are split over the devices (when they divide evenly);
        # the training set itself is replicated, so the per-step gather stays local.
        batch_sharding = parallel.row_sharding(mesh) if batch_size % parallel.mesh_size(mesh) == 0 else None
        train_epoch = jax.jit(
            training.make_train_epoch(
                loss_fn, optimizer, term_names, batch_size, metric_fn=metric_fn, batch_sharding=batch_sharding
            ),
            donate_argnums=0,
            compiler_options=training.EPOCH_COMPILER_OPTIONS or None,
            # replicated results can be read by every process from its own shards
            **({"out_shardings": parallel.replicated(mesh)} if multi_process else {}),
        )
        init_device = None
        if self.params is None:
            # one compiled program (parameters and optimizer state) instead of dozens of
            # eagerly dispatched initialiser ops, each compiled separately on a GPU
            model = self.model

            def init_state(key, x):
                return training.init_train_state(model.init(key, x), optimizer)

            init_program = jax.jit(init_state, compiler_options=training.INIT_COMPILER_OPTIONS)
            init_args = (self._key(_STREAM_INIT), jnp.asarray(X[:batch_size]))
            init_device = training.init_device()
            if init_device is not None:  # committed inputs: the program runs there
                init_args = jax.device_put(init_args, init_device)
            self.history = {}
            self.epochs_done = 0
        elif self.opt_state is None or not resume:
            init_program = jax.jit(
                training.init_train_state, static_argnums=1, compiler_options=training.INIT_COMPILER_OPTIONS
            )
            init_args = (self.params, optimizer)
        else:
            init_program = jax.jit(training.TrainState)  # the restored state as it is
            init_args = (self.params, self.opt_state, jnp.asarray(0, jnp.int32))
        base_key = self._key(_STREAM_TRAIN)
        # The epoch program is the slowest compilation of a fit (seconds on a GPU): compile it
        # on a host thread from the shapes alone while the initial state compiles and runs here.
        # (Tracing holds the GIL; XLA's compilation does not.)
        replicated = parallel.replicated(mesh)

        def like(a, sharding):
            return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding, weak_type=getattr(a, "weak_type", False))

        state_like = jax.tree.map(lambda a: like(a, replicated), init_program.eval_shape(*init_args))
        x_like = jax.ShapeDtypeStruct(X.shape, X.dtype, sharding=replicated)
        key_like = jax.eval_shape(training.epoch_key, base_key, 0)
        background = ThreadPoolExecutor(max_workers=2)
        epoch_future = background.submit(lambda: train_epoch.lower(state_like, x_like, key_like).compile())
        try:
            fresh = self.params is None
            state = init_program(*init_args)
            x_dev = parallel.put(X, replicated)
            if replicated is None and init_device is not None:
                # one device, no mesh: put(a, None) would leave the state committed to the
                # initialisation device (the host CPU beside a GPU), where the epoch program,
                # compiled for the default device, refuses it
                state = jax.device_put(state, next(iter(x_dev.devices())))
            state = jax.tree.map(lambda a: parallel.put(a, replicated), state)
            if fresh:
                self.params = parallel.to_local(state.params, self.devices)
            # the after-fit step (the mixture) runs in each process on its own devices, on its
            # own shards of the replicated training set (the same as x_dev in one process)
            x_local = parallel.to_local(x_dev, self.devices)
            # resume: train up to `epochs` in total; otherwise `epochs` more (warm start, like Keras).
            start = self.epochs_done
            stop = epochs if resume else start + epochs
            progress = _progress(range(start, stop), verbose, type(self).__name__)
            self.epoch_seconds = []
            try:
                epoch_program = epoch_future.result()
            except Exception:  # compiled again in the foreground, where its error (if any) surfaces
                epoch_program = train_epoch
            self.fit_seconds = {"setup": time.perf_counter() - fit_started}  # the epoch program included
            # compile the after-fit program (the mixture) on a host thread while the device trains
            # (not earlier: it would compete with the epoch program's compilation)
            local_params = parallel.to_local(state.params, self.devices)
            params_like = jax.tree.map(lambda a: like(a, a.sharding), local_params)
            compile_after = self._after_fit_compiler(x_local, batch_size, params_like)
            del local_params
            after_program = background.submit(compile_after) if compile_after is not None else None
        except BaseException:
            background.shutdown(wait=False, cancel_futures=True)
            raise
        try:
            for epoch in progress:
                started = time.perf_counter()
                state, result = epoch_program(state, x_dev, training.epoch_key(base_key, epoch))
                terms = np.asarray(result.terms)  # the one host sync of the epoch
                self.epoch_seconds.append(time.perf_counter() - started)
                first_bad = int(result.first_bad_step)
                # ordinary arrays of this process (unchanged in one process) for scoring and saving
                self.params, self.opt_state = parallel.to_local((state.params, state.opt_state), self.devices)
                if first_bad >= 0:
                    bad = np.asarray(result.bad_terms)
                    culprit = next((n for n, v in zip(term_names, bad) if not np.isfinite(v)), "gradient")
                    self.epochs_done = epoch  # the last fully good epoch count
                    raise NonFiniteLossError(
                        f"non-finite loss in epoch {epoch + 1} at step {first_bad + 1}: term {culprit!r} "
                        f"({dict(zip(term_names, bad.tolist()))}); parameters kept from the last good step. "
                        "Try a smaller learning rate, standardised inputs, or a larger covariance jitter (eps)."
                    )
                for name, value in zip(term_names_out, terms.tolist()):
                    self.history.setdefault(name, []).append(float(value))
                self.epochs_done = epoch + 1
                if hasattr(progress, "set_postfix"):
                    progress.set_postfix({n: f"{v:.4g}" for n, v in zip(term_names_out, terms.tolist())})
                if checkpoint_every and (epoch + 1) % checkpoint_every == 0 and epoch + 1 < stop:
                    _save_from_fit(self, checkpoint_dir, multi_process)
        finally:
            background.shutdown(wait=False, cancel_futures=True)
        compiled = None
        if after_program is not None:
            try:
                compiled = after_program.result()
            except Exception:  # compile it again in the foreground, where its error (if any) surfaces
                compiled = None
        after_started = time.perf_counter()
        self._after_fit(x_local, batch_size, compiled)  # the training set is already on the device
        self.fit_seconds.update(epochs=sum(self.epoch_seconds), after_fit=time.perf_counter() - after_started)
        del x_dev, x_local
        self._score_jit = {}
        if checkpoint_dir is not None:
            _save_from_fit(self, checkpoint_dir, multi_process)
        return self.history

    def _make_metric_fn(self, metric: Callable):
        """log_metric(x (B, F), x_recon (B, F)) -> per-row (B,) or scalar, averaged over the batch."""
        raise NotImplementedError

    # -- scoring -------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.params is None or self.model is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(X) or load_detector(path) first")

    def _n_score_samples(self) -> int:
        return 1

    def score(
        self,
        X,
        batch_size: int = DEFAULT_SCORE_BATCH,
        key: jax.Array | None = None,
        compute_dtype: str = "float32",
        row_offset: int = 0,
    ) -> np.ndarray:
        """Outlier scores (higher = more anomalous).

        Deterministic: the same fitted detector gives the same scores for the same X
        on every call, whatever ``batch_size`` (each row's latent noise depends only
        on the key and its row index). Pass ``key`` to draw fresh samples.

        Args:
          X: (N, *S) numpy array, ``np.memmap``, jax.Array (stays on the device), or
            an iterable of (n_i, *S) blocks (streamed; host memory bounded by the chunk).
          batch_size: rows per device chunk (fixed and padded: one compilation);
            rows of a chunk are split over all local devices. Default: 2048 on CPU,
            262,144 on accelerators.
          key: optional PRNG key for the latent samples.
          compute_dtype: "float32" or "bfloat16" for the networks (opt-in: faster on
            accelerators, scores change slightly; the mixture maths stay float32 at
            HIGHEST precision either way).
          row_offset: global index of X's first row, for scoring one shard of a data
            set per host with the same noise as a single-host run.

        Returns:
          (N,) float32 scores.
        """
        self._check_fitted()
        batch_size = default_score_batch() if batch_size is None else check_positive_int(batch_size, "batch_size")
        if compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {compute_dtype!r}")
        mesh = parallel.local_mesh(self.devices)
        if hasattr(X, "shape") or isinstance(X, (list, tuple)):
            X = self._validate_input(X)
            chunk = effective_chunk_size(X.shape[0], batch_size)
        else:  # an iterable of blocks, validated block by block
            X = (self._validate_input(block, name="X block") for block in X)
            chunk = batch_size
        chunk = parallel.round_up(chunk, parallel.mesh_size(mesh))
        fn = self._jitted_score(compute_dtype)
        key = self._key(_STREAM_SCORE) if key is None else key
        extra = self._score_inputs()
        params = self.params
        return map_chunks(
            lambda x, offset: fn(params, extra, x, offset, key), X, chunk,
            sharding=parallel.row_sharding(mesh), row_offset=int(row_offset),
        ).astype(np.float32)

    def _map_rows(self, fn: Callable, X, batch_size: int) -> np.ndarray:
        """fn(x (C, *S), offset) -> (C, ...) over X (N, *S) in fixed padded chunks, split over
        the local devices like :meth:`score` (no validation, no scaling: X is used as given)."""
        mesh = parallel.local_mesh(self.devices)
        chunk = parallel.round_up(effective_chunk_size(X.shape[0], batch_size), parallel.mesh_size(mesh))
        return np.asarray(map_chunks(fn, X, chunk, sharding=parallel.row_sharding(mesh)))

    def _score_inputs(self) -> tuple:
        """The ``extra`` argument of :meth:`_jitted_score`'s function: (scaler or None, _score_extra())."""
        return (self.scaler, self._score_extra())

    def _jitted_score(self, compute_dtype: str = "float32") -> Callable:
        """jit(fn(params, (scaler, extra), x (C, *S) raw rows, offset, key) -> (C,) scores).

        The input scaling runs inside the program, in float32 before any bf16 cast.
        """
        cache_key = (self._n_score_samples(), compute_dtype, getattr(self, "scoring_kernel", None))
        if cache_key not in self._score_jit:
            fn = self._score_chunk_fn(self._n_score_samples())
            if compute_dtype == "bfloat16":
                fn = _in_dtype(fn, jnp.bfloat16)
            self._score_jit[cache_key] = jax.jit(_scaled_inputs(fn))
        return self._score_jit[cache_key]

    def infer_threshold(self, X, threshold_perc: float = 95.0, batch_size: int = DEFAULT_SCORE_BATCH) -> float:
        """Sets the threshold to the ``threshold_perc`` percentile of score(X) (alibi-detect semantics)."""
        if not 0.0 <= float(threshold_perc) <= 100.0:
            raise ValueError(f"threshold_perc must be in [0, 100], got {threshold_perc}")
        scores = self.score(X, batch_size=batch_size)
        self.threshold = float(np.percentile(scores, threshold_perc))
        self.fit_config["threshold_perc"] = float(threshold_perc)
        return self.threshold

    def predict(
        self, X, batch_size: int = DEFAULT_SCORE_BATCH, return_instance_score: bool = True, key: jax.Array | None = None
    ) -> dict:
        """alibi-detect's prediction dict.

        Returns:
          {'meta': {...}, 'data': {'instance_score': float32 (N,) or None, 'feature_score': None or
          (N, *S), 'is_outlier': int64 (N,)}}; is_outlier = score > threshold (strict).
        """
        self._check_fitted()
        if self.threshold is None:
            raise NotFittedError(
                f"{type(self).__name__} has no threshold: pass threshold= to the constructor or call "
                "infer_threshold(X) before predict"
            )
        scores = self.score(X, batch_size=batch_size, key=key)
        data = {
            "instance_score": scores.astype(np.float32) if return_instance_score else None,
            "feature_score": self._feature_score(X, batch_size) if return_instance_score else None,
            "is_outlier": (scores > self.threshold).astype(int),
        }
        return {"meta": dict(self.meta), "data": data}

    def _feature_score(self, X, batch_size: int):
        return None

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        from vaegmm_jax.checkpoint import save_detector

        save_detector(self, path)

    def config_dict(self) -> dict:
        raise NotImplementedError

    def extra_arrays(self) -> dict[str, Any]:
        """Arrays beyond params to checkpoint (a pytree of arrays): here the input scaling."""
        if self.scaler is None:
            return {}
        return {"scaler": {"shift": np.asarray(self.scaler.shift), "scale": np.asarray(self.scaler.scale)}}

    def set_extra_arrays(self, arrays: dict[str, Any]) -> None:
        if "scaler" in arrays:
            self.scaler = scaling.Scaler(shift=np.asarray(arrays["scaler"]["shift"], np.float32),
                                         scale=np.asarray(arrays["scaler"]["scale"], np.float32))


def _save_from_fit(detector: BaseDetector, path, multi_process: bool) -> None:
    """save_detector(detector, path) from process 0 only: every process holds the same state."""
    from vaegmm_jax.checkpoint import save_detector

    if not multi_process or jax.process_index() == 0:
        save_detector(detector, path)


def _scaled_inputs(fn: Callable) -> Callable:
    """fn(params, extra, x, offset, key) -> fn'(params, (scaler, extra), x, offset, key) on scaled x."""

    def wrapped(params, scaler_and_extra, x, offset, key):
        scaler, extra = scaler_and_extra
        if scaler is not None:
            x = scaling.apply_scaler(scaler, x.astype(jnp.promote_types(x.dtype, jnp.float32)))
        return fn(params, extra, x, offset, key)

    return wrapped


def _in_dtype(fn: Callable, dtype) -> Callable:
    """Runs a score function with its params and inputs cast to ``dtype`` (bf16 networks)."""

    def cast(tree):
        return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)

    def wrapped(params, extra, x, offset, key):
        return fn(cast(params), extra, x.astype(dtype), offset, key).astype(jnp.float32)

    return wrapped


def _progress(iterable: Iterable, verbose: bool, desc: str):
    """A per-epoch tqdm bar when verbose and stderr is a terminal (never in logs or CI)."""
    if not verbose:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return iterable
    return tqdm(iterable, desc=desc, unit="epoch", disable=None, file=sys.stderr)


__all__ = ["BaseDetector", "NonFiniteLossError", "NotFittedError", "default_optimizer"]
