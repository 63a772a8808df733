"""The detector shared by OutlierVAEGMM and OutlierAEGMM (:mod:`vaegmm_jax.detectors.gmm_detectors`):
one model (:class:`vaegmm_jax.models.GMMAutoencoder`), a mixture fitted on the training rows
after training, and the 'energy' or 'energy_recon' score.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaegmm_jax.core import gmm as gmm_lib
from vaegmm_jax.core import vae as vae_lib
from vaegmm_jax.core.features import resolve_recon_features
from vaegmm_jax.detectors.base import BaseDetector, cov_elbo_arrays
from vaegmm_jax.engine import members, parallel, training
from vaegmm_jax.engine.members import STREAM_SCORE, STREAM_STATS
from vaegmm_jax.engine.mixture import device_mixture_program
from vaegmm_jax.engine.config import CompileOptions
from vaegmm_jax.engine.scoring import default_score_batch, robust_calibration
from vaegmm_jax.engine.validation import NotFittedError, check_hidden, check_positive_int
from vaegmm_jax.models.gmm_autoencoder import (
    LOSS_TERMS,
    GMMAutoencoder,
    LossWeights,
    gmm_autoencoder_loss,
    squared_error_sum,
)
from vaegmm_jax.nets import adapter, dense


#: what a GMM detector's score is: 'energy' (the DAGMM paper's and alibi-detect's sample energy)
#: or 'energy_recon' (the default: energy plus log reconstruction error, each standardised by
#: its median and interquartile range on the training rows; chosen on the development suite)
SCORE_TYPES = ("energy", "energy_recon")
#: how scoring decodes the latent samples (see :attr:`OutlierVAEGMM.scoring_kernel`)
SCORING_KERNELS = ("auto", "xla")


def _shape_of(a) -> jax.ShapeDtypeStruct:
    """The abstract value of the host or device array ``a`` (no sharding: a host array's)."""
    return jax.ShapeDtypeStruct(np.shape(a), jax.dtypes.canonicalize_dtype(a.dtype))


def combine_components(components: jax.Array, calibration: dict) -> jax.Array:
    """(C, 2) components -> (C,) sum of their standardised values (pure)."""
    return jnp.sum((components - calibration["center"]) / calibration["scale"], axis=-1)


class GMMDetector(BaseDetector):
    """Shared by OutlierVAEGMM and OutlierAEGMM (whose docstrings list the arguments)."""

    loss_terms = LOSS_TERMS
    member_arrays = ("gmm", "score_calibration")
    variational = True
    network_args = ("encoder_net", "decoder_net", "gmm_density_net")

    def __init__(
        self,
        threshold: float | None = None,
        model: GMMAutoencoder | None = None,
        *,
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
        devices=None,
        scoring_kernel: str = "auto",
    ):
        super().__init__(threshold=threshold, seed=seed, data_type=data_type, scaler=scaler, n_members=n_members,
                         devices=devices)
        self.scoring_kernel = scoring_kernel
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
            "encoder_net": encoder_net is not None or model is not None,
            "decoder_net": decoder_net is not None or model is not None,
            "gmm_density_net": gmm_density_net is not None or model is not None,
        }
        self._user_nets = (encoder_net, decoder_net, gmm_density_net)
        if model is not None:
            if not isinstance(model, GMMAutoencoder):
                raise TypeError(f"{self.model_arg} must be a vaegmm_jax.models.GMMAutoencoder, got {type(model).__name__}")
            if model.variational != self.variational:
                raise ValueError(f"the given model has variational={model.variational}, {type(self).__name__} needs {self.variational}")
            self.model = model
            self.n_gmm, self.latent_dim, self.eps = model.n_gmm, model.latent_dim, model.eps
        self.gmm_params: gmm_lib.GMMParams | None = None

    @property
    def scoring_kernel(self) -> str:
        """How scoring decodes the L samples: 'auto' (a fused Pallas kernel on NVIDIA GPUs for
        dense decoders, XLA elsewhere) or 'xla' (never the kernel); see GMMAutoencoder.sampled_z.
        A setting (constructor ``scoring_kernel=``, saved); assigning it drops compiled programs."""
        return self._scoring_kernel

    @scoring_kernel.setter
    def scoring_kernel(self, kind: str) -> None:
        if kind not in SCORING_KERNELS:
            raise ValueError(f"scoring_kernel must be one of {SCORING_KERNELS}, got {kind!r}")
        self._scoring_kernel = kind
        self.clear_compiled()

    # -- model ---------------------------------------------------------------------------
    def build_model(self, x_sample: np.ndarray) -> None:
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
                dec = adapter.with_output_shape(dec, tuple(x_sample.shape[1:]))
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

    def _loss_weights(self, fit_kwargs: dict) -> LossWeights:
        return LossWeights(
            w_recon=float(fit_kwargs["w_recon"]),
            w_energy=float(fit_kwargs["w_energy"]),
            w_cov_diag=float(fit_kwargs["w_cov_diag"]),
            beta=self.beta if self.variational else 0.0,
        )

    def training_objective(self, X: np.ndarray, fit_kwargs: dict) -> training.Objective:
        model, weights = self.model, self._loss_weights(fit_kwargs)
        recon_cov = None
        if "cov_elbo" in fit_kwargs:  # the VAEGMM's Gaussian likelihood, its covariance fixed from X
            recon_cov = vae_lib.recon_covariance(cov_elbo_arrays(fit_kwargs["cov_elbo"]), X.reshape(X.shape[0], -1))

            def recon_nll(x, x_recon):
                return vae_lib.gaussian_nll(x, x_recon, recon_cov)
        else:  # DAGMM: the per-row sum of squared errors
            recon_nll = squared_error_sum

        def loss_fn(params, x, row_weights, key):
            return gmm_autoencoder_loss(model, weights, recon_nll, params, x, row_weights, key)

        return training.Objective(loss_fn, recon_cov)

    def reconstruct(self, params, x: jax.Array, key: jax.Array) -> jax.Array:
        return self.model.forward(params, x, key).x_recon

    # -- mixture from the whole training set, in chunks ----------------------------------
    def _mixture_program(self, n_rows: int, batch_size: int, member_data: bool, compiler_options) -> Callable:
        return device_mixture_program(self.model, n_rows, max(batch_size, 65536), self.devices,
                                       n_members=self.n_members, member_data=member_data,
                                       compiler_options=compiler_options)

    def after_fit_compiler(self, X: jax.Array, batch_size: int, params_like, member_data: bool,
                           compile_options: CompileOptions) -> Callable:
        """Compiles, while the epochs train, the mixture program, (score_type 'energy_recon') the
        calibration's chunk program and (``compile_options.compiles_score_ahead()``) the score
        program: nothing after training waits for the compiler."""
        mixture = self._mixture_program(X.shape[-len(self.input_shape) - 1], batch_size, member_data,
                                        compile_options.run_once)
        stats_keys, score_keys = self.member_keys(STREAM_STATS), self.member_keys(STREAM_SCORE)
        # one member on JAX's default device (devices=None, one local device): the placement of
        # every argument of a later score call is then known
        score_ahead = (compile_options.compiles_score_ahead() and self.n_members == 1 and not member_data
                       and self.devices is None and parallel.local_mesh(None) is None)

        def compile_programs() -> tuple:
            lowered_mixture = mixture.lower(params_like, X, stats_keys)
            gmm_like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), lowered_mixture.out_info[0])
            lowered_components, state_like = None, gmm_like
            if self.score_type == "energy_recon":
                # the calibration reads member data row-major, (N, M, *S): only its shape is needed here
                rows = jax.ShapeDtypeStruct((X.shape[1], X.shape[0], *X.shape[2:]) if member_data else X.shape, X.dtype)
                chunk_like = self._row_chunk_like(rows, self._after_fit_chunk(batch_size))
                components = self._components_program(member_data)
                lowered_components = components.lower(params_like, gmm_like, chunk_like, np.int32(0), score_keys)
                calibration_like = jax.ShapeDtypeStruct(lowered_components.out_info.shape[-1:], jnp.float32)
                state_like = (gmm_like, {"center": calibration_like, "scale": calibration_like})
            lowered_score = None
            if score_ahead:
                # the chunk that scoring the training rows, or any larger set, cuts with the default batch
                rows_like = self._row_chunk_like(X, default_score_batch())
                score_key = (self._score_cache_key(checked=True), rows_like.shape[0])
                lowered_score = self._jitted_score(checked=True).lower(
                    params_like, (jax.tree.map(_shape_of, self.scaler), state_like), rows_like, np.int32(0), score_keys)
            # traced here (the GIL), compiled side by side (XLA's compiler releases it)
            with ThreadPoolExecutor(max_workers=3) as beside:
                mixture_f, components_f, score_f = [None if program is None else beside.submit(program.compile)
                                                    for program in (lowered_mixture, lowered_components, lowered_score)]
                return (mixture_f.result(), None if components_f is None else components_f.result(),
                        {} if score_f is None else {score_key: score_f.result()})

        return compile_programs

    def after_fit(self, X: jax.Array, batch_size: int, compiled: tuple | None, member_data: bool, strict: bool,
                  compiler_options) -> np.ndarray:
        # the programs compiled while the epochs ran, or (their compilation failed) compiled now
        program, components, self._score_ahead = compiled if compiled is not None else (None, None, {})
        if program is None:
            program = self._mixture_program(X.shape[-len(self.input_shape) - 1], batch_size, member_data,
                                            compiler_options)
        self.gmm_params, finite = program(self.params, X, self.member_keys(STREAM_STATS))
        finite = members.per_member(np.asarray(finite), self.n_members)
        if strict and not finite.all():
            who = "" if self.n_members == 1 else f" of member(s) {np.flatnonzero(~finite).tolist()}"
            raise FloatingPointError(
                f"the mixture{who} fitted on the training data is not finite or a covariance is not positive definite "
                f"even with jitter eps={self.eps}; increase eps or check the training data"
            )
        self.score_calibration = None
        if self.score_type == "energy_recon":
            self.score_calibration = self._calibrate(X, batch_size, member_data, components)
        return finite

    def _components_program(self, member_data: bool) -> Callable:
        """jit(fn(params, gmm, x (C, [M,] *S), offset, keys) -> (C, [M,] 2)): every member's score
        components of a chunk of (scaled) rows."""
        n = self.n_members
        components = members.over_members(self._components_chunk_fn(self.n_score_samples()),
                                          (0, 0, 1 if member_data else None, None, 0), n)
        return jax.jit(components if n == 1 else lambda *a: jnp.moveaxis(components(*a), 0, 1))

    def _calibrate(self, X, batch_size: int, member_data: bool = False, program: Callable | None = None
                   ) -> dict[str, np.ndarray]:
        """Median and interquartile range of [energy, log RMSE] over the (already scaled)
        training rows, with the scoring noise: what makes the two components addable.
        {'center': ([M,] 2), 'scale': ([M,] 2)}. ``program``: :meth:`_components_program`,
        compiled ahead of time for this X's chunks."""
        n = self.n_members
        fn = program if program is not None else self._components_program(member_data)
        keys = self.member_keys(STREAM_SCORE)
        gmm, params = self.gmm_params, self.params
        if member_data:
            X = jnp.moveaxis(X, 0, 1)
        comps = self._map_rows(lambda x, offset: fn(params, gmm, x, offset, keys), X, self._after_fit_chunk(batch_size))
        if n == 1:
            return robust_calibration(comps)
        per_member = [robust_calibration(comps[:, m]) for m in range(n)]
        return {k: np.stack([c[k] for c in per_member]) for k in ("center", "scale")}

    # -- scoring -------------------------------------------------------------------------
    def n_score_samples(self) -> int:
        return self.samples if self.variational else 1

    def score_state(self):
        if self.gmm_params is None:
            raise NotFittedError(f"{type(self).__name__} has no fitted mixture: call fit(X) first")
        if self.score_type == "energy":
            return self.gmm_params
        if self.score_calibration is None:
            raise NotFittedError(f"{type(self).__name__} has no score calibration: call fit(X) first")
        return (self.gmm_params, {k: jnp.asarray(v) for k, v in self.score_calibration.items()})

    def score_chunk_fn(self, n_samples: int, output=None) -> Callable:
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
    def _own_config(self) -> dict:
        names = ("n_gmm", "latent_dim", "samples", "beta", "eps", "arch", "custom_nets", "score_type", "scoring_kernel")
        return {**{name: getattr(self, name) for name in names}, "recon_features": self.recon_features_name}

    @classmethod
    def _own_kwargs(cls, config: dict) -> dict:
        recon = config["recon_features"]
        if recon.startswith("custom:"):
            raise ValueError(f"the detector used a custom recon_features function ({recon}); it cannot be rebuilt")
        kwargs = dict(
            n_gmm=config["n_gmm"], latent_dim=config["latent_dim"], recon_features=recon, eps=config["eps"],
            hidden=config["arch"]["hidden"], gmm_hidden=config["arch"]["gmm_hidden"],
            gmm_dropout=config["arch"]["gmm_dropout"], activation=config["arch"]["activation"],
            # checkpoints written before kernel_init existed used Flax's default
            kernel_init=config["arch"].get("kernel_init", dense.DEFAULT_KERNEL_INIT),
            score_type=config.get("score_type", "energy"),
            scoring_kernel=config.get("scoring_kernel", "auto"),
        )
        if cls.variational:
            kwargs.update(samples=config["samples"], beta=config["beta"])
        return kwargs

    def extra_arrays(self) -> dict[str, Any]:
        out = super().extra_arrays()
        if self.score_calibration is not None:
            out["score_calibration"] = dict(self.score_calibration)
        if self.gmm_params is not None:
            out["gmm"] = dict(self.gmm_params._asdict())
        return out

    def set_extra_arrays(self, arrays: dict[str, Any]) -> None:
        super().set_extra_arrays(arrays)
        if "score_calibration" in arrays:
            self.score_calibration = {k: np.asarray(v, np.float32) for k, v in arrays["score_calibration"].items()}
        if "gmm" in arrays:
            self.gmm_params = gmm_lib.GMMParams(**{k: jnp.asarray(v) for k, v in arrays["gmm"].items()})


__all__ = ["GMMDetector", "SCORE_TYPES", "SCORING_KERNELS", "combine_components"]
