"""Train and score N independently seeded detectors as ONE vmapped program.

Accuracy tables need means and standard deviations over many seeds (DAGMM's
run-to-run spread is large). Training the seeds one after the other costs N
compilations, N passes over the data and, on a GPU, N times the per-step launch
latency of a tiny network. Here the N models are stacked on a leading axis and
every stage is ``jax.vmap``-ed over it:

* initialisation: the detector's jitted ``model.init`` per seed key, stacked;
* training: :func:`vaegmm_jax.training.make_train_epoch` over (state, key), the data
  shared (``in_axes=None``) or one training set per seed; several epochs run inside
  one jitted ``lax.scan`` (``epochs_per_call``), so the host syncs once per call;
* the mixture (GMM detectors): the two-pass additive statistics of
  :func:`vaegmm_jax.detectors.gmm_detectors.fit_mixture`, as a scan over
  fixed-size chunks of the device-resident data;
* scoring: the detector's own per-chunk score function, scanned over chunks.

``seed_batch_size=k`` replaces the vmap over seeds by ``lax.map`` over groups of k
seeds (:func:`over_seeds`): still one program, for nets that XLA batches poorly over
their weights (convolutions on a CPU become grouped convolutions, slower per seed
than separate ones).

Seed ``i`` of a multi-seed run is the same computation as a single detector built
by ``factory(seeds[i])`` and fitted with the same arguments: the init key is
``fold_in(PRNGKey(seed), 0)``, epoch ``e`` uses
``training.epoch_key(fold_in(PRNGKey(seed), 1), e)``, the mixture's latent noise
``fold_in(PRNGKey(seed), 2)`` and scoring ``fold_in(PRNGKey(seed), 3)`` (the
:class:`~vaegmm_jax.detectors.base.BaseDetector` key streams). Results agree to
float32 rounding (batched matmuls may differ in the last bits).

Devices: the seed axis is split over a 1-D mesh of the local devices (``devices=``,
default the template detector's ``devices`` attribute, else all local devices). The
stacked state, keys and per-seed data are placed with ``NamedSharding(mesh,
PartitionSpec("seeds"))``, shared data is replicated (a full copy on every device
used), and the programs are jitted with
seed-sharded outputs: XLA partitions the vmapped program by seeds, every device trains
and scores its own seeds with no cross-device communication, and seed ``i`` equals
seed ``i`` of a one-device run (float32 rounding). With D devices each device holds
``ceil(S / D)`` seeds; the fewest devices that achieve this are used and, when they do
not divide S, the seed axis is padded with copies of the last seed (computed, then
dropped): e.g. S=3 on 4 devices uses 3 devices, S=5 on 4 devices uses 3 devices with
one padding seed. A padded run returns its stacked arrays on the first device (an
uneven split cannot be expressed as a sharding); an unpadded one keeps them sharded.

Differences from ``detector.fit``: a seed whose loss or gradients become non-finite
does not raise; it keeps the parameters of its last good step, stops training and
is reported in :attr:`MultiSeedFit.failed_epoch`. ``epochs=0`` is allowed (an
untrained, randomly initialised model with its mixture fitted on the data: the
random-initialisation baseline). Checkpoints, ``resume`` and ``log_metric`` are not
supported.

Shapes: S seeds (``n_seeds``), N rows, row shape ``*R`` (F features or H x W x C).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vaegmm_jax import training
from vaegmm_jax.detectors.base import (
    _STREAM_INIT,
    _STREAM_SCORE,
    _STREAM_STATS,
    _STREAM_TRAIN,
    FIXED_SCORE_BATCH,
    DEFAULT_BATCH_SIZE,
    DEFAULT_LEARNING_RATE,
    BaseDetector,
    default_optimizer,
)
from vaegmm_jax.streaming import effective_chunk_size
from vaegmm_jax.validation import check_array, check_positive_int

__all__ = ["MultiSeedFit", "fit_many", "over_seeds", "score_many", "seed_key"]

DetectorFactory = Callable[[int], BaseDetector]

SEED_AXIS = "seeds"


def seed_key(seed: int, stream: int) -> jax.Array:
    """The key a single detector with ``seed`` uses for ``stream`` (0 init, 1 train, 2 stats, 3 score)."""
    return jax.random.fold_in(jax.random.PRNGKey(int(seed)), stream)


def _stream_keys(seeds: Sequence[int], stream: int) -> jax.Array:
    """(S, 2) uint32 keys, one per seed, for ``stream``."""
    return jnp.stack([seed_key(s, stream) for s in seeds])


def _seed_split(n_seeds: int, n_devices: int) -> tuple[int, int]:
    """(devices used, padding seeds) for S seeds over at most D devices.

    Each device gets ceil(S / D) seeds (the fewest possible); of the device counts that
    achieve this the smallest is taken, which also minimises the padding:
    S=4, D=4 -> (4, 0); S=3, D=4 -> (3, 0); S=5, D=4 -> (3, 1); S=7, D=4 -> (4, 1).
    """
    per_device = -(-n_seeds // max(n_devices, 1))
    used = -(-n_seeds // per_device)
    return used, used * per_device - n_seeds


@dataclass(frozen=True)
class _SeedLayout:
    """Where the (S_pad, ...) stacked arrays of a run live: ``mesh`` over the devices
    used, ``n_pad`` copies of the last seed appended to the S real ones."""

    mesh: Mesh
    n_seeds: int
    n_pad: int

    @classmethod
    def make(cls, n_seeds: int, devices: Sequence[jax.Device]) -> "_SeedLayout":
        used, n_pad = _seed_split(n_seeds, len(devices))
        return cls(Mesh(np.asarray(list(devices)[:used]), (SEED_AXIS,)), n_seeds, n_pad)

    @property
    def seeds(self) -> NamedSharding:
        """Leading (seed) axis split over the mesh."""
        return NamedSharding(self.mesh, PartitionSpec(SEED_AXIS))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def put(self, tree):
        """Every (S, ...) leaf padded to (S_pad, ...) with the last seed and split by seeds."""
        if self.n_pad:
            idx = np.minimum(np.arange(self.n_seeds + self.n_pad), self.n_seeds - 1)
            take = lambda a: jnp.take(a, idx, axis=0) if isinstance(a, jax.Array) else np.asarray(a)[idx]  # noqa: E731
            tree = jax.tree.map(take, tree)
        return jax.device_put(tree, self.seeds)

    def unpad(self, tree):
        """(S_pad, ...) -> (S, ...); a padded run's arrays go to the first device, since an
        S that the mesh does not divide has no NamedSharding."""
        if not self.n_pad:
            return tree
        first = self.mesh.devices.flat[0]
        return jax.tree.map(lambda a: jax.device_put(a, first)[: self.n_seeds], tree)


def _resolve_devices(devices, template: BaseDetector) -> tuple[jax.Device, ...]:
    """``devices``, else the template detector's ``devices`` attribute, else all local devices."""
    if devices is None:
        devices = getattr(template, "devices", None)
    devices = tuple(devices) if devices is not None else tuple(jax.local_devices())
    if not devices:
        raise ValueError("devices is empty")
    return devices


