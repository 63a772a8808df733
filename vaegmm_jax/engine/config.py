"""Settings of a fit as values: the training budget's defaults, the engine's options
(:class:`FitOptions`) and the XLA compiler options of its programs (:class:`CompileOptions`).

Nothing here is mutable: a benchmark or a user who wants other settings passes another value
(``fit(..., options=FitOptions(compile=CompileOptions(...)))``), never edits a module global.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import jax
import optax

from vaegmm_jax.engine.validation import check_positive_int

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


#: XLA options as a value: sorted (name, value) pairs (hashable, immutable)
XlaOptions = tuple[tuple[str, Any], ...]


def _frozen(options: Mapping[str, Any] | XlaOptions) -> XlaOptions:
    return tuple(sorted(dict(options).items()))


#: per-program XLA options for programs that run once per fit (the mixture fit): on GPUs, Triton
#: GEMM autotuning of their tiny matmuls took seconds of compile time for microseconds of run
#: time. Ignored by other backends. Never set globally.
RUN_ONCE_COMPILER_OPTIONS = _frozen({"xla_gpu_enable_triton_gemm": False, "xla_gpu_autotune_level": 0})
#: ... and for parameter initialisation, light LLVM optimisation too: its threefry-heavy
#: initialisers compile in about half the time (2.8 s -> 1.3 s on a 2-core CPU) to bit-identical
#: parameters (tested). Level 0 is faster still but changes the last bit of some weights.
INIT_COMPILER_OPTIONS = _frozen({**dict(RUN_ONCE_COMPILER_OPTIONS), "xla_backend_optimization_level": 1})
#: the epoch program runs hundreds of times, so its GEMMs stay autotuned, but at level 1: the
#: candidates are timed without XLA's buffer initialisation and result cross-checks. On an H100
#: that compiled the DAGMM KDD epoch in 5.3 s instead of 6.2 s at the same speed per epoch; level 0
#: (no autotuning) compiled in 5.1 s but ran 30% slower. Ignored off GPUs.
EPOCH_COMPILER_OPTIONS = _frozen({"xla_gpu_autotune_level": 1})


@dataclass(frozen=True)
class CompileOptions:
    """How a fit compiles its programs.

    Attributes:
      epoch: XLA options of the epoch program (:data:`EPOCH_COMPILER_OPTIONS`).
      init: XLA options of the parameter initialisation program (:data:`INIT_COMPILER_OPTIONS`).
      run_once: XLA options of the after-fit programs (the mixture; :data:`RUN_ONCE_COMPILER_OPTIONS`).
      init_platform: platform whose first device runs the fresh-parameter initialisation
        ('cpu' moves its compilation off the accelerator compiler: on an H100 it took 2.7 s alone
        and 4.7-5.5 s beside the epoch program's), or None for JAX's default device. None until
        measured on a GPU (``benchmarks/dagmm_kdd_timing.py --init-platform cpu``).
      score_ahead: also compile the score program (one member on one device, the chunk that
        scoring the training rows or any larger set cuts) while the epochs train, so the first
        ``score`` after ``fit`` does not wait for the compiler. None (default): on accelerators
        only, whose host cores idle while the device trains; on a CPU that compilation competes
        with training itself (2 cores: the fit waited 0.9 s longer to save 0.7 s on the first score).
    """

    epoch: Mapping[str, Any] | XlaOptions = EPOCH_COMPILER_OPTIONS
    init: Mapping[str, Any] | XlaOptions = INIT_COMPILER_OPTIONS
    run_once: Mapping[str, Any] | XlaOptions = RUN_ONCE_COMPILER_OPTIONS
    init_platform: str | None = None
    score_ahead: bool | None = None

    def __post_init__(self):
        for name in ("epoch", "init", "run_once"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, _frozen(value))
            except (TypeError, ValueError) as err:
                raise TypeError(f"CompileOptions.{name} must be a mapping of XLA option names to values, "
                                f"got {value!r}") from err
        if self.init_platform is not None and not isinstance(self.init_platform, str):
            raise TypeError(f"CompileOptions.init_platform must be a platform name or None, got {self.init_platform!r}")
        if self.score_ahead is not None and not isinstance(self.score_ahead, bool):
            raise TypeError(f"CompileOptions.score_ahead must be True, False or None, got {self.score_ahead!r}")

    def compiles_score_ahead(self) -> bool:
        """:attr:`score_ahead` resolved: None means 'on an accelerator backend'."""
        return jax.default_backend() != "cpu" if self.score_ahead is None else self.score_ahead

    def init_device(self) -> jax.Device | None:
        """The device that runs parameter initialisation, or None (JAX's default device)."""
        return None if self.init_platform is None else jax.local_devices(backend=self.init_platform)[0]

    def to_json(self) -> dict:
        """A JSON-able record (kept in ``fit_config`` when it differs from the default)."""
        return {"epoch": dict(self.epoch), "init": dict(self.init), "run_once": dict(self.run_once),
                "init_platform": self.init_platform, "score_ahead": self.score_ahead}


def xla_options(options: Mapping[str, Any] | XlaOptions) -> dict | None:
    """``jax.jit``'s ``compiler_options`` argument: a plain dict, or None for no options."""
    return dict(options) or None


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
      compile: the XLA compiler options of the fit's programs (:class:`CompileOptions`).
      train_steps: optimizer steps a fit aims for when ``epochs`` is None (:func:`auto_epochs`).
    """

    member_data: bool = False
    on_nonfinite: str = "raise"
    epochs_per_call: int = 1
    member_group_size: int | None = None
    allow_zero_epochs: bool = False
    compile: CompileOptions = field(default_factory=CompileOptions)
    train_steps: int = DEFAULT_TRAIN_STEPS

    def __post_init__(self):
        if self.on_nonfinite not in ("raise", "record"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'record', got {self.on_nonfinite!r}")
        check_positive_int(self.epochs_per_call, "epochs_per_call")
        if self.member_group_size is not None:
            check_positive_int(self.member_group_size, "member_group_size")
        check_positive_int(self.train_steps, "train_steps")
        if not isinstance(self.compile, CompileOptions):
            raise TypeError(f"FitOptions.compile must be a CompileOptions, got {self.compile!r}")


__all__ = ["DEFAULT_LEARNING_RATE", "DEFAULT_TRAIN_STEPS", "MAX_AUTO_EPOCHS", "DEFAULT_BATCH_SIZE", "default_optimizer",
           "auto_epochs", "CompileOptions", "FitOptions", "xla_options", "EPOCH_COMPILER_OPTIONS",
           "INIT_COMPILER_OPTIONS", "RUN_ONCE_COMPILER_OPTIONS", "XlaOptions"]
