"""Training: one epoch is one jitted ``lax.scan`` over minibatches.

The data stays on the device; each epoch draws a permutation, pads it to whole
batches (the ragged last batch is kept, its padding rows get weight 0, so the
shape never changes and nothing recompiles), and scans the update step. Per-step
keys come from ``fold_in``. Params and optimizer state are donated. The host
syncs once per epoch (to read the loss history).

A step whose loss, gradients or updated parameters are not finite is not applied, and every later
step of the epoch is skipped too: the state stays at the last good parameters and
the epoch reports the first bad step, so the caller can raise an error naming
the epoch and the term.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vaegmm_jax.engine.members import over_members

# loss_fn(params, x (B, *S), row_weights (B,), key) -> (total (), {term: ()})
LossFn = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


class Objective(NamedTuple):
    """What a detector gives the engine to train (see ``BaseDetector.training_objective``).

    Attributes:
      loss_fn: (params, x (B, *S), row_weights (B,), key) -> (total (), {term: ()}).
      recon_cov: the reconstruction likelihood's covariance estimated from the training rows
        (``core.vae.ReconCovariance``), kept by the detector for scoring and saving; None if unused.
    """

    loss_fn: LossFn
    recon_cov: Any = None


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree).

    Attributes:
      params: model parameters.
      opt_state: optax state.
      step: () int32 number of applied updates.
    """

    params: Any
    opt_state: Any
    step: jax.Array


class EpochResult(NamedTuple):
    """What one epoch reports (device arrays; read once per epoch).

    Attributes:
      terms: (n_terms,) row-weighted means of the loss terms over the epoch's good steps.
      first_bad_step: () int32 index of the first non-finite step, -1 if none.
      bad_terms: (n_terms,) the loss terms at that step (or zeros).
    """

    terms: jax.Array
    first_bad_step: jax.Array
    bad_terms: jax.Array


def all_finite(tree) -> jax.Array:
    """() bool: every element of every leaf of ``tree`` is finite.

    One concatenation and one reduction, whatever the number of leaves: a reduction per leaf
    and an ``and`` of their results compiled to a kernel per leaf, and XLA copied the
    ``and`` chain into every consumer of the flag (a kernel per parameter, optimizer moment and
    selected state leaf), which made up much of the epoch program's compile time.
    """
    leaves = [jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.isfinite(jnp.concatenate(leaves)))


def init_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(params=params, opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32))


def epoch_batches(key: jax.Array, n_rows: int, batch_size: int, shuffle: bool = True):
    """Row indices and weights of one epoch's minibatches.

    Args:
      key: the epoch's PRNG key.
      n_rows: N.
      batch_size: B.
      shuffle: permute the rows (else keep their order).

    Returns:
      (indices (n_batches, B) int32, weights (n_batches, B) float32): the
      permutation padded with its own first rows up to whole batches; padding
      rows carry weight 0.
    """
    n_batches = max(1, math.ceil(n_rows / batch_size))
    order = jax.random.permutation(key, n_rows) if shuffle else jnp.arange(n_rows)
    padded = jnp.resize(order, (n_batches * batch_size,))  # wraps around
    weights = (jnp.arange(n_batches * batch_size) < n_rows).astype(jnp.float32)
    return padded.reshape(n_batches, batch_size).astype(jnp.int32), weights.reshape(n_batches, batch_size)


def make_train_epoch(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    term_names: tuple[str, ...],
    batch_size: int,
    shuffle: bool = True,
    metric_fn: Callable | None = None,
    batch_sharding=None,
):
    """Builds the pure (un-jitted) epoch function.

    Args:
      loss_fn: (params, x (B, *S), row_weights (B,), key) -> (total, {term: ()}).
      optimizer: an optax transformation.
      term_names: which terms to report, in order.
      batch_size: B.
      shuffle: permute the rows every epoch.
      metric_fn: optional (x, row_weights, params, key) -> () extra metric per step (key: the
        step's key, the one the loss gets).
      batch_sharding: optional sharding of a minibatch's rows over devices (data
        parallelism; gradients and statistics are then all-reduced by XLA).

    Returns:
      ``train_epoch(state, x, key, active=True) -> (state, EpochResult)`` with x (N, *S) the
      whole training set on the device, key the epoch's key and active a () bool: False
      computes the epoch but applies none of its steps (a member that stopped). Jit it with
      ``donate_argnums=0``; it is also safe to ``jax.vmap`` over (state, key, active).
    """

    def train_epoch(state: TrainState, x: jax.Array, key: jax.Array, active: jax.Array | bool = True):
        k_perm, k_steps = jax.random.split(key)
        idx, w = epoch_batches(k_perm, x.shape[0], batch_size, shuffle)

        def step(carry, inputs):
            state, first_bad = carry
            i, idx_b, w_b = inputs
            xb = x[idx_b]
            if batch_sharding is not None:
                xb = jax.lax.with_sharding_constraint(xb, batch_sharding)
                w_b = jax.lax.with_sharding_constraint(w_b, batch_sharding)
            step_key = jax.random.fold_in(k_steps, i)
            (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, xb, w_b, step_key)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            # finite gradients can still overflow the parameters (a huge learning rate): such an
            # update is as bad as a NaN gradient and is not applied either
            grads_ok = all_finite((grads, params))
            # one select of the state per step, whatever stops it: a bad step, an earlier bad
            # step, or a member that is no longer trained (one kernel per state leaf each)
            ok = jnp.isfinite(loss) & grads_ok & (first_bad < 0) & active
            new_state = jax.tree.map(
                lambda new, old: jnp.where(ok, new, old),
                TrainState(params, opt_state, state.step + 1),
                state,
            )
            term_vec = jnp.stack([terms[name] for name in term_names]).astype(jnp.float32)
            if metric_fn is not None:
                term_vec = jnp.concatenate([term_vec, jnp.atleast_1d(metric_fn(xb, w_b, state.params, step_key)).astype(jnp.float32)])
            now_bad = (first_bad < 0) & ~(jnp.isfinite(loss) & grads_ok)
            first_bad = jnp.where(now_bad, i, first_bad)
            n_valid = jnp.sum(w_b) * ok
            return (new_state, first_bad), (term_vec, n_valid, now_bad)

        steps = jnp.arange(idx.shape[0])
        (state, first_bad), (term_vecs, n_valid, bad_flags) = jax.lax.scan(
            step, (state, jnp.asarray(-1, jnp.int32)), (steps, idx, w)
        )
        safe_terms = jnp.where(n_valid[:, None] > 0, term_vecs, 0.0)
        means = jnp.sum(safe_terms * n_valid[:, None], axis=0) / jnp.maximum(jnp.sum(n_valid), 1.0)
        bad_terms = jnp.sum(jnp.where(bad_flags[:, None], term_vecs, 0.0), axis=0)
        return state, EpochResult(terms=means, first_bad_step=first_bad, bad_terms=bad_terms)

    return train_epoch