@dataclass
class MultiSeedFit:
    """The result of :func:`fit_many`: S fitted models stacked on a leading axis.

    Attributes:
      seeds: the S seeds.
      template: an unfitted-but-built detector (``factory(seeds[0])``) holding the
        model description shared by all seeds.
      params: model parameters, every leaf (S, ...).
      opt_state: optax state, every leaf (S, ...).
      extra: the state scoring needs beyond params, every leaf (S, ...):
        ``GMMParams`` (phi (S, K), mu (S, K, D), cov (S, K, D, D)) for GMM
        detectors, ``None`` for others.
      history: {term: (S, epochs) float array}; NaN after a seed failed.
      failed_epoch: (S,) int, the 0-based epoch in which a seed first hit a
        non-finite loss or gradient (its training stopped there), -1 if none.
      mixture_ok: (S,) bool, the fitted mixture is finite and positive definite
        (always True for detectors without a mixture).
      epochs: epochs trained.
      batch_size: the minibatch size used (``min(batch_size, N)``).
      fit_kwargs: the detector's internal fit settings (loss weights, cov_elbo...).
      fit_args: the arguments given to :func:`fit_many` (to rebuild single detectors).
      per_seed_data: whether each seed had its own training set.
      n_rows: N, training rows per seed.
      wall_s: seconds spent in :func:`fit_many` (compilation included).
      train_calls: number of jitted training calls made.
      mixture_s: wall seconds of the mixture fit (compilation included; 0 without a mixture).
      call_s: wall seconds of each training call (the first includes compilation).
      epochs_per_call: epochs per training call.
      devices: the devices given to :func:`fit_many`; the seed axis was split over
        the first of them (see the module docstring), and :func:`score_many` splits
        it the same way by default.
    """

    seeds: tuple[int, ...]
    template: BaseDetector
    params: Any
    opt_state: Any
    extra: Any
    history: dict[str, np.ndarray]
    failed_epoch: np.ndarray
    mixture_ok: np.ndarray
    epochs: int
    batch_size: int
    fit_kwargs: dict
    fit_args: dict
    per_seed_data: bool
    n_rows: int
    wall_s: float
    train_calls: int = 0
    mixture_s: float = 0.0
    call_s: list = field(default_factory=list)
    epochs_per_call: int = 0
    devices: tuple = ()
    factory: DetectorFactory | None = field(default=None, repr=False)
    seed_batch_size: int | None = None
    _score_fns: dict = field(default_factory=dict, repr=False)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def ok(self) -> np.ndarray:
        """(S,) bool: trained without a non-finite step and with a valid mixture."""
        return (self.failed_epoch < 0) & self.mixture_ok

    def detector(self, i: int) -> BaseDetector:
        """Seed ``i`` as an ordinary fitted detector (``score``, ``predict``, ``save`` work).

        Built with the factory given to :func:`fit_many` (or a deep copy of the
        template detector with its seed set), then filled with seed ``i``'s
        parameters, optimizer state, mixture and history.
        """
        seed = self.seeds[i]
        det = self.factory(seed) if self.factory is not None else _copy_with_seed(self.template, seed)
        det.model = self.template.model
        det.input_shape = self.template.input_shape
        if det.data_type is None:
            det.data_type = self.template.data_type
            det.meta["data_type"] = det.data_type
        # through the host: the result is an uncommitted array, which the detector's own
        # jitted programs may place on their own mesh (a slice of a seed-sharded array
        # would stay committed to this run's devices)
        pick = lambda a: jax.device_put(np.asarray(a)[i])  # noqa: E731
        det.params = jax.tree.map(pick, self.params)
        det.opt_state = jax.tree.map(pick, self.opt_state)
        if self.extra is not None and hasattr(det, "gmm_params"):
            det.gmm_params = jax.tree.map(pick, self.extra)
        if hasattr(self.template, "recon_cov"):
            det.recon_cov = self.template.recon_cov
        det.fit_config = dict(self.fit_kwargs, epochs=self.epochs, batch_size=self.batch_size,
                              optimizer=self.fit_args.get("_opt_desc", {"name": "custom"}))
        det.history = {k: [float(v) for v in h[i] if np.isfinite(v)] for k, h in self.history.items()}
        failed = int(self.failed_epoch[i])
        det.epochs_done = self.epochs if failed < 0 else failed
        return det


