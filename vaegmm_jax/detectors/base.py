"""The detector shell shared by every model: validation, the fit driver, chunked
scoring, thresholds, alibi-detect's predict dict, checkpoint hooks.

Subclasses say only what differs between models (how to build the model, its loss,
its per-chunk score, and any state fixed after training such as the mixture).
"""

from __future__ import annotations

import copy
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from vaegmm_jax.engine import members, parallel, training
from vaegmm_jax._version import __version__
from vaegmm_jax.core import scaling
from vaegmm_jax.io.checkpoint import restore_training_state, save_detector
from vaegmm_jax.engine.streaming import effective_chunk_size, map_chunks
from vaegmm_jax.engine.validation import NotFittedError, check_array, check_percentile, check_positive_int

#: rows per scoring chunk (padded, fixed shape) when none is given: small enough to stay
#: in CPU caches (the L decoded samples of a 2k-row chunk are ~10 MB), large enough to
#: fill an accelerator. Bounds device and host memory either way.
DEFAULT_SCORE_BATCH = None
_CPU_SCORE_BATCH, _ACCELERATOR_SCORE_BATCH = 2048, 262_144


#: the largest magnitude a network input takes when scoring (after the input scaling): far
#: beyond any standardised row (1e9 standard deviations), small enough that the squared errors
#: and the mixture's quadratic forms of the farthest row stay finite in float32
SCORE_INPUT_LIMIT = 1e9


