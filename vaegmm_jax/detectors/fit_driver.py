"""The fit engine of every detector: trains the M members as one jitted program, then fixes
the after-fit state (the mixture) and the members' calibration.

:class:`FitDriver` is a mixin of :class:`vaegmm_jax.detectors.base.BaseDetector`: it reads the
detector's settings and calls its extension hooks (``build_model``, ``training_objective``,
``after_fit_compiler``, ``after_fit``), so a detector class only says what differs between models.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, NamedTuple, TypedDict

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from vaegmm_jax.core import vae as vae_lib
from vaegmm_jax.engine import members, parallel, training
from vaegmm_jax.engine.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LEARNING_RATE,
    CompileOptions,
    FitOptions,
    auto_epochs,
    default_optimizer,
    xla_options,
)
from vaegmm_jax.engine.members import STREAM_INIT, STREAM_SCORE, STREAM_TRAIN
from vaegmm_jax.engine.scoring import robust_calibration
from vaegmm_jax.engine.validation import check_array, check_positive_int
from vaegmm_jax.io.checkpoint import restore_training_state, save_detector


class FitRun(TypedDict, total=False):
    """How a fit runs, the same for every detector (``detector.fit(X, ..., **run)``).

    Attributes:
      optimizer: an optax transformation (default adam, learning rate 1e-3).
      epochs: training length (default None: about 2,000 optimizer steps, at least one pass;
        :func:`vaegmm_jax.engine.config.auto_epochs`).
      batch_size: minibatch rows (default None: 128, at most N).
      verbose: a per-epoch progress bar (default True; shown only on a terminal).
      log_metric: (name, fn(x (B, F), x' (B, F)) -> (B,) or ()) logged per epoch.
      checkpoint_dir: save the detector there at the end (and every ``checkpoint_every`` epochs).
      checkpoint_every: epochs between saves.
      resume: continue from ``checkpoint_dir`` up to ``epochs`` in total.
      options: how the engine runs (:class:`vaegmm_jax.engine.config.FitOptions`).
    """

    optimizer: optax.GradientTransformation | None
    epochs: int | None
    batch_size: int | None
    verbose: bool
    log_metric: tuple[str, Callable] | None
    checkpoint_dir: str | os.PathLike | None
    checkpoint_every: int | None
    resume: bool
    options: FitOptions | None


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss or gradient; the detector keeps the last good parameters."""


class FitDriver:
    """The fit engine (a mixin of BaseDetector; see the module docstring)."""

    # -- training: the one engine --------------------------------------------------------
    def _fit(
        self,
        X,
        fit_kwargs: dict,
        *,
        optimizer: optax.GradientTransformation | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        verbose: bool = True,
        log_metric: tuple[str, Callable] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        resume: bool = False,
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
            self.build_model(X_rows[: min(len(X_rows), 8)])
        if self.input_shape is None:  # also when a whole model was passed in
            self.input_shape = tuple(X_rows.shape[1:])
        opt_desc = {"name": "adam", "learning_rate": DEFAULT_LEARNING_RATE} if optimizer is None else {"name": "custom"}
        optimizer = optimizer if optimizer is not None else default_optimizer()
        n_rows = X_rows.shape[0]
        batch_size = min(batch_size, n_rows)
        epochs_requested = epochs
        if epochs is None:
            epochs = auto_epochs(n_rows, batch_size, options.train_steps)

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
        objective = self.training_objective(X_rows, fit_kwargs)
        self.recon_cov = recon_cov = objective.recon_cov
        if recon_cov is not None:
            fit_kwargs = dict(fit_kwargs, cov_kind=recon_cov.kind)
        if member_data and recon_cov is not None and recon_cov.kind != "sim":
            raise ValueError(
                f"one training set per member with cov_elbo {recon_cov.kind!r} (estimated from the data) would need "
                "one loss per member; use cov_elbo=dict(sim=...) or shared data")
        self.fit_config = dict(fit_kwargs, epochs=epochs, batch_size=batch_size, optimizer=opt_desc,
                               scaler=None if self.scaler is None else self.resolved_scaler_kind(X_rows))
        if epochs_requested is None:
            self.fit_config["epochs_rule"] = f"auto: about {options.train_steps} optimizer steps"
        if options.compile != CompileOptions():  # a setting of this fit, kept with the checkpoint
            self.fit_config["compile"] = options.compile.to_json()
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
            metric_fn = self._metric_fn(metric)
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
                training.make_train_epoch(objective.loss_fn, optimizer, term_names, batch_size, metric_fn=metric_fn,
                                          batch_sharding=place.batch_sharding),
                n_members, member_data, len(term_names_out), per_call, group_size),
            donate_argnums=0,
            compiler_options=xla_options(options.compile.epoch),
            **place.out_shardings,
        )

        fresh = self.params is None
        if fresh:
            self.history, self.member_history = {}, {}
            self.epochs_done = 0
        initial_state, state_like, init_device = self._initial_state(optimizer, X, batch_size, member_data, resume,
                                                                    options.compile)
        base_keys = self.member_keys(STREAM_TRAIN)
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
            # score programs of an earlier fit are dropped here, once the model and its settings are
            # final (not after the fit: the after-fit compilation may add this fit's score program)
            self.clear_compiled()
            compile_after = self.after_fit_compiler(x_after, batch_size, params_like, member_data, options.compile)
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
        wait_started = time.perf_counter()
        if after_program is not None:
            try:
                compiled = after_program.result()
            except Exception:  # compile it again in the foreground, where its error (if any) surfaces
                compiled = None
        after_started = time.perf_counter()
        self.fit_seconds["after_fit_compile_wait"] = after_started - wait_started
        strict = options.on_nonfinite == "raise"
        self.member_after_fit_ok = members.per_member(
            self.after_fit(x_after, batch_size, compiled, member_data, strict, options.compile.run_once),
            n_members).astype(bool)
        self.member_calibration = None
        if n_members > 1 and not member_data:  # members of different data make no one ensemble score
            self.member_calibration = self._calibrate_members(x_after, batch_size)
        self.fit_seconds.update(epochs=sum(self.epoch_seconds), after_fit=time.perf_counter() - after_started,
                                total=time.perf_counter() - fit_started)
        del x_dev, x_after
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

    def _initial_state(self, optimizer, X, batch_size: int, member_data: bool, resume: bool,
                       compile_options: CompileOptions):
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

            init_program = jax.jit(init_state, compiler_options=xla_options(compile_options.init))
            init_keys = np.asarray(self.member_keys(STREAM_INIT)).reshape(n_members, -1)
            init_x = [np.asarray(X[m, :batch_size] if member_data else X[:batch_size]) for m in range(n_members)]
            init_device = compile_options.init_device()
            if init_device is not None:  # committed inputs: the program runs there
                init_keys, init_x = jax.device_put((init_keys, init_x), init_device)

            def initial_state():
                # each member's own initialisation (one compilation), stacked: bit-identical
                # to what a single detector with the member's seed starts from
                return members.stack([init_program(init_keys[m], init_x[m]) for m in range(n_members)])

            one_like = init_program.eval_shape(init_keys[0], init_x[0])
            return initial_state, jax.tree.map(lambda a: members.stacked_shape(a, n_members), one_like), init_device
        if self.opt_state is None or not resume:
            init_program = jax.jit(
                members.over_members(lambda p: training.init_train_state(p, optimizer), (0,), n_members),
                compiler_options=xla_options(compile_options.init),
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
        scores = self._member_scores(X, self._after_fit_chunk(batch_size), self.member_keys(STREAM_SCORE), "float32",
                                     member_data=False, scaled=True)
        return robust_calibration(scores.T)

    def _metric_fn(self, metric: Callable) -> Callable:
        """(x (B, *S), row_weights (B,), params, key) -> the row-weighted mean of
        metric(x (B, F), x' (B, F)) (per row (B,) or already a scalar)."""

        def metric_fn(x, row_weights, params, key):
            x_recon = self.reconstruct(params, x, key)
            value = jnp.asarray(metric(x.reshape(x.shape[0], -1), x_recon.reshape(x.shape[0], -1)))
            return vae_lib.weighted_mean(value, row_weights) if value.ndim == 1 else value

        return metric_fn


class _Placement(NamedTuple):
    """Where a fit's arrays live (see :meth:`BaseDetector._placement`)."""

    layout: members.MemberLayout | None
    batch_sharding: Any
    state_sharding: Any
    x_sharding: Any
    out_shardings: dict


def _save_from_fit(detector, path, multi_process: bool) -> None:
    """save_detector(detector, path) from process 0 only: every process holds the same state."""
    if not multi_process or jax.process_index() == 0:
        save_detector(detector, path)


def _progress(iterable: Iterable, verbose: bool, desc: str):
    """A per-epoch tqdm bar when verbose and stderr is a terminal (never in logs or CI)."""
    if not verbose:
        return iterable
    return tqdm(iterable, desc=desc, unit="epoch", disable=None, file=sys.stderr)


__all__ = ["FitDriver", "FitRun", "NonFiniteLossError"]
