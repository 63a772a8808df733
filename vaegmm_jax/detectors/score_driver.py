"""Scoring for every detector: validated, chunked, padded, sharded score programs, member
scores, thresholds and alibi-detect's predict dict.

:class:`ScoreDriver` is a mixin of :class:`vaegmm_jax.detectors.base.BaseDetector`: the score
programs are built from the detector's ``score_chunk_fn``, ``score_state`` and
``n_score_samples`` hooks.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaegmm_jax.engine import members, parallel
from vaegmm_jax.engine.members import STREAM_SCORE
from vaegmm_jax.engine.scoring import (
    DEFAULT_SCORE_BATCH,
    check_threshold,
    combine_members,
    default_score_batch,
    flag_outliers,
    in_dtype,
    percentile_threshold,
    scaled_inputs,
)
from vaegmm_jax.engine.streaming import effective_chunk_size, map_chunks
from vaegmm_jax.engine.validation import NotFittedError, check_percentile, check_positive_int, nonfinite_rows


def with_finiteness_check(fn: Callable) -> Callable:
    """fn(params, state, x, offset, keys) -> (fn's scores, nonfinite_rows(x)): one program
    scores a chunk and checks its raw rows, so no pass over the data runs on the host."""

    def checked(params, state, x, offset, keys):
        return fn(params, state, x, offset, keys), nonfinite_rows(x)

    return checked


def _or_jitted(compiled_programs: dict, key, jitted: Callable) -> Callable:
    """``compiled_programs[key]`` (compiled ahead of time for the arguments' expected placement),
    falling back for good to the ``jitted`` function if it refuses the arguments it is given
    (arrays placed otherwise than it was compiled for: the jitted function adapts)."""

    def call(*args):
        program = compiled_programs.get(key)
        if program is not None:
            try:
                return program(*args)
            except (TypeError, ValueError):
                compiled_programs.pop(key, None)
        return jitted(*args)

    return call


class ScoreDriver:
    """Scoring (a mixin of BaseDetector; see the module docstring)."""

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
        return self._scores(X, None, batch_size, key, compute_dtype, row_offset)

    def _scores(self, X, output, batch_size: int | None, key: jax.Array | None, compute_dtype: str,
                row_offset: int) -> np.ndarray:
        """The chunked, validated scoring behind :meth:`score` (and a detector's other score kinds,
        ``output``: see :meth:`score_chunk_fn`)."""
        batch_size = self._check_score_call(batch_size, compute_dtype)
        mesh = parallel.local_mesh(self.devices)
        # shapes and dtypes here; NaN/inf on the device, inside the score program (no host pass)
        if hasattr(X, "shape") or isinstance(X, (list, tuple)):
            X = self.validate_input(X, check_finite=False)
            chunk = effective_chunk_size(X.shape[0], batch_size)
        else:  # an iterable of blocks, validated block by block
            X = (self.validate_input(block, name="X block", check_finite=False) for block in X)
            chunk = batch_size
        chunk = parallel.round_up(chunk, parallel.mesh_size(mesh))
        fn = self._jitted_score(compute_dtype, output=output, checked=True)
        ahead_key = (self._score_cache_key(compute_dtype, output=output, checked=True), chunk)
        if ahead_key in self._score_ahead:  # the program the fit compiled for this chunk (CompileOptions.score_ahead)
            fn = _or_jitted(self._score_ahead, ahead_key, fn)
        keys = self._score_keys(key)
        params, state = self._placed_for_scoring((self.params, self._score_inputs()), mesh)
        return map_chunks(
            lambda x, offset: fn(params, state, x, offset, keys), X, chunk,
            sharding=parallel.row_sharding(mesh), row_offset=int(row_offset), checked=True, name="X",
        ).astype(np.float32)

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
        batch_size = self._check_score_call(batch_size, compute_dtype)
        if member_data:
            X, X_first = self._check_member_data(X, min_rows=1)
            if self.n_members == 1:
                X, member_data = X_first, False
        else:
            X = self.validate_input(X)
        keys = self._score_keys(key)
        return self._member_scores(X, batch_size, keys, compute_dtype, member_data=member_data, scaled=False)

    def _check_score_call(self, batch_size: int | None, compute_dtype: str) -> int:
        """The fitted check and the scoring arguments every score call shares; the batch size to use."""
        self.check_fitted()
        if compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {compute_dtype!r}")
        return default_score_batch(self.n_members) if batch_size is None else check_positive_int(batch_size, "batch_size")

    def _placed_for_scoring(self, tree, mesh):
        """An ensemble's state replicated over the scoring mesh: trained with its members split
        over devices, its arrays may sit on a device subset that the rows' mesh does not match."""
        if self.n_members == 1 or mesh is None:
            return tree
        return jax.device_put(tree, parallel.replicated(mesh))

    def _score_keys(self, key: jax.Array | None) -> jax.Array:
        """([M,] 2) scoring keys: the members' own, or ``key`` split over the members."""
        if key is None:
            return self.member_keys(STREAM_SCORE)
        if not isinstance(key, (jax.Array, np.ndarray)) or not (
                jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 0
                or key.dtype == np.uint32 and key.shape == (2,)):
            raise TypeError(f"key must be a PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), got {key!r}")
        return key if self.n_members == 1 else jax.random.split(key, self.n_members)

    def _member_scores(self, X, batch_size: int, keys, compute_dtype: str, member_data: bool,
                       scaled: bool) -> np.ndarray:
        """(M, N) member scores of validated X ((N, *S), or (M, N, *S) with member_data);
        ``scaled``: X is already in the scaled space (the training rows after fit)."""
        fn = self._jitted_score(compute_dtype, member_scores=True, member_data=member_data, scaled=scaled)
        params, extra = self._placed_for_scoring((self.params, (self.scaler, self.score_state())),
                                                 parallel.local_mesh(self.devices))
        if member_data:  # chunks along the rows: (N, M, *S)
            X = jnp.moveaxis(X, 0, 1) if isinstance(X, jax.Array) else np.moveaxis(np.asarray(X), 0, 1)
        out = self._map_rows(lambda x, offset: fn(params, extra, x, offset, keys), X, batch_size)
        return members.per_member(out.T if self.n_members > 1 else out, self.n_members).astype(np.float32)

    def _map_rows(self, fn: Callable, X, batch_size: int) -> np.ndarray:
        """fn(x (C, *S), offset) -> (C, ...) over X (N, *S) in fixed padded chunks, split over
        the local devices like :meth:`score` (no validation, no scaling: X is used as given)."""
        chunk_like = self._row_chunk_like(X, batch_size)
        return np.asarray(map_chunks(fn, X, chunk_like.shape[0], sharding=chunk_like.sharding))

    def _row_chunk_like(self, X, batch_size: int) -> jax.ShapeDtypeStruct:
        """The (C, *S) float32 chunk (with its row sharding) that :meth:`_map_rows` cuts X into:
        what a program must be compiled for ahead of time."""
        mesh = parallel.local_mesh(self.devices)
        chunk = parallel.round_up(effective_chunk_size(X.shape[0], batch_size), parallel.mesh_size(mesh))
        return jax.ShapeDtypeStruct((chunk,) + tuple(X.shape[1:]), jnp.float32, sharding=parallel.row_sharding(mesh))

    def _score_inputs(self) -> tuple:
        """The ``extra`` argument of :meth:`_jitted_score`'s function: (scaler or None, score_state()),
        and for several members the members' calibration beside it."""
        inputs = (self.scaler, self.score_state())
        if self.n_members == 1:
            return inputs
        if self.member_calibration is None:
            if self.fit_config.get("member_data"):
                raise NotFittedError(
                    f"this {type(self).__name__}'s members were fitted on one training set each (member_data): "
                    "they have no combined score; use score_members(X) or member(i)")
            raise NotFittedError(f"{type(self).__name__} has no member calibration: call fit(X) first")
        return (inputs, {k: jnp.asarray(v) for k, v in self.member_calibration.items()})

    def _score_cache_key(self, compute_dtype: str = "float32", member_scores: bool = False, member_data: bool = False,
                         scaled: bool = False, output=None, checked: bool = False) -> tuple:
        """What tells :meth:`_jitted_score`'s programs apart (its arguments, and L)."""
        return (self.n_score_samples(), compute_dtype, member_scores, member_data, scaled, output, checked)

    def _jitted_score(self, compute_dtype: str = "float32", member_scores: bool = False,
                      member_data: bool = False, scaled: bool = False, output=None, checked: bool = False) -> Callable:
        """jit(fn(params, (scaler, extra), x (C, *S) raw rows, offset, keys) -> scores).

        The input scaling runs inside the program, in float32 before any bf16 cast (``scaled``:
        the rows are already scaled). One member: its (C,) scores. Several: (C, M) member
        scores with ``member_scores`` (x (C, M, *S) with ``member_data``), else their
        combination (:meth:`_combine_members`), (C,). ``checked``: the program also returns
        :func:`~vaegmm_jax.engine.validation.nonfinite_rows` of its raw rows.
        """
        cache_key = self._score_cache_key(compute_dtype, member_scores, member_data, scaled, output, checked)
        if cache_key not in self._score_jit:
            fn = self.score_chunk_fn(self.n_score_samples(), output)
            if compute_dtype == "bfloat16":
                fn = in_dtype(fn, jnp.bfloat16)
            fn = scaled_inputs(fn, skip=scaled)
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
                        return combine_members(per_member(params, scaler_and_extra, x, offset, keys), calibration)
            if checked:
                fn = with_finiteness_check(fn)
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


__all__ = ["ScoreDriver"]