def _copy_with_seed(template: BaseDetector, seed: int) -> BaseDetector:
    # jax Devices cannot be deep-copied: the copy shares the template's (``devices`` attribute)
    det = copy.deepcopy(template, {id(d): d for d in getattr(template, "devices", None) or ()})
    det.seed = int(seed)
    det.params = det.opt_state = None
    return det


def _capture_fit(det: BaseDetector, X, fit_args: dict) -> dict:
    """Runs ``det.fit(X, **fit_args)`` up to the point where it calls ``_fit`` and returns
    what it would pass to ``_fit`` (its argument defaults, validation and the detector's
    internal ``fit_kwargs``), without training. Keeps multi-seed runs in step with the
    detectors' own ``fit`` without duplicating their argument handling."""
    captured: dict = {}

    def fake_fit(X, **kwargs):
        captured.update(kwargs, X=X)
        return {}

    det._fit = fake_fit  # an instance attribute shadows the method for this call only
    try:
        det.fit(X, verbose=False, **fit_args)
    finally:
        del det._fit
    if not captured:
        raise TypeError(f"{type(det).__name__}.fit did not go through BaseDetector._fit; it is not supported")
    for name in ("checkpoint_dir", "log_metric", "checkpoint_every"):
        if captured.get(name) is not None:
            raise ValueError(f"fit_many does not support {name}")
    if captured.get("resume"):
        raise ValueError("fit_many does not support resume")
    return captured