def default_score_batch(n_members: int = 1) -> int:
    """The default scoring chunk for the default backend (2048 rows on CPU, 262,144 on GPU/TPU),
    divided among M members (at least 256 rows): every member decodes its L samples of every row
    of a chunk, so this keeps a chunk's memory (CPU caches, device memory) what one model uses."""
    rows = _CPU_SCORE_BATCH if jax.default_backend() == "cpu" else _ACCELERATOR_SCORE_BATCH
    return max(256, rows // max(int(n_members), 1))

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


@dataclass(frozen=True)
class FitOptions:
    """How the fit engine runs (the defaults are what ``detector.fit`` does).

    Attributes:
      member_data: X is (M, N, *S), one training set per member (needs ``scaler=None``).
      on_nonfinite: 'raise' (a member's non-finite loss or mixture raises, naming the member)
        or 'record' (that member stops with its last good parameters and the fit goes on:
        see ``member_failed_epoch`` and ``member_after_fit_ok``).
      epochs_per_call: epochs per jitted call (one host sync per call; the progress bar and
        ``checkpoint_every`` see call boundaries only).
      member_group_size: train and score the members in groups of this many, one group after
        the other in one program (see :func:`vaegmm_jax.engine.members.over_members`); one device only.
      allow_zero_epochs: ``epochs=0`` gives the untrained, randomly initialised model with its
        after-fit state (the random-initialisation baseline).
    """

    member_data: bool = False
    on_nonfinite: str = "raise"
    epochs_per_call: int = 1
    member_group_size: int | None = None
    allow_zero_epochs: bool = False

    def __post_init__(self):
        if self.on_nonfinite not in ("raise", "record"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'record', got {self.on_nonfinite!r}")
        check_positive_int(self.epochs_per_call, "epochs_per_call")
        if self.member_group_size is not None:
            check_positive_int(self.member_group_size, "member_group_size")


class BaseDetector:
    """Shared detector behaviour. Not used directly."""

    #: names of the loss terms recorded in the history, in order.
    loss_terms: tuple[str, ...] = ("total",)

    def __init__(self, threshold: float | None = None, seed: int | Sequence[int] = 0, data_type: str | None = None,
                 scaler: str | None = "auto", n_members: int | None = None):
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
        self.history: dict[str, list[float]] = {}
        #: wall-clock seconds of each epoch of the last fit (the first includes compilation)
        self.epoch_seconds: list[float] = []
        #: wall-clock seconds of each jitted training call (FitOptions.epochs_per_call epochs each)
        self.call_seconds: list[float] = []
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
            "version": __version__,
        }

    # -- hooks for subclasses ------------------------------------------------------------
    def _build(self, x_sample: np.ndarray) -> None:
        """Creates self.model for rows shaped like x_sample (B, *S)."""
        raise NotImplementedError

    def _make_loss(self, X: np.ndarray, fit_kwargs: dict) -> Callable:
        """Returns loss_fn(params, x, row_weights, key) -> (total, terms)."""
        raise NotImplementedError

    def _after_fit_compiler(self, X: jax.Array, batch_size: int, params_like, member_data: bool = False
                            ) -> Callable | None:
        """Optionally, a no-argument function that compiles the after-fit program for the
        device-resident training set X ((N, *S), or (M, N, *S) with ``member_data``); fit runs it
        in a background thread while the epochs train and passes the result to
        :meth:`_after_fit` as ``compiled``."""
        return None

    def _after_fit(self, X: jax.Array, batch_size: int, compiled: Callable | None = None, member_data: bool = False,
                   strict: bool = True) -> np.ndarray:
        """Fixes any state that scoring needs (e.g. the mixture) from the training data, for
        every member. Returns ([M],) bool: the member's state is usable; ``strict`` raises instead."""
        return np.ones(self.n_members, bool)

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
        """The first member's key for ``stream`` (the detector's own key when M = 1)."""
        return members.stream_key(self.seed, stream)

    def _member_keys(self, stream: int) -> jax.Array:
        """([M,] 2) the members' keys for ``stream`` (no member axis when M = 1)."""
        return members.stream_keys(self.member_seeds, stream)

    # -- training: the one engine --------------------------------------------------------
    def _fit(
        self,
        X,
        *,
        optimizer: optax.GradientTransformation | None,
        epochs: int | None,
        batch_size: int | None,
        verbose: bool,
        log_metric: tuple[str, Callable] | None,
        checkpoint_dir: str | os.PathLike | None,
        checkpoint_every: int | None,
        resume: bool,
        fit_kwargs: dict,
        options: FitOptions | None = None,
    ) -> dict[str, list[float]]:
        """The fit engine: trains the M members as one program, then fixes the after-fit state.

        Every fit goes through here: a single detector (M = 1), an ensemble, and
        :func:`vaegmm_jax.evaluation.multiseed.fit_many` (``options``).
        """
        fit_started = time.perf_counter()
        options = FitOptions() if options is None else options
        n_members = self.n_members
        # one training set per member; a single member's set is simply its data
        member_data = options.member_data and n_members > 1
        if options.member_data:
            X, X_rows = self._check_member_data(X)
            if not member_data:
                X = X_rows
        else:
            X = X_rows = check_array(X, name="X", row_shape=self.input_shape, min_rows=2)
        if epochs is not None and not (options.allow_zero_epochs and epochs == 0):
            epochs = check_positive_int(epochs, "epochs")
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
        if multi_process and (n_members > 1 or member_data):
            raise ValueError("a fit across several processes trains one member on shared data: use n_members=1")
        if multi_process:
            parallel.check_same_in_all_processes(X)
        if self.model is None:
            self._build(X_rows[: min(len(X_rows), 8)])
        if self.input_shape is None:  # also when a whole model was passed in
            self.input_shape = tuple(X_rows.shape[1:])
        opt_desc = {"name": "adam", "learning_rate": DEFAULT_LEARNING_RATE} if optimizer is None else {"name": "custom"}
        optimizer = optimizer if optimizer is not None else default_optimizer()
        n_rows = X_rows.shape[0]
        batch_size = min(batch_size, n_rows)
        epochs_requested = epochs
        if epochs is None:
            epochs = auto_epochs(n_rows, batch_size)

        if resume:
            if checkpoint_dir is None:
                raise ValueError("resume=True needs checkpoint_dir")
            if os.path.exists(checkpoint_dir):
                restore_training_state(self, checkpoint_dir, optimizer=optimizer)
        if member_data:
            if self.resolved_scaler_kind(X_rows) is not None:
                raise ValueError(
                    "one training set per member (member_data) needs scaler=None: each member's rows would need "
                    "their own scaling; scale them yourself or build the detector with scaler=None")
            self.scaler = None
        else:
            X = X_rows = self._fit_scaler(X)  # after a resume, which restores the scaler the model learnt with
        loss_fn = self._make_loss(X_rows, fit_kwargs)
        recon_cov = getattr(self, "recon_cov", None)
        if member_data and recon_cov is not None and recon_cov.kind != "sim":
            raise ValueError(
                f"one training set per member with cov_elbo {recon_cov.kind!r} (estimated from the data) would need "
                "one loss per member; use cov_elbo=dict(sim=...) or shared data")
        self.fit_config = dict(fit_kwargs, epochs=epochs, batch_size=batch_size, optimizer=opt_desc,
                               scaler=None if self.scaler is None else self.resolved_scaler_kind(X_rows))
        if epochs_requested is None:
            self.fit_config["epochs_rule"] = f"auto: about {DEFAULT_TRAIN_STEPS} optimizer steps"
        if n_members > 1:
            self.fit_config["n_members"] = n_members
        if member_data:
            self.fit_config["member_data"] = True
        if options.member_group_size is not None and n_members > 1:
            self.fit_config["member_group_size"] = options.member_group_size  # scoring groups them alike

        metric_fn = None
        term_names = tuple(self.loss_terms)
        term_names_out = term_names
        if log_metric is not None:
            metric_name, metric = log_metric
            metric_fn = self._make_metric_fn(metric)
            term_names_out = term_names + (str(metric_name),)

        place = self._placement(batch_size, member_data, multi_process)
        layout, state_sharding, x_sharding = place.layout, place.state_sharding, place.x_sharding
        group_size = options.member_group_size
        if group_size is not None and layout is not None:
            raise ValueError(
                f"member_group_size={group_size} runs member groups one after the other on one device; with "
                f"{layout.n_devices} devices the members are split over devices instead: leave it None "
                "or set det.devices to one device")
        per_call = min(options.epochs_per_call, max(epochs, 1))
        runner = jax.jit(
            training.make_epoch_runner(
                training.make_train_epoch(loss_fn, optimizer, term_names, batch_size, metric_fn=metric_fn,
                                          batch_sharding=place.batch_sharding),
                n_members, member_data, len(term_names_out), per_call, group_size),
            donate_argnums=0,
            compiler_options=training.EPOCH_COMPILER_OPTIONS or None,
            **place.out_shardings,
        )

        fresh = self.params is None
        if fresh:
            self.history, self.member_history = {}, {}
            self.epochs_done = 0
        initial_state, state_like, init_device = self._initial_state(optimizer, X, batch_size, member_data, resume)
        base_keys = self._member_keys(_STREAM_TRAIN)
        alive = np.ones((n_members,) if n_members > 1 else (), bool)
        failed = np.full(alive.shape, -1, np.int32)

        # The epoch program is the slowest compilation of a fit (seconds on a GPU): compile it
        # on a host thread from the shapes alone while the initial state compiles and runs here.
        # (Tracing holds the GIL; XLA's compilation does not.)
        def like(a, sharding):
            return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding, weak_type=getattr(a, "weak_type", False))

        args_like = (
            jax.tree.map(lambda a: like(a, state_sharding), state_like),
            like(alive, state_sharding), like(failed, state_sharding), like(X, x_sharding),
            like(base_keys, state_sharding), like(np.int32(0), None), like(np.int32(0), None),
        )
        background = ThreadPoolExecutor(max_workers=2)
        run_future = background.submit(lambda: runner.lower(*args_like).compile())
        try:
            state = initial_state()
            put_state = layout.put if layout is not None else (
                lambda t: jax.tree.map(lambda a: parallel.put(a, state_sharding), t))
            x_dev = layout.put(X) if layout is not None and member_data else parallel.put(X, x_sharding)
            if state_sharding is None and init_device is not None:
                # one device, no mesh: put(a, None) would leave the state committed to the
                # initialisation device (the host CPU beside a GPU), where the epoch program,
                # compiled for the default device, refuses it
                state = jax.device_put(state, next(iter(x_dev.devices())))
            state = put_state(state)
            alive, failed, base_keys = put_state((alive, failed, base_keys))
            if fresh:
                self.params = self._local_member_state(state.params, layout)
            # resume: train up to `epochs` in total; otherwise `epochs` more (warm start, like Keras).
            start = self.epochs_done
            stop = epochs if resume else start + epochs
            calls = range(start, stop, per_call)
            progress = _progress(calls, verbose, type(self).__name__)
            self.epoch_seconds, self.call_seconds = [], []
            try:
                run_program = run_future.result()
            except Exception:  # compiled again in the foreground, where its error (if any) surfaces
                run_program = runner
            self.fit_seconds = {"setup": time.perf_counter() - fit_started}  # the epoch program included
            # after training, everything of this process lives as ordinary local arrays: the
            # after-fit step (the mixture) runs on them, on each process's shards of the data
            x_after = self._after_fit_data(x_dev, X, layout)
            params_like = jax.tree.map(lambda a: like(a, getattr(a, "sharding", None)),
                                       self._local_member_state(state.params, layout))
            # compile the after-fit program (the mixture) on a host thread while the device trains
            # (not earlier: it would compete with the epoch program's compilation)
            compile_after = self._after_fit_compiler(x_after, batch_size, params_like, member_data)
            after_program = background.submit(compile_after) if compile_after is not None else None
        except BaseException:
            background.shutdown(wait=False, cancel_futures=True)
            raise
        self.member_failed_epoch = np.full(n_members, -1, np.int64)
        try:
            for call_start in progress:
                started = time.perf_counter()
                state, alive, failed, report = run_program(
                    state, alive, failed, x_dev, base_keys, np.int32(call_start), np.int32(stop))
                terms = np.asarray(report.terms)  # (calls' epochs, [M,] n_terms): the one host sync
                terms = terms[:, None, :] if n_members == 1 else terms[:, :n_members]  # without padding members
                n_done = min(per_call, stop - call_start)
                self.call_seconds.append(time.perf_counter() - started)
                self.epoch_seconds.extend([self.call_seconds[-1] / n_done] * n_done)
                # ordinary arrays of this process (unchanged in one process) for scoring and saving
                self.params, self.opt_state = self._local_member_state((state.params, state.opt_state), layout)
                failed_now = members.per_member(np.asarray(failed), n_members)[:n_members]
                newly = np.flatnonzero((failed_now >= 0) & (self.member_failed_epoch < 0))
                self.member_failed_epoch = failed_now.astype(np.int64)
                if newly.size and options.on_nonfinite == "raise":
                    self.epochs_done = int(failed_now[newly[0]])  # the last fully good epoch count
                    raise self._nonfinite_error(newly[0], int(failed_now[newly[0]]), report, term_names)
                self._record_history(terms[:n_done], term_names_out)
                self.epochs_done = call_start + n_done
                if hasattr(progress, "set_postfix"):
                    progress.set_postfix({n: f"{v:.4g}" for n, v in zip(term_names_out, np.nanmean(terms[n_done - 1], 0))})
                if checkpoint_every and self.epochs_done // checkpoint_every > call_start // checkpoint_every \
                        and self.epochs_done < stop:
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
        strict = options.on_nonfinite == "raise"
        self.member_after_fit_ok = members.per_member(
            self._after_fit(x_after, batch_size, compiled, member_data=member_data, strict=strict),
            n_members).astype(bool)
        self.member_calibration = None
        if n_members > 1 and not member_data:  # members of different data make no one ensemble score
            self.member_calibration = self._calibrate_members(x_after, batch_size)
        self.fit_seconds.update(epochs=sum(self.epoch_seconds), after_fit=time.perf_counter() - after_started)
        del x_dev, x_after
        self._score_jit = {}
        if checkpoint_dir is not None:
            _save_from_fit(self, checkpoint_dir, multi_process)
        return self.history

    def _placement(self, batch_size: int, member_data: bool, multi_process: bool) -> "_Placement":
        """Where a fit runs. One member: one mesh over the devices (of all processes, so XLA
        all-reduces the gradients across them), each minibatch's rows split over it, the
        training set replicated so the per-step gather stays local. Several members: the member
        axis split over the devices (members.MemberLayout), with no communication."""
        if self.n_members == 1:
            mesh = parallel.global_mesh(self.devices)
            replicated = parallel.replicated(mesh)
            return _Placement(
                layout=None,
                batch_sharding=parallel.row_sharding(mesh) if batch_size % parallel.mesh_size(mesh) == 0 else None,
                state_sharding=replicated, x_sharding=replicated,
                out_shardings={"out_shardings": replicated} if multi_process else {})
        devices = tuple(self.devices) if self.devices is not None else tuple(jax.local_devices())
        layout = members.MemberLayout.make(self.n_members, devices)
        if layout.n_devices == 1:
            return _Placement(None, None, None, None, {})
        by_member = layout.members
        report = training.RunReport(terms=NamedSharding(layout.mesh, PartitionSpec(None, members.MEMBER_AXIS)),
                                    first_bad_step=by_member, bad_terms=by_member)
        return _Placement(layout=layout, batch_sharding=None, state_sharding=by_member,
                          x_sharding=by_member if member_data else layout.replicated,
                          out_shardings={"out_shardings": (by_member, by_member, by_member, report)})

    def _initial_state(self, optimizer, X, batch_size: int, member_data: bool, resume: bool):
        """(initial_state() -> TrainState, its shapes, the device that initialises or None).

        A fresh fit initialises every member with its own key, in one compiled program
        (parameters and optimizer state) instead of dozens of eagerly dispatched initialiser ops,
        each compiled separately on a GPU; a warm start re-initialises the optimizer; a resume
        keeps the restored state as it is.
        """
        n_members = self.n_members
        init_device = None
        if self.params is None:
            model = self.model

            def init_state(key, x):
                return training.init_train_state(model.init(key, x), optimizer)

            init_program = jax.jit(init_state, compiler_options=training.INIT_COMPILER_OPTIONS)
            init_keys = np.asarray(self._member_keys(_STREAM_INIT)).reshape(n_members, -1)
            init_x = [np.asarray(X[m, :batch_size] if member_data else X[:batch_size]) for m in range(n_members)]
            init_device = training.init_device()
            if init_device is not None:  # committed inputs: the program runs there
                init_keys, init_x = jax.device_put((init_keys, init_x), init_device)

            def initial_state():
                # each member's own initialisation (one compilation), stacked: bit-identical
                # to what a single detector with the member's seed starts from
                return members.stack([init_program(init_keys[m], init_x[m]) for m in range(n_members)])

            one_like = init_program.eval_shape(init_keys[0], init_x[0])
            return initial_state, jax.tree.map(lambda a: _with_members(a, n_members), one_like), init_device
        if self.opt_state is None or not resume:
            init_program = jax.jit(
                members.over_members(lambda p: training.init_train_state(p, optimizer), (0,), n_members),
                compiler_options=training.INIT_COMPILER_OPTIONS,
            )
            init_args = (self.params,)
        else:
            init_program = jax.jit(training.TrainState)  # the restored state as it is
            init_args = (self.params, self.opt_state, jnp.zeros((n_members,) if n_members > 1 else (), jnp.int32))
        return (lambda: init_program(*init_args)), init_program.eval_shape(*init_args), None

    def _after_fit_chunk(self, batch_size: int) -> int:
        """Rows per chunk when the after-fit steps score the training rows: at least 4096 rows
        for one model, shared among the members."""
        return max(batch_size, 4096 // self.n_members, 256)

    def _check_member_data(self, X, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """(M, N, *S) row sets, one per member, validated; and the first member's rows."""
        if isinstance(X, (list, tuple)):
            X = np.stack([np.asarray(x) for x in X])
        if np.ndim(X) < 3 or X.shape[0] != self.n_members:
            raise ValueError(f"member_data: X must have a leading member axis, (M={self.n_members}, N, *S) with one "
                             f"row set per member; got shape {np.shape(X)}")
        if isinstance(X, jax.Array):  # validated where it lives (no copy to the host)
            check_array(X.reshape((-1,) + X.shape[2:]), name="X", row_shape=self.input_shape, min_rows=min_rows)
            X = X.astype(jnp.float32)
            return X, X[0]
        rows = [check_array(X[m], name=f"X[{m}]", row_shape=self.input_shape, min_rows=min_rows)
                for m in range(X.shape[0])]
        X = np.stack(rows)
        return X, X[0]

    def _after_fit_data(self, x_dev, X, layout):
        """The training set the after-fit step reads: this process's local copy of the device
        array, or (members split over devices) one copy on the default device."""
        if layout is not None:
            return jnp.asarray(X)
        return parallel.to_local(x_dev, self.devices)

    def _local_member_state(self, tree, layout):
        """Training state as ordinary arrays of this process: (M, ...) unpadded and uncommitted
        when the members were split over devices."""
        if layout is not None:
            return layout.unpad(tree)
        return parallel.to_local(tree, self.devices)

    def _record_history(self, terms: np.ndarray, names: tuple[str, ...]) -> None:
        """terms (epochs, M, n_terms): history gets the mean over the members that finished
        each epoch, member_history every member's value (NaN after a member failed)."""
        for j, name in enumerate(names):
            for epoch_terms in terms[:, :, j]:
                if self.n_members > 1:
                    self.member_history.setdefault(name, []).append([float(v) for v in epoch_terms])
                good = epoch_terms[np.isfinite(epoch_terms)]
                if good.size:
                    self.history.setdefault(name, []).append(float(good.mean()))

    def _nonfinite_error(self, member: int, epoch: int, report, term_names) -> "NonFiniteLossError":
        first_bad = int(members.per_member(np.asarray(report.first_bad_step), self.n_members)[member])
        bad = members.per_member(np.asarray(report.bad_terms), self.n_members)[member]
        culprit = next((n for n, v in zip(term_names, bad) if not np.isfinite(v)), "gradient")
        who = "" if self.n_members == 1 else f"member {member} (seed {self.member_seeds[member]}): "
        return NonFiniteLossError(
            f"{who}non-finite loss in epoch {epoch + 1} at step {first_bad + 1}: term {culprit!r} "
            f"({dict(zip(term_names, bad.tolist()))}); parameters kept from the last good step. "
            "Try a smaller learning rate, standardised inputs, or a larger covariance jitter (eps)."
        )

    def _calibrate_members(self, X, batch_size: int) -> dict[str, np.ndarray]:
        """{'center': (M,), 'scale': (M,)}: each member's median score and interquartile range on
        the training rows, which put the members' scores on one scale before they are averaged."""
        scores = self._member_scores(X, self._after_fit_chunk(batch_size), self._member_keys(_STREAM_SCORE), "float32",
                                     member_data=False, scaled=True)
        return robust_calibration(scores.T)

    def _make_metric_fn(self, metric: Callable):
        """log_metric(x (B, F), x_recon (B, F)) -> per-row (B,) or scalar, averaged over the batch."""
        raise NotImplementedError

    # -- scoring -------------------------------------------------------------------------
    def clear_compiled(self) -> None:
        """Drops the compiled score programs (after the parameters or settings they were built
        for change: a load, a new scoring kernel); the next score compiles afresh."""
        self._score_jit = {}

    def check_fitted(self) -> None:
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
        on every call. Each row's latent noise depends only on the key and its row index,
        so ``batch_size`` changes a score only by the float32 rounding of matrix products of
        another shape: at most 1e-5 x max(1, |score|) (tested). Pass ``key`` to draw fresh
        samples. Rows beyond float32's comfortable range are scored as rows at
        :data:`SCORE_INPUT_LIMIT` (after the input scaling): finite and maximal, never NaN.

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
        self.check_fitted()
        batch_size = default_score_batch(self.n_members) if batch_size is None else check_positive_int(
            batch_size, "batch_size")
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
        return self._score_rows(X, chunk, mesh, key, compute_dtype, int(row_offset), member_scores=False)

    def score_members(
        self,
        X,
        batch_size: int = DEFAULT_SCORE_BATCH,
        key: jax.Array | None = None,
        compute_dtype: str = "float32",
        member_data: bool = False,
    ) -> np.ndarray:
        """Every member's own score (the score a single detector with the member's seed gives).

        Args:
          X: (N, *S) rows scored by every member (as :meth:`score`), or with ``member_data``
            (M, N, *S): member m scores its own rows X[m].
          batch_size, key, compute_dtype: as :meth:`score`.
          member_data: X has a leading member axis.

        Returns:
          (M, N) float32 scores, higher = more anomalous (M = 1: one row).
        """
        self.check_fitted()
        batch_size = default_score_batch(self.n_members) if batch_size is None else check_positive_int(
            batch_size, "batch_size")
        if compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {compute_dtype!r}")
        if member_data:
            X, X_first = self._check_member_data(X, min_rows=1)
            if self.n_members == 1:
                X, member_data = X_first, False
        else:
            X = self._validate_input(X)
        keys = self._score_keys(key)
        return self._member_scores(X, batch_size, keys, compute_dtype, member_data=member_data, scaled=False)

    def _placed_for_scoring(self, tree, mesh):
        """An ensemble's state replicated over the scoring mesh: trained with its members split
        over devices, its arrays may sit on a device subset that the rows' mesh does not match."""
        if self.n_members == 1 or mesh is None:
            return tree
        return jax.device_put(tree, parallel.replicated(mesh))

    def _score_keys(self, key: jax.Array | None) -> jax.Array:
        """([M,] 2) scoring keys: the members' own, or ``key`` split over the members."""
        if key is None:
            return self._member_keys(_STREAM_SCORE)
        if not isinstance(key, (jax.Array, np.ndarray)) or not (
                jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 0
                or key.dtype == np.uint32 and key.shape == (2,)):
            raise TypeError(f"key must be a PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), got {key!r}")
        return key if self.n_members == 1 else jax.random.split(key, self.n_members)

    def _score_rows(self, X, chunk: int, mesh, key, compute_dtype: str, row_offset: int,
                    member_scores: bool) -> np.ndarray:
        fn = self._jitted_score(compute_dtype, member_scores=member_scores)
        keys = self._score_keys(key)
        params, extra = self._placed_for_scoring((self.params, self._score_inputs()), mesh)
        out = map_chunks(
            lambda x, offset: fn(params, extra, x, offset, keys), X, chunk,
            sharding=parallel.row_sharding(mesh), row_offset=row_offset,
        ).astype(np.float32)
        return out

    def _member_scores(self, X, batch_size: int, keys, compute_dtype: str, member_data: bool,
                       scaled: bool) -> np.ndarray:
        """(M, N) member scores of validated X ((N, *S), or (M, N, *S) with member_data);
        ``scaled``: X is already in the scaled space (the training rows after fit)."""
        fn = self._jitted_score(compute_dtype, member_scores=True, member_data=member_data, scaled=scaled)
        params, extra = self._placed_for_scoring((self.params, (self.scaler, self._score_extra())),
                                                 parallel.local_mesh(self.devices))
        if member_data:  # chunks along the rows: (N, M, *S)
            X = jnp.moveaxis(X, 0, 1) if isinstance(X, jax.Array) else np.moveaxis(np.asarray(X), 0, 1)
        out = self._map_rows(lambda x, offset: fn(params, extra, x, offset, keys), X, batch_size)
        return members.per_member(out.T if self.n_members > 1 else out, self.n_members).astype(np.float32)

    def _map_rows(self, fn: Callable, X, batch_size: int) -> np.ndarray:
        """fn(x (C, *S), offset) -> (C, ...) over X (N, *S) in fixed padded chunks, split over
        the local devices like :meth:`score` (no validation, no scaling: X is used as given)."""
        mesh = parallel.local_mesh(self.devices)
        chunk = parallel.round_up(effective_chunk_size(X.shape[0], batch_size), parallel.mesh_size(mesh))
        return np.asarray(map_chunks(fn, X, chunk, sharding=parallel.row_sharding(mesh)))

    def _score_inputs(self) -> tuple:
        """The ``extra`` argument of :meth:`_jitted_score`'s function: (scaler or None, _score_extra()),
        and for several members the members' calibration beside it."""
        inputs = (self.scaler, self._score_extra())
        if self.n_members == 1:
            return inputs
        if self.member_calibration is None:
            if self.fit_config.get("member_data"):
                raise NotFittedError(
                    f"this {type(self).__name__}'s members were fitted on one training set each (member_data): "
                    "they have no combined score; use score_members(X) or member(i)")
            raise NotFittedError(f"{type(self).__name__} has no member calibration: call fit(X) first")
        return (inputs, {k: jnp.asarray(v) for k, v in self.member_calibration.items()})

    def _jitted_score(self, compute_dtype: str = "float32", member_scores: bool = False,
                      member_data: bool = False, scaled: bool = False) -> Callable:
        """jit(fn(params, (scaler, extra), x (C, *S) raw rows, offset, keys) -> scores).

        The input scaling runs inside the program, in float32 before any bf16 cast (``scaled``:
        the rows are already scaled). One member: its (C,) scores. Several: (C, M) member
        scores with ``member_scores`` (x (C, M, *S) with ``member_data``), else their
        combination (:meth:`_combine_members`), (C,).
        """
        cache_key = (self._n_score_samples(), compute_dtype, getattr(self, "scoring_kernel", None),
                     member_scores, member_data, scaled)
        if cache_key not in self._score_jit:
            fn = self._score_chunk_fn(self._n_score_samples())
            if compute_dtype == "bfloat16":
                fn = _in_dtype(fn, jnp.bfloat16)
            fn = _scaled_inputs(fn, skip=scaled)
            n = self.n_members
            if n > 1:
                per_member = members.over_members(fn, (0, (None, 0), 1 if member_data else None, None, 0), n,
                                                  self.fit_config.get("member_group_size"))
                if member_scores:
                    def fn(params, scaler_and_extra, x, offset, keys):
                        return jnp.moveaxis(per_member(params, scaler_and_extra, x, offset, keys), 0, 1)
                else:
                    def fn(params, extra, x, offset, keys):
                        scaler_and_extra, calibration = extra
                        return _combine_members(per_member(params, scaler_and_extra, x, offset, keys), calibration)
            self._score_jit[cache_key] = jax.jit(fn)
        return self._score_jit[cache_key]

    def infer_threshold(self, X, threshold_perc: float = 95.0, batch_size: int = DEFAULT_SCORE_BATCH) -> float:
        """Sets the threshold to the ``threshold_perc`` percentile of score(X) (alibi-detect semantics)."""
        threshold_perc = check_percentile(threshold_perc, "threshold_perc")
        scores = self.score(X, batch_size=batch_size)
        self.threshold = percentile_threshold(scores, threshold_perc)
        self.fit_config["threshold_perc"] = float(threshold_perc)
        return self.threshold

    def predict(
        self, X, batch_size: int = DEFAULT_SCORE_BATCH, return_instance_score: bool = True, key: jax.Array | None = None
    ) -> dict:
        """alibi-detect's prediction dict.

        Returns:
          {'meta': {...}, 'data': {'instance_score': float32 (N,) or None, 'feature_score': None or
          (N, *S), 'is_outlier': int64 (N,)}}; is_outlier = score > threshold (strict), and a score
          that is not a number is never reported as an inlier.
        """
        self.check_fitted()
        check_threshold(self)
        scores = self.score(X, batch_size=batch_size, key=key)
        data = {
            "instance_score": scores.astype(np.float32) if return_instance_score else None,
            "feature_score": self._feature_score(X, batch_size) if return_instance_score else None,
            "is_outlier": flag_outliers(scores, self.threshold),
        }
        return {"meta": dict(self.meta), "data": data}

    def _feature_score(self, X, batch_size: int):
        return None

    def params_like(self, input_shape: tuple[int, ...]):
        """The shapes of the parameters (``jax.ShapeDtypeStruct`` leaves, with the leading member
        axis when M > 1) for rows of ``input_shape``: builds the model, initialises nothing."""
        sample = np.zeros((2,) + tuple(input_shape), np.float32)
        self._build(sample)
        one = jax.eval_shape(lambda: self.model.init(jax.random.PRNGKey(0), jnp.asarray(sample)))
        return jax.tree.map(lambda a: _with_members(a, self.n_members), one)

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
        det._score_jit = {}
        return det

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """:func:`vaegmm_jax.save_detector` (self, path)."""
        save_detector(self, path)

    def config_dict(self) -> dict:
        raise NotImplementedError

    def _member_config(self) -> dict:
        """The members' part of :meth:`config_dict` (nothing for one member: its checkpoint is
        what a single detector always wrote)."""
        if self.n_members == 1:
            return {}
        return {"n_members": self.n_members, "member_seeds": list(self.member_seeds)}

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
        return out

    def set_extra_arrays(self, arrays: dict[str, Any]) -> None:
        if "member_calibration" in arrays:
            self.member_calibration = {k: np.asarray(v, np.float32) for k, v in arrays["member_calibration"].items()}
        if "scaler" in arrays:
            self.scaler = scaling.Scaler(shift=np.asarray(arrays["scaler"]["shift"], np.float32),
                                         scale=np.asarray(arrays["scaler"]["scale"], np.float32))


class _Placement(NamedTuple):
    """Where a fit's arrays live (see :meth:`BaseDetector._placement`)."""

    layout: members.MemberLayout | None
    batch_sharding: Any
    state_sharding: Any
    x_sharding: Any
    out_shardings: dict


def _copy_unfitted(det: BaseDetector) -> BaseDetector:
    """A copy of ``det``'s configuration and model description without its fitted state."""
    state = {name: getattr(det, name) for name in ("params", "opt_state", "_score_jit", "history", "member_history")}
    try:
        for name in state:
            setattr(det, name, None if name in ("params", "opt_state") else {})
        # jax Devices cannot be deep-copied: the copy shares them (the ``devices`` attribute)
        clone = copy.deepcopy(det, {id(d): d for d in det.devices or ()})
    finally:
        for name, value in state.items():
            setattr(det, name, value)
    return clone


def _save_from_fit(detector: BaseDetector, path, multi_process: bool) -> None:
    """save_detector(detector, path) from process 0 only: every process holds the same state."""
    if not multi_process or jax.process_index() == 0:
        save_detector(detector, path)


def check_threshold(detector) -> float:
    """The detector's threshold, refused when it is unset or not a finite number."""
    if detector.threshold is None:
        raise NotFittedError(
            f"{type(detector).__name__} has no threshold: pass threshold= to the constructor or call "
            "infer_threshold(X) before predict")
    if not np.isfinite(float(detector.threshold)):
        raise ValueError(f"{type(detector).__name__}.threshold is {detector.threshold!r}: it must be a finite number")
    return float(detector.threshold)


def percentile_threshold(scores: np.ndarray, threshold_perc: float) -> float:
    """The ``threshold_perc`` percentile of the scores; refused (never a NaN threshold) when a
    score is not finite."""
    scores = np.asarray(scores)
    bad = ~np.isfinite(scores)
    if bad.any():
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), scores.shape))
        raise ValueError(f"{int(bad.sum())} scores are not finite (the first at index {first}): no threshold "
                         "can be inferred from them")
    return float(np.percentile(scores, threshold_perc))


