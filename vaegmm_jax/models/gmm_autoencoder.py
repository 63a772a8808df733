"""(Variational) autoencoding Gaussian mixture model: the VAEGMM and DAGMM forward pass.

Shapes: B rows, input rows of shape S (F features, or H x W x C for images; F is
the flattened size), d latent dims, D = d + n_recon_features, K components,
L latent samples.

Per row x the model computes
  h = encoder(x);  (mean, logvar) = heads(h)   [variational]  or  latent = head(h)
  z_lat = mean + exp(logvar / 2) * eps          [variational; eps ~ N(0, I)]
  x' = decoder(z_lat);  z = [z_lat, recon_features(x, x')];  gamma = softmax(gmm_net(z))
The encoder runs once per row; the L samples share its output and are vmapped
through decoder, features, estimation net and energy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from vaegmm_jax.core import features as features_lib
from vaegmm_jax.core import gmm as gmm_lib
from vaegmm_jax.core import vae as vae_lib
from vaegmm_jax.core.features import ReconFeatures
from vaegmm_jax.kernels import fused_decoder
from vaegmm_jax.nets.adapter import Network, from_linen
from vaegmm_jax.nets.dense import DEFAULT_KERNEL_INIT, GaussianHeads, kernel_initializer

Params = dict[str, Any]


class MixtureInput(NamedTuple):
    """Everything the losses need from one forward pass.

    Attributes:
      z: (B, D) mixture input [latent, recon features].
      gamma: (B, K) soft memberships.
      x_recon: (B, *S) reconstruction (decoder output).
      mean: (B, d) posterior mean (the latent itself for a deterministic model).
      logvar: (B, d) posterior log-variance, or None for a deterministic model.
    """

    z: jax.Array
    gamma: jax.Array
    x_recon: jax.Array
    mean: jax.Array
    logvar: jax.Array | None


class _LinearHead(nn.Module):
    latent_dim: int
    kernel_init: str = DEFAULT_KERNEL_INIT

    @nn.compact
    def __call__(self, h):
        init = kernel_initializer(self.kernel_init)
        return nn.Dense(self.latent_dim, kernel_init=init, name="latent")(h.reshape((h.shape[0], -1)))


@dataclass(frozen=True, eq=False)
class GMMAutoencoder:
    """Static description of a (V)AE + GMM model. Holds no parameters.

    Attributes:
      encoder: trunk network x (B, *S) -> h (B, H).
      decoder: network z_lat (B, d) -> x' (B, *S).
      gmm_net: estimation network z (B, D) -> logits (B, K) (softmax applied here).
      latent_dim: d.
      n_gmm: K.
      recon_features: (x (B, F), x' (B, F)) -> (B, n) features.
      variational: True for VAEGMM (mean/log-variance heads and sampling),
        False for DAGMM (a linear latent head, no sampling).
      eps: covariance jitter for the mixture.
      head_init: kernel initialiser of the latent head(s), a name in
        :data:`vaegmm_jax.nets.dense.KERNEL_INITS`.
    """

    encoder: Network
    decoder: Network
    gmm_net: Network
    latent_dim: int
    n_gmm: int
    recon_features: ReconFeatures
    variational: bool = True
    eps: float = gmm_lib.DEFAULT_EPS
    head_init: str = DEFAULT_KERNEL_INIT

    def __post_init__(self):
        kernel_initializer(self.head_init)  # an unknown name fails here, not at init

    @property
    def head(self) -> Network:
        return _head_network(self.latent_dim, self.variational, self.head_init)

    # -- parameters -------------------------------------------------------------------
    def init(self, key: jax.Array, x: jax.Array) -> Params:
        """Initial parameters from a sample batch x (B, *S)."""
        k_enc, k_head, k_dec, k_gmm = jax.random.split(key, 4)
        enc_p = self.encoder.init(k_enc, x)
        h = self.encoder.apply(enc_p, x, False, None)
        head_p = self.head.init(k_head, h)
        latent = jnp.zeros((x.shape[0], self.latent_dim), x.dtype)
        dec_p = self.decoder.init(k_dec, latent)
        n_feat = self.recon_features(_flat(x), _flat(x)).shape[-1]
        gmm_p = self.gmm_net.init(k_gmm, jnp.zeros((x.shape[0], self.latent_dim + n_feat), x.dtype))
        return {"encoder": enc_p, "head": head_p, "decoder": dec_p, "gmm": gmm_p}

    # -- pieces -------------------------------------------------------------------------
    def encode(self, params: Params, x: jax.Array, train: bool = False, key=None):
        """x (B, *S) -> (mean (B, d), logvar (B, d) or None)."""
        h = self.encoder.apply(params["encoder"], x, train, key)
        out = self.head.apply(params["head"], h, False, None)
        if self.variational:
            return out
        return out, None

    def decode(self, params: Params, z_lat: jax.Array, train: bool = False, key=None) -> jax.Array:
        """z_lat (B, d) -> x' (B, *S)."""
        return self.decoder.apply(params["decoder"], z_lat, train, key)

    def mixture_input(self, params: Params, x: jax.Array, z_lat: jax.Array, train: bool = False, key=None):
        """x (B, *S), z_lat (B, d) -> (z (B, D), gamma (B, K), x' (B, *S))."""
        k_dec, k_gmm = (None, None) if key is None else jax.random.split(key)
        x_recon = self.decode(params, z_lat, train, k_dec)
        feats = self.recon_features(_flat(x), _flat(x_recon).astype(x.dtype))
        z = jnp.concatenate([z_lat, feats.astype(z_lat.dtype)], axis=-1)
        logits = self.gmm_net.apply(params["gmm"], z, train, k_gmm)
        return z, jax.nn.softmax(logits.astype(jnp.float32), axis=-1), x_recon

    def forward(self, params: Params, x: jax.Array, key: jax.Array, train: bool = False) -> MixtureInput:
        """One forward pass with one latent sample per row (training)."""
        k_enc, k_eps, k_rest = jax.random.split(key, 3)
        mean, logvar = self.encode(params, x, train, k_enc)
        z_lat = vae_lib.reparameterize(k_eps, mean, logvar) if self.variational else mean
        z, gamma, x_recon = self.mixture_input(params, x, z_lat, train, k_rest)
        return MixtureInput(z=z, gamma=gamma, x_recon=x_recon, mean=mean, logvar=logvar)

    def sampled_latents(self, params: Params, x: jax.Array, noise: jax.Array) -> jax.Array:
        """L latent samples per row (eval mode): x (B, *S), noise (L, B, d) -> z_lat (L, B, d).

        The encoder runs once per row; a deterministic model repeats its latent L times.
        """
        mean, logvar = self.encode(params, x)
        if self.variational:
            return mean[None] + jnp.exp(0.5 * logvar)[None] * noise
        return jnp.broadcast_to(mean[None], (noise.shape[0],) + mean.shape)

    def sampled_mixture_inputs(self, params: Params, x: jax.Array, noise: jax.Array):
        """Mixture inputs for L latent samples per row (eval mode, no dropout).

        Args:
          params: model parameters.
          x: (B, *S) inputs.
          noise: (L, B, d) standard normal noise (ignored by a deterministic model
            beyond its leading size).

        Returns:
          (z (L, B, D), gamma (L, B, K)).
        """
        def one_sample(z_l):
            z, gamma, _ = self.mixture_input(params, x, z_l)
            return z, gamma

        return jax.vmap(one_sample)(self.sampled_latents(params, x, noise))

    def fused_kernel_applies(self, x: jax.Array) -> bool:
        """Whether :meth:`sampled_z` can use the fused decoder kernel for inputs like x:
        a dense MLP decoder on (B, F) rows whose layers fit the kernel's tiles
        (:func:`fused_decoder.supports`) and built-in reconstruction features."""
        return (
            x.ndim == 2
            and self.recon_features in features_lib.FEATURES_FROM_SUMS
            and fused_decoder.supports(self.decoder.module, self.latent_dim)
        )

    def sampled_z(self, params: Params, x: jax.Array, noise: jax.Array, kernel: str = "auto") -> jax.Array:
        """Mixture inputs z (L, B, D) for L latent samples per row (eval mode; no gamma).

        Args:
          params: model parameters.
          x: (B, *S) inputs.
          noise: (L, B, d) standard normal noise.
          kernel: "auto" (the fused Pallas decoder kernel on NVIDIA GPUs when
            :meth:`fused_kernel_applies`, XLA elsewhere), "xla" (never the kernel),
            "pallas" (always; GPU only) or "interpret" (the kernel in Pallas'
            interpreter, any backend: for tests).

        Returns:
          (L, B, D) [latent, recon features].
        """
        return self.sampled_z_and_error(params, x, noise, kernel)[0]

    def sampled_z_and_error(
        self, params: Params, x: jax.Array, noise: jax.Array, kernel: str = "auto"
    ) -> tuple[jax.Array, jax.Array]:
        """:meth:`sampled_z` plus each sample's mean squared reconstruction error.

        Returns:
          (z (L, B, D), mse (L, B) float32: mean over features of (x - x')^2).
        """
        if kernel not in ("auto", "xla", "pallas", "interpret"):
            raise ValueError(f"kernel must be 'auto', 'xla', 'pallas' or 'interpret', got {kernel!r}")
        z_lat = self.sampled_latents(params, x, noise)
        n_features = _flat(x).shape[-1]

        def one_xla(z_l):
            z, _, x_recon = self.mixture_input(params, x, z_l)
            diff = _flat(x).astype(jnp.float32) - _flat(x_recon).astype(jnp.float32)
            return z, jnp.mean(diff * diff, axis=-1)

        def with_xla(z_lat):
            return jax.vmap(one_xla)(z_lat)

        if kernel == "xla" or not self.fused_kernel_applies(x):
            if kernel in ("pallas", "interpret"):
                raise ValueError("the fused kernel needs (B, F) inputs, a dense MLP decoder and built-in recon features")
            return with_xla(z_lat)

        def with_kernel(z_lat):
            sums = fused_decoder.differentiable_decoder_sums(
                self.decoder.module, x, z_lat, params["decoder"], interpret=kernel == "interpret"
            )
            feats = features_lib.FEATURES_FROM_SUMS[self.recon_features](x, sums)
            z = jnp.concatenate([z_lat, feats.astype(z_lat.dtype)], axis=-1)
            return z, sums[0].astype(jnp.float32) / n_features

        if kernel == "auto":
            return jax.lax.platform_dependent(z_lat, cuda=with_kernel, default=with_xla)
        return with_kernel(z_lat)

    def energies(
        self, params: Params, gmm: gmm_lib.GMMParams, x: jax.Array, noise: jax.Array, kernel: str = "auto"
    ) -> jax.Array:
        """Mean sample energy over L latent samples.

        Args:
          params: model parameters.
          gmm: fixed mixture parameters.
          x: (B, *S) inputs.
          noise: (L, B, d) standard normal noise.
          kernel: how to decode (see :meth:`sampled_z`).

        Returns:
          (B,) scores: the arithmetic mean over the L samples of E(z_l).
        """
        return self._mean_energy(gmm, self.sampled_z(params, x, noise, kernel))

    def _mean_energy(self, gmm: gmm_lib.GMMParams, z: jax.Array) -> jax.Array:
        """(L, B, D) mixture inputs -> (B,) mean over the L samples of E(z_l)."""
        cache = gmm_lib.energy_cache(gmm, self.eps)
        e = jax.vmap(lambda z_l: gmm_lib.energy_from_cache(z_l.astype(jnp.float32), cache))(z)
        return jnp.mean(e, axis=0)

    def energies_and_errors(
        self, params: Params, gmm: gmm_lib.GMMParams, x: jax.Array, noise: jax.Array, kernel: str = "auto"
    ) -> jax.Array:
        """Mean sample energy and mean log reconstruction error over L latent samples.

        Args: as :meth:`energies`.

        Returns:
          (B, 2): column 0 the mean over the L samples of E(z_l), column 1 the mean of
          0.5 log(mse_l + 1e-12) (the log RMSE; a log, since errors are heavy-tailed).
        """
        z, mse = self.sampled_z_and_error(params, x, noise, kernel)
        log_rmse = 0.5 * jnp.log(mse + 1e-12)
        return jnp.stack([self._mean_energy(gmm, z), jnp.mean(log_rmse, axis=0)], axis=-1)

    def gmm_stats(self, params: Params, x: jax.Array, noise: jax.Array, weights: jax.Array, shift=None):
        """Sufficient statistics of one chunk, one latent sample per row.

        Args:
          x: (B, *S); noise: (1, B, d); weights: (B,) (0 for padding rows);
          shift: optional (K, D) (the second, centred pass).

        Returns:
          GMMStats, summed pairwise over rows (:func:`gmm_lib.pairwise_sum`): this is the
          whole-training-set mixture fit, where a fused float32 reduction over ~1e5 rows can
          lose a covariance's positive definiteness.
        """
        z, gamma = self.sampled_mixture_inputs(params, x, noise)
        return gmm_lib.gmm_stats(z[0].astype(jnp.float32), gamma[0], weights, shift, pairwise=True)


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape((x.shape[0], -1))


_HEADS: dict[tuple[int, bool, str], Network] = {}


def _head_network(latent_dim: int, variational: bool, kernel_init: str = DEFAULT_KERNEL_INIT) -> Network:
    # Cached so that repeated property access yields the same Network object.
    key = (latent_dim, variational, kernel_init)
    if key not in _HEADS:
        module = GaussianHeads(latent_dim, kernel_init) if variational else _LinearHead(latent_dim, kernel_init)
        _HEADS[key] = from_linen(module)
    return _HEADS[key]


# -- losses -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (alibi-detect's names; DAGMM's lambda1/lambda2).

    Attributes:
      w_recon: weight of the reconstruction term (alibi VAEGMM 1e-7; DAGMM 1).
      w_energy: weight of the mean sample energy (lambda1 = 0.1).
      w_cov_diag: weight of the covariance-diagonal penalty (lambda2 = 0.005).
      beta: weight of the KL term (VAEGMM only; not multiplied by w_recon).
    """

    w_recon: float = 1e-7
    w_energy: float = 0.1
    w_cov_diag: float = 0.005
    beta: float = 1.0


LOSS_TERMS = ("recon", "energy", "cov_diag", "kl", "total")


def gmm_autoencoder_loss(
    model: GMMAutoencoder,
    weights_cfg: LossWeights,
    recon_nll: Callable[[jax.Array, jax.Array], jax.Array],
    params: Params,
    x: jax.Array,
    row_weights: jax.Array,
    key: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The (V)AEGMM training objective on one minibatch.

    total = w_recon * recon + w_energy * mean_batch E(z) + w_cov_diag * P(Sigma) + beta * KL,
    with phi/mu/Sigma re-estimated on this batch (gradients flow through them).

    Args:
      model: the model description.
      weights_cfg: loss weights.
      recon_nll: (x (B, F), x' (B, F)) -> (B,) per-row reconstruction loss.
      params: model parameters.
      x: (B, *S) minibatch.
      row_weights: (B,) 1 for real rows, 0 for padding rows of a ragged batch.
      key: PRNG key for sampling and dropout.

    Returns:
      (total (), dict of the terms in LOSS_TERMS, each ()).
    """
    out = model.forward(params, x, key, train=True)
    recon = vae_lib.weighted_mean(recon_nll(_flat(x), _flat(out.x_recon).astype(jnp.float32)), row_weights)
    z = out.z.astype(jnp.float32)
    gmm = gmm_lib.gmm_params(z, out.gamma, row_weights)
    e = gmm_lib.energy(z, gmm, model.eps)
    energy = vae_lib.weighted_mean(e, row_weights)
    penalty = gmm_lib.cov_diag_penalty(gmm.cov, model.eps)
    if model.variational:
        kl = vae_lib.kl_divergence(out.mean.astype(jnp.float32), out.logvar.astype(jnp.float32), row_weights)
    else:
        kl = jnp.zeros((), jnp.float32)
    total = (
        weights_cfg.w_recon * recon
        + weights_cfg.w_energy * energy
        + weights_cfg.w_cov_diag * penalty
        + weights_cfg.beta * kl
    )
    return total, {"recon": recon, "energy": energy, "cov_diag": penalty, "kl": kl, "total": total}


def squared_error_sum(x: jax.Array, x_recon: jax.Array) -> jax.Array:
    """Per-row sum over features of (x - x')^2: (B, F), (B, F) -> (B,). DAGMM's term."""
    return jnp.sum((x - x_recon) ** 2, axis=-1)