def over_seeds(fn: Callable, in_axes: Sequence[int | None], seed_batch_size: int | None = None) -> Callable:
    """``jax.vmap(fn, in_axes)``, or the seeds in groups of ``seed_batch_size`` (``lax.map``).

    Vmapping a convolution over its kernels makes XLA run one grouped convolution,
    which its CPU backend computes several times slower per seed than separate
    convolutions (conv VAE, 3 seeds: 0.8 s per seed-step vmapped vs 0.45 s alone);
    ``lax.map`` with ``batch_size`` runs groups of seeds one after the other inside
    the same program (still one compilation). Each seed computes the same thing
    either way (float32 rounding aside).

    Args:
      fn: the per-seed function.
      in_axes: 0 for arguments with a leading seed axis, None for shared ones.
      seed_batch_size: seeds per group; None vmaps all seeds at once.
    """
    in_axes = tuple(in_axes)
    if seed_batch_size is None:
        return jax.vmap(fn, in_axes=in_axes)

    def mapped(*args):
        seeded = tuple(a for a, ax in zip(args, in_axes) if ax is not None)

        def one(per_seed):
            it = iter(per_seed)
            return fn(*(next(it) if ax is not None else a for a, ax in zip(args, in_axes)))

        return jax.lax.map(one, seeded, batch_size=seed_batch_size)

    return mapped


def _leading(mask: jax.Array, leaf: jax.Array) -> jax.Array:
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def _make_train_runner(
    train_epoch: Callable, per_seed: bool, n_terms: int, epochs_per_call: int, layout: _SeedLayout | None = None,
    seed_batch_size: int | None = None,
) -> Callable:
    """jit(run(state, alive, failed, x, base_keys, start, stop)) scanning ``epochs_per_call`` epochs.

    Epochs with index >= stop are skipped (``lax.cond`` on an unbatched predicate),
    so every call has the same shapes and the program compiles once. With a
    ``layout`` the outputs stay split by seeds (state, alive, failed: leading axis;
    terms (epochs_per_call, S, n_terms): axis 1), so the next call needs no transfer.
    """
    v_epoch = over_seeds(train_epoch, (0, 0 if per_seed else None, 0), seed_batch_size)
    v_epoch_key = jax.vmap(training.epoch_key, in_axes=(0, None))

    def run(state, alive, failed, x, base_keys, start, stop):
        n_seeds = alive.shape[0]

        def do_epoch(carry, epoch):
            state, alive, failed = carry
            new_state, result = v_epoch(state, x, v_epoch_key(base_keys, epoch))
            state = jax.tree.map(lambda n, o: jnp.where(_leading(alive, n), n, o), new_state, state)
            now_bad = alive & (result.first_bad_step >= 0)
            failed = jnp.where(now_bad, epoch, failed)
            # like a single detector's history: only fully good epochs are recorded
            terms = jnp.where((alive & ~now_bad)[:, None], result.terms, jnp.nan)
            return (state, alive & ~now_bad, failed), terms

        def skip(carry, epoch):
            return carry, jnp.full((n_seeds, n_terms), jnp.nan, jnp.float32)

        def body(carry, j):
            epoch = start + j
            return jax.lax.cond(epoch < stop, do_epoch, skip, carry, epoch)

        (state, alive, failed), terms = jax.lax.scan(
            body, (state, alive, failed), jnp.arange(epochs_per_call, dtype=jnp.int32)
        )
        return state, alive, failed, terms  # terms (epochs_per_call, S, n_terms)

    if layout is None:
        return jax.jit(run, donate_argnums=(0,))
    by_seed = layout.seeds
    terms_sharding = NamedSharding(layout.mesh, PartitionSpec(None, SEED_AXIS))
    return jax.jit(run, donate_argnums=(0,), out_shardings=(by_seed, by_seed, by_seed, terms_sharding))


