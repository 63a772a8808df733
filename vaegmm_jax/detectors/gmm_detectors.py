"""OutlierVAEGMM and OutlierAEGMM: the (variational) autoencoding Gaussian mixture detectors.

Both share one model (:class:`vaegmm_jax.models.GMMAutoencoder`); they differ in
whether the latent is sampled, the reconstruction term and the loss defaults.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaegmm_jax.engine import parallel, training
from vaegmm_jax.core import gmm as gmm_lib
from vaegmm_jax.core import vae as vae_lib
from vaegmm_jax.core.features import resolve_recon_features
from vaegmm_jax.engine import members
from vaegmm_jax.detectors.base import _STREAM_SCORE, _STREAM_STATS, BaseDetector, FitOptions, robust_calibration
from vaegmm_jax.models.gmm_autoencoder import (
    LOSS_TERMS,
    GMMAutoencoder,
    LossWeights,
    gmm_autoencoder_loss,
    squared_error_sum,
)
from vaegmm_jax.nets import adapter, dense
from vaegmm_jax.engine.streaming import iter_chunks
from vaegmm_jax.engine.validation import check_hidden, check_positive_int


#: what a GMM detector's score is: 'energy' (the DAGMM paper's and alibi-detect's sample energy)
#: or 'energy_recon' (the default: energy plus log reconstruction error, each standardised by
#: its median and interquartile range on the training rows; chosen on the development suite)
SCORE_TYPES = ("energy", "energy_recon")


def combine_components(components: jax.Array, calibration: dict) -> jax.Array:
    """(C, 2) components -> (C,) sum of their standardised values (pure)."""
    return jnp.sum((components - calibration["center"]) / calibration["scale"], axis=-1)


class _GMMDetector(BaseDetector):
    """Shared by OutlierVAEGMM and OutlierAEGMM."""

    loss_terms = LOSS_TERMS
    member_arrays = ("gmm", "score_calibration")
    variational = True
    #: how scoring decodes the L samples: "auto" (a fused Pallas kernel on NVIDIA GPUs for
    #: dense decoders, XLA elsewhere) or "xla" (never the kernel). See GMMAutoencoder.sampled_z.
    scoring_kernel: str = "auto"

    def __init__(
        self,
        threshold: float | None = None,
        vaegmm: GMMAutoencoder | None = None,
        encoder_net=None,
        decoder_net=None,
        gmm_density_net=None,
        n_gmm: int = 2,
        latent_dim: int = 2,
        samples: int = 10,
        beta: float = 1.0,
        recon_features: str | Callable = "rmse",
        data_type: str | None = None,
        seed: int = 0,
        eps: float = gmm_lib.DEFAULT_EPS,
        hidden: tuple[int, ...] | None = None,
        gmm_hidden: int = 10,
        gmm_dropout: float = 0.5,
        activation: str = "tanh",
        kernel_init: str = dense.DEFAULT_KERNEL_INIT,
        scaler: str | None = "auto",
        score_type: str = "energy_recon",
        n_members: int | None = None,
    ):
        super().__init__(threshold=threshold, seed=seed, data_type=data_type, scaler=scaler, n_members=n_members)
        if score_type not in SCORE_TYPES:
            raise ValueError(f"score_type must be one of {SCORE_TYPES}, got {score_type!r}")
        self.score_type = score_type
        #: robust centre and spread of the two score components on the training rows (score_type
        #: 'energy_recon'), set after fit: {'center': (2,), 'scale': (2,)} float32
        self.score_calibration: dict[str, np.ndarray] | None = None
        dense.kernel_initializer(kernel_init)  # unknown names fail here, not at fit
        if activation not in dense.ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(dense.ACTIVATIONS)}")
        if not 0.0 <= float(gmm_dropout) < 1.0:
            raise ValueError(f"gmm_dropout must be in [0, 1), got {gmm_dropout!r}")
        self.n_gmm = check_positive_int(n_gmm, "n_gmm")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.samples = check_positive_int(samples, "samples")
        self.beta = float(beta)
        if not eps > 0:
            raise ValueError(f"eps (covariance jitter) must be positive, got {eps}")
        self.eps = float(eps)
        self.recon_features_name, self._recon_features = resolve_recon_features(recon_features)
        self.arch = {
            "hidden": check_hidden(hidden),
            "gmm_hidden": check_positive_int(gmm_hidden, "gmm_hidden"),
            "gmm_dropout": float(gmm_dropout),
            "activation": str(activation),
            "kernel_init": str(kernel_init),
        }
        self.custom_nets = {
            "encoder_net": encoder_net is not None or vaegmm is not None,
            "decoder_net": decoder_net is not None or vaegmm is not None,
            "gmm_density_net": gmm_density_net is not None or vaegmm is not None,
        }
        self._user_nets = (encoder_net, decoder_net, gmm_density_net)
        if vaegmm is not None:
            if not isinstance(vaegmm, GMMAutoencoder):
                raise TypeError(f"vaegmm must be a vaegmm_jax.models.GMMAutoencoder, got {type(vaegmm).__name__}")
            if vaegmm.variational != self.variational:
                raise ValueError(f"the given model has variational={vaegmm.variational}, {type(self).__name__} needs {self.variational}")
            self.model = vaegmm
            self.n_gmm, self.latent_dim, self.eps = vaegmm.n_gmm, vaegmm.latent_dim, vaegmm.eps
        self.gmm_params: gmm_lib.GMMParams | None = None
        self.recon_cov: vae_lib.ReconCovariance | None = None

    # -- model ---------------------------------------------------------------------------
    def _build(self, x_sample: np.ndarray) -> None:
        if self.model is not None:
            return
        n_features = int(np.prod(x_sample.shape[1:]))
        if self.data_type is None:
            self.data_type = "image" if x_sample.ndim == 4 else "tabular"
            self.meta["data_type"] = self.data_type
        enc, dec, gmm_net = self._user_nets
        hidden = self.arch["hidden"]
        act = self.arch["activation"]
        init = self.arch["kernel_init"]
        if enc is None:
            enc = dense.default_encoder(n_features, hidden, act, init)
        if dec is None:
            dec = dense.default_decoder(n_features, hidden, act, init)
            if x_sample.ndim > 2:
                dec = _Reshape(dec, tuple(x_sample.shape[1:]))
        if gmm_net is None:
            gmm_net = dense.default_gmm_density_net(
                self.n_gmm, self.arch["gmm_hidden"], self.arch["gmm_dropout"], act, init)
        self.model = GMMAutoencoder(
            encoder=adapter.as_network(enc, "encoder_net"),
            decoder=adapter.as_network(dec, "decoder_net"),
            gmm_net=adapter.as_network(gmm_net, "gmm_density_net"),
            latent_dim=self.latent_dim,
            n_gmm=self.n_gmm,
            recon_features=self._recon_features,
            variational=self.variational,
            eps=self.eps,
            head_init=init,
        )

    def _recon_nll(self, X: np.ndarray, fit_kwargs: dict) -> Callable:
        raise NotImplementedError

    def _loss_weights(self, fit_kwargs: dict) -> LossWeights:
        return LossWeights(
            w_recon=float(fit_kwargs["w_recon"]),
            w_energy=float(fit_kwargs["w_energy"]),
            w_cov_diag=float(fit_kwargs["w_cov_diag"]),
            beta=self.beta if self.variational else 0.0,
        )

    def _make_loss(self, X: np.ndarray, fit_kwargs: dict) -> Callable:
        model, weights = self.model, self._loss_weights(fit_kwargs)
        recon_nll = self._recon_nll(X, fit_kwargs)

        def loss_fn(params, x, row_weights, key):
            return gmm_autoencoder_loss(model, weights, recon_nll, params, x, row_weights, key)

        return loss_fn

    def _make_metric_fn(self, metric: Callable):
        model = self.model

        def metric_fn(x, row_weights, params):
            out = model.forward(params, x, jax.random.PRNGKey(0))
            value = jnp.asarray(metric(x.reshape(x.shape[0], -1), out.x_recon.reshape(x.shape[0], -1)))
            return vae_lib.weighted_mean(value, row_weights) if value.ndim == 1 else value

        return metric_fn

    # -- mixture from the whole training set, in chunks ----------------------------------
    def _mixture_program(self, n_rows: int, batch_size: int, member_data: bool) -> Callable:
        return _device_mixture_program(self.model, n_rows, max(batch_size, 65536), self.devices,
                                       n_members=self.n_members, member_data=member_data)

    def _after_fit_compiler(self, X: jax.Array, batch_size: int, params_like, member_data: bool = False) -> Callable:
        fn = self._mixture_program(X.shape[-len(self.input_shape) - 1], batch_size, member_data)
        key = self._member_keys(_STREAM_STATS)
        return lambda: fn.lower(params_like, X, key).compile()

    def _after_fit(self, X: jax.Array, batch_size: int, compiled: Callable | None = None, member_data: bool = False,
                   strict: bool = True) -> np.ndarray:
        program = compiled  # the device-array program, compiled while the epochs ran
        if program is None:
            program = self._mixture_program(X.shape[-len(self.input_shape) - 1], batch_size, member_data)
        self.gmm_params, finite = program(self.params, X, self._member_keys(_STREAM_STATS))
        finite = members.per_member(np.asarray(finite), self.n_members)
        if strict and not finite.all():
            who = "" if self.n_members == 1 else f" of member(s) {np.flatnonzero(~finite).tolist()}"
            raise FloatingPointError(
                f"the mixture{who} fitted on the training data is not finite or a covariance is not positive definite "
                f"even with jitter eps={self.eps}; increase eps or check the training data"
            )
        self.score_calibration = None
        if self.score_type == "energy_recon":
            self.score_calibration = self._calibrate(X, batch_size, member_data)
        return finite

    def _calibrate(self, X, batch_size: int, member_data: bool = False) -> dict[str, np.ndarray]:
        """Median and interquartile range of [energy, log RMSE] over the (already scaled)
        training rows, with the scoring noise: what makes the two components addable.
        {'center': ([M,] 2), 'scale': ([M,] 2)}."""
        n = self.n_members
        components = members.over_members(self._components_chunk_fn(self._n_score_samples()),
                                          (0, 0, 1 if member_data else None, None, 0), n)
        fn = jax.jit(components if n == 1 else lambda *a: jnp.moveaxis(components(*a), 0, 1))
        keys = self._member_keys(_STREAM_SCORE)
        gmm, params = self.gmm_params, self.params
        if member_data:
            X = jnp.moveaxis(X, 0, 1)
        comps = self._map_rows(lambda x, offset: fn(params, gmm, x, offset, keys), X, self._after_fit_chunk(batch_size))
        if n == 1:
            return robust_calibration(comps)
        per_member = [robust_calibration(comps[:, m]) for m in range(n)]
        return {k: np.stack([c[k] for c in per_member]) for k in ("center", "scale")}

    # -- scoring -------------------------------------------------------------------------
    def _n_score_samples(self) -> int:
        return self.samples if self.variational else 1

    def _score_extra(self):
        from vaegmm_jax.engine.validation import NotFittedError

        if self.gmm_params is None:
            raise NotFittedError(f"{type(self).__name__} has no fitted mixture: call fit(X) first")
        if self.score_type == "energy":
            return self.gmm_params
        if self.score_calibration is None:
            raise NotFittedError(f"{type(self).__name__} has no score calibration: call fit(X) first")
        return (self.gmm_params, {k: jnp.asarray(v) for k, v in self.score_calibration.items()})

    def _score_chunk_fn(self, n_samples: int) -> Callable:
        """fn(params, extra, x (C, *S), offset, key) -> (C,) scores.

        'energy': the mean sample energy over the L samples (extra: the mixture).
        'energy_recon': (E - c_E) / s_E + (R - c_R) / s_R with R the mean log RMSE and c, s the
        training rows' median and interquartile range (extra: (mixture, calibration)).
        """
        if self.score_type == "energy":
            return self._noise_chunk_fn(n_samples, self.model.energies)
        components = self._components_chunk_fn(n_samples)

        def combined_chunk(params, extra, x, offset, key):
            gmm, calibration = extra
            comps = components(params, gmm, x, offset, key)
            return combine_components(comps, calibration)

        return combined_chunk

    def _components_chunk_fn(self, n_samples: int) -> Callable:
        """fn(params, gmm, x (C, *S), offset, key) -> (C, 2) [mean energy, mean log RMSE]."""
        return self._noise_chunk_fn(n_samples, self.model.energies_and_errors)

    def _noise_chunk_fn(self, n_samples: int, model_fn: Callable) -> Callable:
        """fn(params, gmm, x, offset, key) -> model_fn(params, gmm, x, noise, kernel), each row's
        L latent draws depending only on (key, its row index): chunking never changes them."""
        latent_dim, kernel = self.model.latent_dim, self.scoring_kernel

        def chunk_fn(params, gmm, x, offset, key):
            rows = offset + jnp.arange(x.shape[0], dtype=jnp.int32)
            noise = vae_lib.row_normal_noise(key, rows, n_samples, latent_dim)
            return model_fn(params, gmm, x, noise, kernel)

        return chunk_fn

    # -- persistence ---------------------------------------------------------------------
    _model_arg = "vaegmm"

    @classmethod
    def from_config(cls, config: dict, **networks) -> "_GMMDetector":
        """Rebuilds an unfitted detector from :meth:`config_dict` output.

        Custom networks are not stored (only their parameters): pass the same
        objects again as keyword arguments.
        """
        allowed = {"encoder_net", "decoder_net", "gmm_density_net", cls._model_arg}
        unknown = set(networks) - allowed
        if unknown:
            raise TypeError(f"unexpected arguments {sorted(unknown)}; allowed: {sorted(allowed)}")
        if cls._model_arg not in networks:
            missing = [n for n, custom in config["custom_nets"].items() if custom and networks.get(n) is None]
            if missing:
                raise ValueError(
                    f"this {cls.__name__} was built with custom networks {missing}; their code is not stored in "
                    f"the checkpoint (only parameters), so pass them again: load_detector(path, {missing[0]}=...)"
                )
        recon = config["recon_features"]
        if recon.startswith("custom:"):
            raise ValueError(f"the detector used a custom recon_features function ({recon}); it cannot be rebuilt")
        kwargs = dict(
            n_gmm=config["n_gmm"], latent_dim=config["latent_dim"], recon_features=recon,
            data_type=config["data_type"], eps=config["eps"],
            hidden=config["arch"]["hidden"], gmm_hidden=config["arch"]["gmm_hidden"],
            gmm_dropout=config["arch"]["gmm_dropout"], activation=config["arch"]["activation"],
            # checkpoints written before kernel_init existed used Flax's default
            kernel_init=config["arch"].get("kernel_init", dense.DEFAULT_KERNEL_INIT),
            # checkpoints written before the in-detector scaler existed were trained without one
            scaler=config.get("scaler"),
            score_type=config.get("score_type", "energy"),
            # checkpoints written before ensembles existed hold one model
            seed=config.get("member_seeds", config["seed"]),
        )
        if cls.variational:
            kwargs.update(samples=config["samples"], beta=config["beta"])
        return cls(**kwargs, **networks)

    def config_dict(self) -> dict:
        return {
            "n_gmm": self.n_gmm,
            "latent_dim": self.latent_dim,
            "samples": self.samples,
            "beta": self.beta,
            "recon_features": self.recon_features_name,
            "data_type": self.data_type,
            "seed": self.seed,
            "eps": self.eps,
            "arch": self.arch,
            "custom_nets": self.custom_nets,
            "scaler": self.scaler_kind,
            "score_type": self.score_type,
            **self._member_config(),
        }

    def extra_arrays(self) -> dict[str, Any]:
        out = super().extra_arrays()
        if self.score_calibration is not None:
            out["score_calibration"] = dict(self.score_calibration)
        if self.gmm_params is not None:
            out["gmm"] = dict(self.gmm_params._asdict())
        if self.recon_cov is not None:
            out["recon_scale"] = self.recon_cov.scale
        return out

    def set_extra_arrays(self, arrays: dict[str, Any]) -> None:
        super().set_extra_arrays(arrays)
        if "score_calibration" in arrays:
            self.score_calibration = {k: np.asarray(v, np.float32) for k, v in arrays["score_calibration"].items()}
        if "gmm" in arrays:
            self.gmm_params = gmm_lib.GMMParams(**{k: jnp.asarray(v) for k, v in arrays["gmm"].items()})
        if "recon_scale" in arrays and self.fit_config.get("cov_kind"):
            self.recon_cov = vae_lib.ReconCovariance(self.fit_config["cov_kind"], jnp.asarray(arrays["recon_scale"]))


def fit_mixture(
    model: GMMAutoencoder, params, X: np.ndarray, key: jax.Array, chunk_size: int = 8192, devices=None
) -> gmm_lib.GMMParams:
    """phi/mu/Sigma from the whole data set, in fixed-size chunks (memory bounded by the chunk).

    Two passes of additive statistics: the means first, then second moments centred
    on them, which equals the one-pass estimate without float32 cancellation.
    Each row uses one latent sample whose noise depends only on (key, row index).
    A ``jax.Array`` (the training set after ``fit``) is processed by one compiled
    program (:func:`mixture_from_device_array`); host data is streamed chunk by chunk.

    Args:
      model: the model.
      params: its parameters.
      X: (N, *S) data (numpy, memmap, or a jax.Array, which is sliced on the device).
      key: PRNG key of the latent samples.
      chunk_size: rows per chunk.
      devices: devices to split each chunk's rows over (default all local devices);
        the statistics are summed across them.

    Returns:
      GMMParams(phi (K,), mu (K, D), cov (K, D, D)).
    """
    return _fit_mixture(model, params, X, key, chunk_size, devices)[0]


def _mixture_chunk(n_rows: int, chunk_size: int, mesh) -> int:
    return parallel.round_up(min(chunk_size, -(-n_rows // 8) * 8), parallel.mesh_size(mesh))


def _device_mixture_program(model: GMMAutoencoder, n_rows: int, chunk_size: int, devices, n_members: int = 1,
                            member_data: bool = False) -> Callable:
    """jit(fn(params, x, keys) -> (GMMParams, finite)): the whole mixture fit of a device array
    x (N, *S) (or (M, N, *S) with ``member_data``) for each of M members (leading member axis
    when M > 1).

    It runs once per fit, so it is compiled for a short compile (no Triton GEMM autotuning)
    rather than for the last microsecond. One member: each chunk's rows are split over the
    devices; several: the members are vmapped on one device.
    """
    mesh = parallel.local_mesh(devices) if n_members == 1 else None
    sharding = parallel.row_sharding(mesh)
    chunk = _mixture_chunk(n_rows, chunk_size, mesh)

    def one_member(p, x, k):
        return mixture_from_device_array(model, p, x, k, chunk, sharding)

    return jax.jit(
        members.over_members(one_member, (0, 0 if member_data else None, 0), n_members),
        compiler_options=training.RUN_ONCE_COMPILER_OPTIONS,
    )


def _fit_mixture(model, params, X, key, chunk_size, devices):
    """fit_mixture plus its () bool finiteness check (in the same program for device data)."""
    if isinstance(X, jax.Array):
        return _device_mixture_program(model, X.shape[0], chunk_size, devices)(params, X, key)
    mesh = parallel.local_mesh(devices)
    sharding = parallel.row_sharding(mesh)
    chunk_size = _mixture_chunk(X.shape[0], chunk_size, mesh)

    @jax.jit
    def chunk_stats(params, x, weights, offset, shift, total):
        rows = offset + jnp.arange(x.shape[0], dtype=jnp.int32)
        noise = vae_lib.row_normal_noise(key, rows, 1, model.latent_dim)
        return gmm_lib.merge_stats(total, model.gmm_stats(params, x, noise, weights, shift))

    shift = jnp.zeros((model.n_gmm, _mixture_dim(model)), jnp.float32)  # pass 1 around 0, pass 2 around the means
    for _ in range(2):
        # start from zero statistics (not None) so both passes share one compiled program
        total = _zero_stats(shift)
        for chunk in iter_chunks(X, chunk_size):
            x, w = parallel.put(chunk.x, sharding), parallel.put(chunk.weights, sharding)
            total = chunk_stats(params, x, w, np.int32(chunk.offset), shift, total)
        first = _params_from_stats(total)
        shift = first.mu
    return first, _params_are_finite(first, model.eps)


def mixture_from_device_array(model: GMMAutoencoder, params, x: jax.Array, key: jax.Array, chunk_size: int,
                              sharding=None) -> tuple[gmm_lib.GMMParams, jax.Array]:
    """The two statistics passes of :func:`fit_mixture` over an on-device array, as scans (pure; jit it).

    Chunk c holds rows [c C, c C + C); rows past N are the last row again with weight 0
    (as in streaming), so the result equals the streamed one up to summation order.
    The pass itself is a scan too: the model appears once in the compiled program.

    Args:
      model: the model.
      params: its parameters.
      x: (N, *S) data.
      key: PRNG key of the latent samples (row i uses fold_in(key, i)).
      chunk_size: C rows per step (static).
      sharding: optional row sharding of each chunk over devices.

    Returns:
      (GMMParams(phi (K,), mu (K, D), cov (K, D, D)), () bool: finite and factorable).
    """
    n = x.shape[0]
    offsets = jnp.arange(-(-n // chunk_size), dtype=jnp.int32) * chunk_size

    def chunk_body(total, offset):
        rows = offset + jnp.arange(chunk_size, dtype=jnp.int32)
        xc = jnp.take(x, jnp.minimum(rows, n - 1), axis=0)
        wc = (rows < n).astype(jnp.float32)
        if sharding is not None:
            xc = jax.lax.with_sharding_constraint(xc, sharding)
            wc = jax.lax.with_sharding_constraint(wc, sharding)
        noise = vae_lib.row_normal_noise(key, rows, 1, model.latent_dim)
        return gmm_lib.merge_stats(total, model.gmm_stats(params, xc, noise, wc, total.shift)), None

    def one_pass(shift, _):
        total, _ = jax.lax.scan(chunk_body, _zero_stats(shift), offsets)
        mixture = gmm_lib.params_from_stats(total)
        return mixture.mu, mixture

    zero_shift = jnp.zeros((model.n_gmm, _mixture_dim(model)), jnp.float32)
    _, passes = jax.lax.scan(one_pass, zero_shift, None, length=2)  # pass 1 around 0, pass 2 around the means
    mixture = jax.tree.map(lambda a: a[1], passes)
    return mixture, gmm_lib.params_are_finite(mixture, model.eps)


def _mixture_dim(model: GMMAutoencoder) -> int:
    return model.latent_dim + model.recon_features(np.zeros((1, 1)), np.ones((1, 1))).shape[-1]


def _zero_stats(shift: jax.Array) -> gmm_lib.GMMStats:
    k, d = shift.shape
    return gmm_lib.GMMStats(
        count=jnp.zeros((), jnp.float32), weight=jnp.zeros((k,), jnp.float32),
        sum_z=jnp.zeros((k, d), jnp.float32), sum_zz=jnp.zeros((k, d, d), jnp.float32), shift=shift,
    )


_params_from_stats = jax.jit(gmm_lib.params_from_stats)
_params_are_finite = jax.jit(gmm_lib.params_are_finite, static_argnums=1)


class _Reshape:
    """Wraps a flat decoder so its output has the image shape (for default nets on images)."""

    def __new__(cls, module, shape):
        net = adapter.as_network(module)

        def apply(params, z, train=False, key=None):
            out = net.apply(params, z, train, key)
            return out.reshape((out.shape[0],) + shape)

        return adapter.Network(init=net.init, apply=apply, kind=net.kind, module=module)


class OutlierVAEGMM(_GMMDetector):
    """Variational autoencoding Gaussian mixture outlier detector (alibi-detect's API).

    Args:
      threshold: score above which a row is an outlier (or infer_threshold later).
      vaegmm: a whole :class:`GMMAutoencoder` (variational=True) instead of the nets.
      encoder_net: Linen/NNX module x (B, *S) -> h (B, H); mean/log-variance heads of
        size ``latent_dim`` are added. Default: the DAGMM KDD shape scaled to the data
        (F -> F/2 -> F/4 -> F/12, tanh).
      decoder_net: z (B, latent_dim) -> x' (B, *S). Default: the mirror, linear output.
      gmm_density_net: z (B, D) -> K logits (softmax applied by the model; unlike
        alibi's Keras nets, do not end it with a softmax). Default: 10 tanh, dropout 0.5.
      n_gmm: K mixture components (default 2, chosen on the development suite).
      latent_dim: d (default 2).
      samples: L latent samples per row when scoring.
      beta: KL weight.
      recon_features: 'rmse' (default: the root-mean-square reconstruction error, one
        column; on standardised rows the paper's relative distance is noise, see
        :func:`vaegmm_jax.core.features.rmse_features`), 'dagmm' (the paper's [relative
        Euclidean distance, cosine]), 'alibi' (alibi-detect 0.13's quirky
        eucl_cosim_features) or a callable.
      data_type: 'tabular', 'image' or None (inferred at fit).
      seed: seeds initialisation, shuffling, sampling and scoring noise; with several members,
        member i has seed ``seed + i`` (or pass one seed per member as a sequence).
      eps: covariance jitter (alibi issue #554 asks for it to be configurable).
      hidden, gmm_hidden, gmm_dropout, activation: shape of the default nets.
      kernel_init: weight initialiser of the default nets and the latent heads:
        'lecun_normal' (Flax's default), 'glorot_uniform' (TensorFlow/Keras:
        alibi-detect, the TensorFlow DAGMM ports) or 'torch_uniform' (PyTorch's nn.Linear); see
        :data:`vaegmm_jax.nets.dense.KERNEL_INITS`. User-given nets keep their own.
      scaler: input scaling fitted on the training rows and applied inside every score:
        'auto' (default: 'standard' for tabular rows (N, F), none for images), 'standard',
        'minmax', 'robust' (see :mod:`vaegmm_jax.core.scaling`) or None (rows used as given,
        the paper's and alibi-detect's behaviour).
      score_type: 'energy_recon' (default: the mean sample energy plus the mean log RMSE,
        each standardised by its median and interquartile range on the training rows) or
        'energy' (the paper's and alibi-detect's sample energy).
      n_members: M independently seeded members trained as one vmapped program (default 1, or
        ``len(seed)``). The score of an ensemble is the mean over members of each member's score
        standardised by its median and interquartile range on the training rows; each member
        is readable (:meth:`member`, :meth:`score_members`).

    The defaults were chosen on a development suite of 19 ODDS/ADBench sets
    (``benchmarks/suite.py``, README "Defaults, and why"); ``presets.ALIBI`` and
    ``presets.PAPER_SCORING`` give alibi-detect's and the paper's behaviour.
    """

    variational = True

    def fit(
        self,
        X,
        w_recon: float = 1.0,
        w_energy: float = 0.1,
        w_cov_diag: float = 0.005,
        optimizer: optax.GradientTransformation | None = None,
        cov_elbo: dict | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        verbose: bool = True,
        log_metric: tuple[str, Callable] | None = None,
        checkpoint_dir=None,
        checkpoint_every: int | None = None,
        resume: bool = False,
        options: FitOptions | None = None,
    ) -> dict[str, list[float]]:
        """Trains on X (N, *S) (inliers) and fixes the mixture from the whole of X.

        Args:
          X: training data.
          w_recon, w_energy, w_cov_diag: loss weights (defaults 1, 0.1, 0.005; alibi-detect's
            w_recon 1e-7 leaves the decoder untrained: ``presets.ALIBI`` has it).
          optimizer: an optax transformation (default adam, lr 1e-3).
          cov_elbo: reconstruction likelihood covariance: dict(sim=1.0) (default: unit
            variance on standardised rows; alibi's is sim=0.05), dict(cov_diag=None) or
            dict(cov_full=None) (estimated from X).
          epochs, batch_size: training length and minibatch size (defaults None: about
            2,000 optimizer steps, at least one pass, batches of 128; see
            :func:`vaegmm_jax.detectors.base.auto_epochs`).
          verbose: a per-epoch progress bar (shown only on a terminal).
          log_metric: optional (name, fn(x (B, F), x' (B, F)) -> (B,) or ()) logged per epoch.
          checkpoint_dir: save the detector there at the end (and every
            ``checkpoint_every`` epochs).
          resume: continue from ``checkpoint_dir`` up to ``epochs`` in total.
          options: how the fit engine runs (:class:`vaegmm_jax.detectors.base.FitOptions`: one
            training set per member, recording instead of raising on a non-finite member...).

        Returns:
          The history: {term: [value per epoch]} for recon, energy, cov_diag, kl, total.
        """
        cov_elbo = dict(sim=1.0) if cov_elbo is None else cov_elbo
        return self._fit(
            X,
            optimizer=optimizer,
            epochs=epochs,
            batch_size=batch_size,
            verbose=verbose,
            log_metric=log_metric,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            resume=resume,
            options=options,
            fit_kwargs=dict(w_recon=w_recon, w_energy=w_energy, w_cov_diag=w_cov_diag, cov_elbo=_jsonable_cov(cov_elbo)),
        )

    def _recon_nll(self, X: np.ndarray, fit_kwargs: dict) -> Callable:
        cov_elbo = fit_kwargs["cov_elbo"]
        self.recon_cov = vae_lib.recon_covariance(
            {k: (None if v is None else np.asarray(v)) for k, v in cov_elbo.items()}, X.reshape(X.shape[0], -1)
        )
        fit_kwargs["cov_kind"] = self.recon_cov.kind
        cov = self.recon_cov
        return lambda x, x_recon: vae_lib.gaussian_nll(x, x_recon, cov)


def _jsonable_cov(cov_elbo: dict) -> dict:
    if not isinstance(cov_elbo, dict) or len(cov_elbo) != 1:
        raise ValueError(
            f"cov_elbo must be a dict with exactly one of 'sim', 'cov_diag', 'cov_full', got {cov_elbo!r}"
        )
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in cov_elbo.items()}


class OutlierAEGMM(_GMMDetector):
    """DAGMM (Zong et al., 2018): deterministic autoencoder + Gaussian mixture.

    Loss J = mean over batch of the per-row sum of squared errors
    + w_energy (lambda1) * mean energy + w_cov_diag (lambda2) * P(Sigma).
    Dropout in the estimation network is active in training only. Constructor
    arguments and their defaults as :class:`OutlierVAEGMM` (``aegmm=`` for a whole model, no
    ``samples``/``beta``: the latent is not sampled); latent_dim defaults to 2 (the
    paper's 1 scored lower on the development suite; the presets keep it).
    """

    variational = False
    _model_arg = "aegmm"

    def __init__(self, threshold=None, aegmm=None, encoder_net=None, decoder_net=None, gmm_density_net=None,
                 n_gmm: int = 2, latent_dim: int = 2, recon_features="rmse", data_type=None, seed: int = 0,
                 eps: float = gmm_lib.DEFAULT_EPS, hidden=None, gmm_hidden: int = 10, gmm_dropout: float = 0.5,
                 activation: str = "tanh", kernel_init: str = dense.DEFAULT_KERNEL_INIT,
                 scaler: str | None = "auto", score_type: str = "energy_recon", n_members: int | None = None):
        super().__init__(threshold=threshold, vaegmm=aegmm, encoder_net=encoder_net, decoder_net=decoder_net,
                         gmm_density_net=gmm_density_net, n_gmm=n_gmm, latent_dim=latent_dim, samples=1, beta=0.0,
                         recon_features=recon_features, data_type=data_type, seed=seed, eps=eps, hidden=hidden,
                         gmm_hidden=gmm_hidden, gmm_dropout=gmm_dropout, activation=activation,
                         kernel_init=kernel_init, scaler=scaler, score_type=score_type, n_members=n_members)

    def fit(
        self,
        X,
        w_energy: float = 0.1,
        w_cov_diag: float = 0.005,
        optimizer: optax.GradientTransformation | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        verbose: bool = True,
        log_metric: tuple[str, Callable] | None = None,
        checkpoint_dir=None,
        checkpoint_every: int | None = None,
        resume: bool = False,
        options: FitOptions | None = None,
    ) -> dict[str, list[float]]:
        """Trains DAGMM on X (N, *S). Arguments as OutlierVAEGMM.fit (w_energy = lambda1, w_cov_diag = lambda2)."""
        return self._fit(
            X,
            optimizer=optimizer,
            epochs=epochs,
            batch_size=batch_size,
            verbose=verbose,
            log_metric=log_metric,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            resume=resume,
            options=options,
            fit_kwargs=dict(w_recon=1.0, w_energy=w_energy, w_cov_diag=w_cov_diag),
        )

    def _recon_nll(self, X: np.ndarray, fit_kwargs: dict) -> Callable:
        return squared_error_sum