def flag_outliers(scores: np.ndarray, threshold: float) -> np.ndarray:
    """int (N, ...) 1 where score > threshold; a NaN score is flagged too (never an inlier)."""
    return (~(np.asarray(scores) <= threshold)).astype(int)


def _scaled_inputs(fn: Callable, skip: bool = False) -> Callable:
    """fn(params, extra, x, offset, key) -> fn'(params, (scaler, extra), x, offset, key) on scaled x
    (``skip``: x is already scaled)."""

    def wrapped(params, scaler_and_extra, x, offset, key):
        scaler, extra = scaler_and_extra
        if scaler is not None and not skip:
            x = scaling.apply_scaler(scaler, x.astype(jnp.promote_types(x.dtype, jnp.float32)))
        # A finite row far beyond float32's comfortable range (x 1e20, or 3e38 divided by a
        # scale below 1) would overflow the squared errors and the mixture's quadratic form into
        # inf and then NaN. Clipped to +-SCORE_INPUT_LIMIT, every such row scores as a row at
        # that distance: finite, and as outlying as any row can be (in-range values are unchanged).
        x = jnp.clip(x, -SCORE_INPUT_LIMIT, SCORE_INPUT_LIMIT)
        return fn(params, extra, x, offset, key)

    return wrapped


def robust_calibration(components: np.ndarray) -> dict[str, np.ndarray]:
    """{'center': median (C,), 'scale': interquartile range (C,)} of (N, C) training-row
    scores or score components; a zero or non-finite spread falls back to the standard
    deviation, then 1."""
    comps = np.asarray(components, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # a member that failed may score inf/NaN
        q25, med, q75 = np.percentile(comps, [25.0, 50.0, 75.0], axis=0)
        scale = q75 - q25
        std = comps.std(axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, np.where(np.isfinite(std) & (std > 1e-12), std, 1.0))
    return {"center": med.astype(np.float32), "scale": scale.astype(np.float32)}


def _combine_members(scores: jax.Array, calibration: dict) -> jax.Array:
    """(M, C) member scores -> (C,) ensemble scores: the mean over the members of each member's
    score standardised by its median and interquartile range on the training rows (so no
    member dominates by its scale). Per-feature scores (M, C, *S) are averaged as they are."""
    if scores.ndim > 2:
        return jnp.mean(scores, axis=0)
    center = calibration["center"][:, None]
    scale = calibration["scale"][:, None]
    return jnp.mean((scores - center) / scale, axis=0)


def _with_members(a: jax.ShapeDtypeStruct, n_members: int) -> jax.ShapeDtypeStruct:
    """The stacked shape of one member's array (unchanged for M = 1)."""
    if n_members == 1:
        return a
    return jax.ShapeDtypeStruct((n_members,) + tuple(a.shape), a.dtype)


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