def _chunk_gather(x: jax.Array, offset: jax.Array, chunk: int):
    """Rows [offset, offset + chunk) of x (N, *R), the rows past N replaced by the last row
    (like streaming.iter_chunks' padding), and their (chunk,) weights."""
    n = x.shape[0]
    rows = offset + jnp.arange(chunk, dtype=jnp.int32)
    xc = jnp.take(x, jnp.minimum(rows, n - 1), axis=0)
    return xc, (rows < n).astype(jnp.float32)


def _make_mixture_fn(
    model, chunk: int, n_rows: int, per_seed: bool, layout: _SeedLayout | None = None, seed_batch_size: int | None = None
) -> Callable:
    """jit(fn(params (S, ...), x, keys (S, 2)) -> (GMMParams with a leading S axis, (S,) finite)).

    The detector's own device-array mixture fit (the two passes of ``fit_mixture``),
    vmapped; with a ``layout`` its outputs are split by seeds.
    """
    from vaegmm_jax.detectors.gmm_detectors import mixture_from_device_array

    def one_seed(params, x, key):
        return mixture_from_device_array(model, params, x, key, chunk)

    out_shardings = None if layout is None else layout.seeds
    return jax.jit(over_seeds(one_seed, (0, 0 if per_seed else None, 0), seed_batch_size), out_shardings=out_shardings)


def _check_data(X, per_seed_data: bool, n_seeds: int, row_shape=None, name: str = "X"):
    """Validated float32 host or device data: (N, *R) shared or (S, N, *R) per seed."""
    if per_seed_data:
        if isinstance(X, (list, tuple)):
            X = np.stack([np.asarray(x) for x in X])
        if X.shape[0] != n_seeds:
            raise ValueError(f"per_seed_data: {name} must have a leading axis of {n_seeds} seeds, got shape {X.shape}")
        if isinstance(X, jax.Array):
            if X.dtype != jnp.float32:
                X = X.astype(jnp.float32)
            return X
        for i in range(n_seeds):
            check_array(X[i], name=f"{name}[{i}]", row_shape=row_shape, min_rows=1)
        return np.asarray(X, dtype=np.float32)
    return check_array(X, name=name, row_shape=row_shape, min_rows=1)


def _check_template_supported(template: BaseDetector, X) -> None:
    """fit_many trains the models of the paper protocols: unscaled rows, energy scores. The
    detectors' defaults (in-detector scaling, score_type 'energy_recon') are fitted by the
    detector's own ``fit`` only, until the two engines are one."""
    kind = template.resolved_scaler_kind(X)
    score_type = getattr(template, "score_type", None)
    if kind is not None or score_type == "energy_recon":
        raise ValueError(
            f"fit_many does not support in-detector scaling (scaler resolves to {kind!r}) or "
            f"score_type='energy_recon' (got {score_type!r}) yet: build the detector with scaler=None"
            + (", score_type='energy'" if score_type == "energy_recon" else "")
            + " (vaegmm_jax.presets.PAPER_SCORING), scaling the rows yourself, or fit each seed with det.fit"
        )


