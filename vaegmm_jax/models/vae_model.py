"""Variational autoencoder for outlier scoring: reconstruction error or reconstruction probability.

Shapes: B rows, rows of shape S (F features, or H x W x C images; F is the
flattened size), d latent dims, L latent samples.

Per row x:
  h = encoder(x);  (mean, logvar) = heads(h);  z = mean + exp(logvar / 2) * eps
  p(x | z) = decoder(z):
    'gaussian', fixed covariance (alibi-detect OutlierVAE): the decoder gives the mean;
    'gaussian', learned variance (An & Cho 2015): the decoder gives mean AND
       log-variance (log-variance clipped to ``logvar_clip``);
    'bernoulli' (pixels in [0, 1]): the decoder gives logits.

Scoring draws L samples per row. The samples are decoded one after the other in a
``lax.scan`` so that peak memory is that of one decoded batch (B, *S), not L of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from vaegmm_jax.core import vae as vae_lib
from vaegmm_jax.nets.adapter import Network, from_linen
from vaegmm_jax.nets.dense import DEFAULT_KERNEL_INIT, GaussianHeads, kernel_initializer

Params = dict[str, Any]

LIKELIHOODS = ("gaussian", "bernoulli")
#: how the decoder's output is read: 'mean' (one array (B, *S) or (B, F); with a learned
#: variance a linear head z -> log-variance is added), 'split' (mean and log-variance
#: concatenated on the last axis, (B, *S[:-1], 2 S[-1]), or flat (B, 2F)), 'tuple'
#: (the decoder returns (mean, logvar)).
DECODER_LAYOUTS = ("mean", "split", "tuple")
VAE_LOSS_TERMS = ("recon", "kl", "total")


class DecoderOutput(NamedTuple):
    """The parameters of p(x | z).

    Attributes:
      loc: (B, *S) Gaussian mean, or Bernoulli logits.
      logvar: (B, *S) clipped log-variance for a learned-variance Gaussian, else None.
    """

    loc: jax.Array
    logvar: jax.Array | None


class _LogVarHead(nn.Module):
    """A linear map z (B, d) -> log-variance (B, *S), for decoders that give only a mean."""

    shape: tuple[int, ...]
    kernel_init: str = DEFAULT_KERNEL_INIT

    @nn.compact
    def __call__(self, z):
        init = kernel_initializer(self.kernel_init)
        out = nn.Dense(math.prod(self.shape), kernel_init=init, name="logvar")(z.reshape((z.shape[0], -1)))
        return out.reshape((z.shape[0],) + tuple(self.shape))


@dataclass(frozen=True, eq=False)
class VAEModel:
    """Static description of a VAE. Holds no parameters.

    Attributes:
      encoder: trunk network x (B, *S) -> h (B, H); mean/log-variance heads of size
        ``latent_dim`` are added.
      decoder: network z (B, d) -> decoder output (see :data:`DECODER_LAYOUTS`).
      latent_dim: d.
      input_shape: S, the shape of one row.
      likelihood: 'gaussian' or 'bernoulli'.
      learn_variance: the Gaussian's variance comes from the decoder (An & Cho)
        rather than being fixed (alibi-detect's cov_elbo).
      decoder_layout: 'mean', 'split' or 'tuple'.
      logvar_clip: (low, high) bounds of the decoder's log-variance (unbounded
        Gaussian NLLs diverge).
      head_init: kernel initialiser of the heads the model adds, a name in
        :data:`vaegmm_jax.nets.dense.KERNEL_INITS`.
    """

    encoder: Network
    decoder: Network
    latent_dim: int
    input_shape: tuple[int, ...]
    likelihood: str = "gaussian"
    learn_variance: bool = False
    decoder_layout: str = "mean"
    logvar_clip: tuple[float, float] = (-30.0, 20.0)
    head_init: str = DEFAULT_KERNEL_INIT

    def __post_init__(self):
        kernel_initializer(self.head_init)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.decoder_layout not in DECODER_LAYOUTS:
            raise ValueError(f"decoder_layout must be one of {DECODER_LAYOUTS}, got {self.decoder_layout!r}")
        if self.learn_variance and self.likelihood != "gaussian":
            raise ValueError("learn_variance applies to the Gaussian likelihood only")
        if self.decoder_layout != "mean" and not self.learn_variance:
            raise ValueError(
                f"decoder_layout={self.decoder_layout!r} gives a log-variance, but this model has no learned "
                "variance (score_type='mse' or the Bernoulli likelihood): the decoder must output only "
                "the mean / logits, shaped like one input row"
            )
        lo, hi = (float(v) for v in self.logvar_clip)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"logvar_clip must be two finite numbers (low < high), got {self.logvar_clip}")

    @property
    def n_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def heads(self) -> Network:
        return _heads(self.latent_dim, self.head_init)

    @property
    def has_logvar_head(self) -> bool:
        return self.learn_variance and self.decoder_layout == "mean"

    # -- parameters ---------------------------------------------------------------------
    def init(self, key: jax.Array, x: jax.Array) -> Params:
        """Initial parameters from a sample batch x (B, *S).

        Jitted: run eagerly, every initializer op of every layer would compile on its
        own (seconds per conv net on a CPU); one program compiles once (and caches).
        """
        return jax.jit(self._init)(key, x)

    def _init(self, key: jax.Array, x: jax.Array) -> Params:
        k_enc, k_head, k_dec, k_lv = jax.random.split(key, 4)
        enc_p = self.encoder.init(k_enc, x)
        h = self.encoder.apply(enc_p, x, False, None)
        z = jnp.zeros((x.shape[0], self.latent_dim), x.dtype)
        params = {"encoder": enc_p, "head": self.heads.init(k_head, h), "decoder": self.decoder.init(k_dec, z)}
        if self.has_logvar_head:
            params["logvar_head"] = _logvar_head(self.input_shape, self.head_init).init(k_lv, z)
        return params

    # -- pieces -------------------------------------------------------------------------
    def encode(self, params: Params, x: jax.Array, train: bool = False, key=None):
        """x (B, *S) -> (mean (B, d), logvar (B, d)) of q(z | x)."""
        h = self.encoder.apply(params["encoder"], x, train, key)
        return self.heads.apply(params["head"], h, False, None)

    def decode(self, params: Params, z: jax.Array, train: bool = False, key=None) -> DecoderOutput:
        """z (B, d) -> the parameters of p(x | z), each (B, *S)."""
        out = self.decoder.apply(params["decoder"], z, train, key)
        b, shape = z.shape[0], tuple(self.input_shape)
        logvar = None
        if self.decoder_layout == "tuple":
            loc, logvar = out
        elif self.decoder_layout == "split":
            c = shape[-1]
            if out.shape[1:] == shape[:-1] + (2 * c,):
                loc, logvar = out[..., :c], out[..., c:]
            else:  # flat (B, 2F): first half the mean, second half the log-variance
                flat = out.reshape((b, -1))
                loc, logvar = flat[:, : self.n_features], flat[:, self.n_features :]
        else:
            loc = out
            if self.learn_variance:
                logvar = _logvar_head(shape, self.head_init).apply(params["logvar_head"], z, False, None)
        loc = loc.reshape((b,) + shape)
        if logvar is not None:
            lo, hi = self.logvar_clip
            logvar = jnp.clip(logvar.reshape((b,) + shape), lo, hi)
        return DecoderOutput(loc, logvar)

    def reconstruction(self, out: DecoderOutput) -> jax.Array:
        """The mean of p(x | z), (B, *S): the Gaussian mean or sigmoid(logits)."""
        return jax.nn.sigmoid(out.loc) if self.likelihood == "bernoulli" else out.loc

    def feature_log_prob(self, x: jax.Array, out: DecoderOutput) -> jax.Array:
        """Per-feature log p(x | z), (B, *S) (learned-variance Gaussian or Bernoulli).

        Raises:
          ValueError: for the fixed-covariance Gaussian, whose density needs the
            covariance (see ``vaegmm_jax.core.vae.gaussian_nll``).
        """
        if self.likelihood == "bernoulli":
            return -vae_lib.bernoulli_nll(x, out.loc)
        if out.logvar is None:
            raise ValueError("this model's Gaussian has a fixed covariance: use core.vae.gaussian_nll with it")
        return vae_lib.gaussian_log_prob_diag(x, out.loc, out.logvar)

    def nll(self, x: jax.Array, out: DecoderOutput) -> jax.Array:
        """Per-row -log p(x | z), (B,): the sum over features of :meth:`feature_log_prob`, negated."""
        return -jnp.sum(_flat(self.feature_log_prob(x, out)), axis=-1)

    def forward(self, params: Params, x: jax.Array, key: jax.Array, train: bool = False):
        """One latent sample per row: (DecoderOutput, mean (B, d), logvar (B, d))."""
        k_enc, k_eps, k_dec = jax.random.split(key, 3)
        mean, logvar = self.encode(params, x, train, k_enc)
        z = vae_lib.reparameterize(k_eps, mean, logvar)
        return self.decode(params, z, train, k_dec), mean, logvar

    # -- scoring (eval mode, L samples per row) ------------------------------------------
    def _scan_samples(self, params: Params, x: jax.Array, noise: jax.Array, per_sample: Callable, init):
        """Runs ``per_sample(carry, DecoderOutput) -> (carry, y)`` over the L samples.

        The encoder runs once per row; noise is (L, B, d).
        """
        mean, logvar = self.encode(params, x)
        std = jnp.exp(0.5 * logvar)

        def body(carry, eps):
            return per_sample(carry, self.decode(params, mean + std * eps))

        return jax.lax.scan(body, init, noise)

    def mse_feature_score(self, params: Params, x: jax.Array, noise: jax.Array) -> jax.Array:
        """alibi-detect's feature score: mean over the L samples of (x - x'_l)^2.

        Args:
          params: model parameters.
          x: (B, *S) inputs.
          noise: (L, B, d) standard normal noise.

        Returns:
          (B, *S) feature scores.
        """
        x32 = x.astype(jnp.float32)

        def per_sample(acc, out):
            return acc + (x32 - self.reconstruction(out).astype(jnp.float32)) ** 2, None

        total, _ = self._scan_samples(params, x, noise, per_sample, jnp.zeros_like(x32))
        return total / noise.shape[0]

    def nll_feature_score(self, params: Params, x: jax.Array, noise: jax.Array) -> jax.Array:
        """Per-feature -log p(x | z_l) averaged over the L samples, (B, *S)."""
        x32 = x.astype(jnp.float32)

        def per_sample(acc, out):
            return acc - self.feature_log_prob(x32, _f32(out)), None

        total, _ = self._scan_samples(params, x, noise, per_sample, jnp.zeros_like(x32))
        return total / noise.shape[0]

    def sample_log_likelihoods(self, params: Params, x: jax.Array, noise: jax.Array) -> jax.Array:
        """log p(x | z_l) (summed over features) for each of the L samples, (L, B)."""
        x32 = x.astype(jnp.float32)

        def per_sample(carry, out):
            return carry, -self.nll(x32, _f32(out))

        _, ll = self._scan_samples(params, x, noise, per_sample, None)
        return ll

    def recon_log_prob(self, params: Params, x: jax.Array, noise: jax.Array, reduction: str = "logsumexp") -> jax.Array:
        """Log reconstruction probability (An & Cho 2015, Algorithm 4).

        Args:
          params: model parameters.
          x: (B, *S) inputs.
          noise: (L, B, d) standard normal noise, one independent draw per sample.
          reduction: 'logsumexp': log((1/L) sum_l p(x | z_l)) = logsumexp_l log p(x | z_l) - log L
            (the algorithm); 'mean': (1/L) sum_l log p(x | z_l) (the paper's text).

        Returns:
          (B,) log reconstruction probabilities (higher = more normal).
        """
        ll = self.sample_log_likelihoods(params, x, noise)
        if reduction == "logsumexp":
            return jax.scipy.special.logsumexp(ll, axis=0) - math.log(ll.shape[0])
        if reduction == "mean":
            return jnp.mean(ll, axis=0)
        raise ValueError(f"reduction must be 'logsumexp' or 'mean', got {reduction!r}")


def _f32(out: DecoderOutput) -> DecoderOutput:
    return DecoderOutput(out.loc.astype(jnp.float32), None if out.logvar is None else out.logvar.astype(jnp.float32))


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape((x.shape[0], -1))


_HEADS: dict[tuple[int, str], Network] = {}
_LV_HEADS: dict[tuple[tuple[int, ...], str], Network] = {}


def _heads(latent_dim: int, kernel_init: str = DEFAULT_KERNEL_INIT) -> Network:
    # Cached so that repeated property access yields the same Network object (stable jit caches).
    key = (latent_dim, kernel_init)
    if key not in _HEADS:
        _HEADS[key] = from_linen(GaussianHeads(latent_dim, kernel_init))
    return _HEADS[key]


def _logvar_head(shape: tuple[int, ...], kernel_init: str = DEFAULT_KERNEL_INIT) -> Network:
    key = (tuple(int(s) for s in shape), kernel_init)
    if key not in _LV_HEADS:
        _LV_HEADS[key] = from_linen(_LogVarHead(key[0], kernel_init))
    return _LV_HEADS[key]


def decoder_layout(decoder: Network, latent_dim: int, input_shape: tuple[int, ...], learn_variance: bool) -> str:
    """Infers how to read a decoder's output from its shape (no FLOPs: ``jax.eval_shape``).

    Returns:
      'tuple' for a (mean, logvar) pair; 'mean' for one row's worth of values (B, *S)
      or (B, F); 'split' for twice that, (B, *S[:-1], 2 S[-1]) or (B, 2F).

    Raises:
      ValueError: any other output shape, or a log-variance when none is wanted.
    """
    shape = tuple(int(s) for s in input_shape)
    f = math.prod(shape)

    def run(key, z):
        return decoder.apply(decoder.init(key, z), z, False, None)

    out = jax.eval_shape(run, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((2, latent_dim), jnp.float32))
    if isinstance(out, (tuple, list)):
        if len(out) == 2 and all(math.prod(o.shape[1:]) == f for o in out):
            layout = "tuple"
        else:
            raise ValueError(f"the decoder returns {len(out)} outputs; expected one array or a (mean, logvar) pair")
    else:
        per_row = math.prod(out.shape[1:])
        if per_row == f:
            layout = "mean"
        elif per_row == 2 * f:
            layout = "split"
        else:
            raise ValueError(
                f"the decoder's output has shape {tuple(out.shape[1:])} per row, but rows have shape {shape} "
                f"({f} values): it must give {f} values (the mean / logits)"
                + (f" or {2 * f} (mean and log-variance)" if learn_variance else "")
            )
    if layout != "mean" and not learn_variance:
        raise ValueError(
            f"the decoder gives a mean and a log-variance ({layout!r}) but this detector uses a fixed variance "
            "(score_type='mse') or the Bernoulli likelihood: make it output only the mean / logits"
        )
    return layout


def vae_loss(
    model: VAEModel,
    params: Params,
    x: jax.Array,
    row_weights: jax.Array,
    key: jax.Array,
    *,
    beta: float = 1.0,
    recon_nll: Callable[[jax.Array, DecoderOutput], jax.Array] | None = None,
    kl_per_dim: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The negative ELBO on one minibatch: total = recon + beta * KL.

    Args:
      model: the model.
      params: its parameters.
      x: (B, *S) minibatch.
      row_weights: (B,) 1 for real rows, 0 for padding rows.
      key: PRNG key (sampling and dropout).
      beta: KL weight.
      recon_nll: (x (B, *S), DecoderOutput) -> (B,) per-row reconstruction NLL; default
        ``model.nll`` (sum over features of -log p(x | z)).
      kl_per_dim: alibi-detect's convention, the per-row KL divided by d (mean over
        latent dims). Otherwise the usual KL (sum over latent dims).

    Returns:
      (total (), {'recon', 'kl', 'total'}: each ()).
    """
    out, mean, logvar = model.forward(params, x, key, train=True)
    out = _f32(out)
    nll = (recon_nll or model.nll)(x.astype(jnp.float32), out)
    recon = vae_lib.weighted_mean(nll, row_weights)
    kl = vae_lib.kl_divergence(mean.astype(jnp.float32), logvar.astype(jnp.float32), row_weights)
    if not kl_per_dim:
        kl = kl * model.latent_dim
    total = recon + beta * kl
    return total, {"recon": recon, "kl": kl, "total": total}


def top_percent_mean(feature_score: jax.Array, outlier_perc: float = 100.0) -> jax.Array:
    """alibi-detect's instance score: the mean of the top ``outlier_perc`` % of each row's feature scores.

    Args:
      feature_score: (B, *S).
      outlier_perc: percentage in (0, 100]; k = ceil(F * outlier_perc / 100) features (at least 1).

    Returns:
      (B,) instance scores.
    """
    flat = _flat(feature_score)
    f = flat.shape[-1]
    k = max(1, min(f, int(math.ceil(0.01 * float(outlier_perc) * f))))
    if k == f:
        return jnp.mean(flat, axis=-1)
    return jnp.mean(jax.lax.top_k(flat, k)[0], axis=-1)


__all__ = [
    "VAEModel", "DecoderOutput", "vae_loss", "top_percent_mean", "decoder_layout",
    "LIKELIHOODS", "DECODER_LAYOUTS", "VAE_LOSS_TERMS",
]