def epoch_key(base_key: jax.Array, epoch: int) -> jax.Array:
    """The key of epoch ``epoch`` (0-based): the same whether training resumes or not."""
    return jax.random.fold_in(base_key, epoch)


class RunReport(NamedTuple):
    """What one call of an epoch runner reports (device arrays, read once per call).

    Shapes carry a member axis [M] only when M > 1 (see :mod:`vaegmm_jax.engine.members`).

    Attributes:
      terms: (epochs_per_call, [M,] n_terms) the epoch means; NaN for an epoch a member did
        not finish (it failed in it or earlier) or that was past ``stop``.
      first_bad_step: ([M],) int32 the step of the failing epoch at which a member failed, -1 if none.
      bad_terms: ([M,] n_terms) the loss terms at that step (zeros if none).
    """

    terms: jax.Array
    first_bad_step: jax.Array
    bad_terms: jax.Array


def make_epoch_runner(
    train_epoch: Callable,
    n_members: int,
    member_data: bool,
    n_terms: int,
    epochs_per_call: int,
    group_size: int | None = None,
):
    """Builds the pure function that trains M members for ``epochs_per_call`` epochs.

    Args:
      train_epoch: one member's epoch, from :func:`make_train_epoch`:
        ``(state, x, key, active) -> (state, EpochResult)``, which applies no step when
        ``active`` is False (the runner passes ``alive``; it selects no state itself).
      n_members: M; the member axis exists only when M > 1.
      member_data: x has a leading member axis (one training set per member).
      n_terms: length of the epoch's term vector.
      epochs_per_call: epochs per call; more than one runs a ``lax.scan`` whose epochs at
        or past ``stop`` are skipped, so every call has the same shapes.
      group_size: members trained together (see :func:`vaegmm_jax.engine.members.over_members`).

    Returns:
      ``run(state, alive, failed, x, base_keys, start, stop) -> (state, alive, failed, RunReport)``:
      state a :class:`TrainState` with leaves ([M,] ...); alive ([M],) bool, members still training;
      failed ([M],) int32, the 0-based epoch in which a member first hit a non-finite step (-1 if
      none); x (N, *S) or (M, N, *S); base_keys ([M,] 2) the members' training keys; start and
      stop () int32 epoch indices. A failed member keeps its last good parameters and stops.
      Jit it with ``donate_argnums=0``.
    """
    v_epoch = over_members(train_epoch, (0, 0 if member_data else None, 0, 0), n_members, group_size)
    v_epoch_key = epoch_key if n_members == 1 else jax.vmap(epoch_key, in_axes=(0, None))

    def run(state, alive, failed, x, base_keys, start, stop):
        def do_epoch(carry, epoch):
            state, alive, failed, first_bad, bad_terms = carry
            # a member that is not alive any more keeps its state: its steps are not applied
            state, result = v_epoch(state, x, v_epoch_key(base_keys, epoch), alive)
            now_bad = alive & (result.first_bad_step >= 0)
            failed = jnp.where(now_bad, epoch, failed)
            first_bad = jnp.where(now_bad, result.first_bad_step, first_bad)
            bad_terms = jnp.where(now_bad[..., None], result.bad_terms, bad_terms)
            # like the history of a single fit: only fully good epochs are recorded
            terms = jnp.where((alive & ~now_bad)[..., None], result.terms, jnp.nan)
            return (state, alive & ~now_bad, failed, first_bad, bad_terms), terms

        def skip(carry, epoch):
            return carry, jnp.full(alive.shape + (n_terms,), jnp.nan, jnp.float32)

        carry = (state, alive, failed, jnp.full(alive.shape, -1, jnp.int32),
                 jnp.zeros(alive.shape + (n_terms,), jnp.float32))
        if epochs_per_call == 1:  # the caller calls only for epochs before stop
            carry, terms = do_epoch(carry, start)
            terms = terms[None]
        else:
            carry, terms = jax.lax.scan(
                lambda c, j: jax.lax.cond(start + j < stop, do_epoch, skip, c, start + j),
                carry, jnp.arange(epochs_per_call, dtype=jnp.int32),
            )
        state, alive, failed, first_bad, bad_terms = carry
        return state, alive, failed, RunReport(terms=terms, first_bad_step=first_bad, bad_terms=bad_terms)

    return run