def fit_many(
    factory: DetectorFactory | BaseDetector,
    X,
    seeds: Sequence[int],
    *,
    per_seed_data: bool = False,
    epochs_per_call: int | None = 1000,
    devices: Sequence[jax.Device] | None = None,
    seed_batch_size: int | None = None,
    **fit_args: Any,
) -> MultiSeedFit:
    """Fits one detector per seed, all seeds in one vmapped program.

    Args:
      factory: ``factory(seed) -> unfitted detector`` (e.g.
        ``lambda s: presets.make_detector("thyroid", seed=s)``), or an unfitted
        detector used as a template (its own seed is ignored). Every seed must
        describe the same architecture.
      X: training rows, (N, *R) shared by all seeds, or (S, N, *R) with
        ``per_seed_data=True`` (one training set per seed, all of N rows).
      seeds: S integer seeds.
      per_seed_data: X carries a leading seed axis.
      epochs_per_call: epochs per jitted call (one host sync per call); ``None``
        runs all epochs in one call.
      devices: devices to split the seed axis over (default: the template
        detector's ``devices`` attribute, else all local devices); one device
        runs everything there. See the module docstring for S not divisible by
        the number of devices.
      seed_batch_size: train (and, through :func:`score_many`, score) the seeds in
        groups of this many, one group after the other (see :func:`over_seeds`; for
        conv nets on a CPU, 1 is fastest); None (default) vmaps all seeds at once.
        One device only.
      **fit_args: what the detector's ``fit`` takes: ``epochs`` (0 allowed: no
        training), ``batch_size``, ``optimizer``, loss weights, ``cov_elbo``...

    Returns:
      A :class:`MultiSeedFit`.

    Raises:
      ValueError: bad data, or per-seed data with a data-dependent reconstruction
        covariance (``cov_elbo`` cov_diag / cov_full), which would need one loss per seed.
    """
    t0 = time.perf_counter()
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds is empty")
    if isinstance(factory, BaseDetector):
        template_det, factory_fn = factory, None
        if template_det.params is not None:
            raise ValueError("the template detector is already fitted; pass an unfitted one or a factory")
        template = _copy_with_seed(template_det, seeds[0])
    else:
        factory_fn = factory
        template = factory(seeds[0])
    X = _check_data(X, per_seed_data, len(seeds))
    X0 = X[0] if per_seed_data else X
    _check_template_supported(template, X0)
    X0_host = np.asarray(X0) if not isinstance(X0, np.ndarray) else X0
    fit_args = dict(fit_args)
    if "epochs" not in fit_args:
        raise TypeError("fit_many needs epochs= (0 for an untrained model)")
    epochs = int(fit_args["epochs"])
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    # the detector's own fit() resolves defaults and builds its internal settings; it rejects
    # epochs=0, so ask with 1 and keep 0 ourselves.
    captured = _capture_fit(template, X0_host, dict(fit_args, epochs=max(epochs, 1)))
    X0_checked = captured["X"]
    fit_kwargs = captured["fit_kwargs"]
    if template.model is None:
        template._build(X0_checked[: min(len(X0_checked), 8)])
    template.input_shape = tuple(X0_checked.shape[1:])
    optimizer = captured.get("optimizer")
    opt_desc = {"name": "adam", "learning_rate": DEFAULT_LEARNING_RATE} if optimizer is None else {"name": "custom"}
    optimizer = optimizer if optimizer is not None else default_optimizer()
    n_rows = int(X0_checked.shape[0])
    batch = DEFAULT_BATCH_SIZE if captured["batch_size"] is None else captured["batch_size"]
    batch_size = min(check_positive_int(batch, "batch_size"), n_rows)
    loss_fn = template._make_loss(X0_checked, fit_kwargs)
    recon_cov = getattr(template, "recon_cov", None)
    if per_seed_data and recon_cov is not None and recon_cov.kind != "sim":
        raise ValueError(
            f"per-seed training sets with cov_elbo {recon_cov.kind!r} (estimated from the data) would need one "
            "loss per seed; use cov_elbo=dict(sim=...) or shared data"
        )
    model = template.model

    n_seeds = len(seeds)
    devices = _resolve_devices(devices, template)
    layout = _SeedLayout.make(n_seeds, devices)
    if seed_batch_size is not None:
        seed_batch_size = check_positive_int(seed_batch_size, "seed_batch_size")
        if layout.mesh.devices.size > 1:
            raise ValueError(
                f"seed_batch_size={seed_batch_size} runs seed groups one after the other on one device; with "
                f"{layout.mesh.devices.size} devices the seeds are split over devices instead: pass seed_batch_size=None "
                "or devices=[one device]"
            )
    n_run = n_seeds + layout.n_pad  # S_pad: seeds actually computed
    # shared data: one full copy per device, so each device's seeds gather their batches
    # locally; per-seed data: each device holds only its own seeds' training sets
    x_dev = layout.put(X) if per_seed_data else jax.device_put(X0_checked, layout.replicated)
    # The single detector's jitted init, called once per seed (one compilation; a vmapped
    # init compiles ~3x slower on a CPU and is no faster for a handful of tiny calls),
    # then stacked on the host: bit-identical to what each single detector starts from.
    init = jax.jit(model.init)
    # host copies: indexing device arrays eagerly with a Python int compiles a program per index
    init_keys = np.asarray(_stream_keys(seeds, _STREAM_INIT))
    init_x = np.asarray(X[:, :batch_size] if per_seed_data else X0_checked[:batch_size])
    per_seed_params = [init(init_keys[i], init_x[i] if per_seed_data else init_x) for i in range(n_seeds)]
    params = layout.put(jax.tree.map(lambda *leaves: np.stack([np.asarray(a) for a in leaves]), *per_seed_params))
    state = jax.jit(jax.vmap(lambda p: training.init_train_state(p, optimizer)), out_shardings=layout.seeds)(params)

    term_names = tuple(template.loss_terms)
    history = np.full((epochs, n_run, len(term_names)), np.nan, np.float32)
    failed = layout.put(np.full((n_seeds,), -1, np.int32))
    calls = per_call = 0
    call_s: list[float] = []
    if epochs > 0:
        per_call = epochs if epochs_per_call is None else min(check_positive_int(epochs_per_call, "epochs_per_call"), epochs)
        train_epoch = training.make_train_epoch(loss_fn, optimizer, term_names, batch_size)
        runner = _make_train_runner(train_epoch, per_seed_data, len(term_names), per_call, layout, seed_batch_size)
        alive = layout.put(np.ones((n_seeds,), bool))
        base_keys = layout.put(np.asarray(_stream_keys(seeds, _STREAM_TRAIN)))
        for start in range(0, epochs, per_call):
            t_call = time.perf_counter()
            state, alive, failed, terms = runner(
                state, alive, failed, x_dev, base_keys, np.int32(start), np.int32(epochs)
            )
            calls += 1
            n = min(per_call, epochs - start)
            history[start : start + n] = np.asarray(terms)[:n]  # the one host sync of the call
            call_s.append(time.perf_counter() - t_call)
    params, opt_state = state.params, state.opt_state

    extra = None
    mixture_ok = np.ones(n_seeds, bool)
    mixture_s = 0.0
    if hasattr(template, "gmm_params"):
        chunk = min(max(batch_size, 4096), -(-n_rows // 8) * 8)
        mixture = _make_mixture_fn(model, chunk, n_rows, per_seed_data, layout, seed_batch_size)
        t_mix = time.perf_counter()
        extra, finite = mixture(params, x_dev, layout.put(np.asarray(_stream_keys(seeds, _STREAM_STATS))))
        mixture_ok = np.asarray(finite)[:n_seeds].astype(bool)
        mixture_s = time.perf_counter() - t_mix
    del x_dev
    params, opt_state, extra = layout.unpad((params, opt_state, extra))
    jax.block_until_ready((params, extra))
    return MultiSeedFit(
        seeds=seeds,
        template=template,
        params=params,
        opt_state=opt_state,
        extra=extra,
        history={name: history[:, :n_seeds, j].T.copy() for j, name in enumerate(term_names)},
        failed_epoch=np.asarray(failed)[:n_seeds].astype(np.int64),
        mixture_ok=mixture_ok,
        epochs=epochs,
        batch_size=batch_size,
        fit_kwargs=fit_kwargs,
        fit_args=dict(fit_args, _opt_desc=opt_desc),
        per_seed_data=per_seed_data,
        n_rows=n_rows,
        wall_s=time.perf_counter() - t0,
        train_calls=calls,
        call_s=call_s,
        epochs_per_call=per_call,
        mixture_s=mixture_s,
        devices=devices,
        factory=factory_fn,
        seed_batch_size=seed_batch_size,
    )


def score_many(
    fit: MultiSeedFit,
    X,
    *,
    per_seed_data: bool = False,
    chunk_size: int = FIXED_SCORE_BATCH,
    devices: Sequence[jax.Device] | None = None,
) -> np.ndarray:
    """Scores rows with every seed's model, in one vmapped program.

    Row ``r`` of seed ``i`` gets the same latent noise as ``fit.detector(i).score(X)``
    (noise from the seed's score key and the row index), so the scores agree with the
    single detector's to float32 rounding.

    Args:
      fit: from :func:`fit_many`.
      X: (N, *R) rows scored by every seed, or (S, N, *R) with ``per_seed_data=True``.
      per_seed_data: X carries a leading seed axis.
      chunk_size: rows per chunk (all seeds at once: device memory grows with
        S / devices x chunk per device).
      devices: devices to split the seed axis over (default: ``fit.devices``, the
        split used for training, so the parameters are already in place); shared X
        is replicated on them, per-seed X split by seeds like the parameters.

    Returns:
      (S, N) float32 scores, higher = more anomalous.
    """
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    template = fit.template
    X = _check_data(X, per_seed_data, fit.n_seeds, row_shape=template.input_shape)
    n_rows = int(X.shape[1] if per_seed_data else X.shape[0])
    chunk = effective_chunk_size(n_rows, chunk_size)
    if devices is None:
        devices = fit.devices or None
    layout = _SeedLayout.make(fit.n_seeds, _resolve_devices(devices, template))
    # seed groups one after the other on one device only (several devices split the seeds)
    seed_batch = fit.seed_batch_size if layout.mesh.devices.size == 1 else None
    cache_key = (n_rows, chunk, per_seed_data, layout, seed_batch)
    fn = fit._score_fns.get(cache_key)
    if fn is None:
        fn = fit._score_fns[cache_key] = _make_score_fn(template, n_rows, chunk, per_seed_data, layout, seed_batch)
    x = layout.put(X) if per_seed_data else jax.device_put(X, layout.replicated)
    keys = layout.put(np.asarray(_stream_keys(fit.seeds, _STREAM_SCORE)))
    # an unpadded layout equal to the fit's: the parameters are already there (no copy)
    out = fn(layout.put(fit.params), layout.put(fit.extra), x, keys)
    return np.asarray(out, dtype=np.float32)[: fit.n_seeds]


def _make_score_fn(
    template: BaseDetector, n_rows: int, chunk: int, per_seed: bool, layout: _SeedLayout | None = None,
    seed_batch_size: int | None = None,
) -> Callable:
    """jit(fn(params (S, ...), extra (S, ...), x, keys (S, 2)) -> (S, N) scores), split by seeds with a ``layout``."""
    n_chunks = -(-n_rows // chunk)
    score_chunk = template._score_chunk_fn(template._n_score_samples())

    def one_seed(params, extra, x, key):
        def body(_, offset):
            xc, _w = _chunk_gather(x, offset, chunk)
            return None, score_chunk(params, extra, xc, offset, key)

        _, out = jax.lax.scan(body, None, jnp.arange(n_chunks, dtype=jnp.int32) * chunk)
        return out.reshape((n_chunks * chunk,) + out.shape[2:])[:n_rows]

    out_shardings = None if layout is None else layout.seeds
    return jax.jit(over_seeds(one_seed, (0, 0, 0 if per_seed else None, 0), seed_batch_size),
                   out_shardings=out_shardings)

