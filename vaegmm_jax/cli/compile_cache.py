"""The command line's persistent XLA compilation cache.

The ``vaegmm`` command is an application, unlike the library: it turns on JAX's persistent
compilation cache by default, so a second ``vaegmm fit`` or ``vaegmm score`` of the same
shapes loads its programs instead of compiling them (compilation is most of a short run).
The cache lives in ``$VAEGMM_CACHE_DIR``, else ``$XDG_CACHE_HOME/vaegmm_jax/xla``, else
``~/.cache/vaegmm_jax/xla``. ``--no-compile-cache`` or ``VAEGMM_COMPILE_CACHE=0`` turn it off.
The library itself never sets it (it changes no global JAX configuration on import).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["ENV_SWITCH", "ENV_DIR", "cache_dir", "enable"]

#: set to 0 / false / off to run without the persistent cache
ENV_SWITCH = "VAEGMM_COMPILE_CACHE"
#: the cache folder (default: the user's cache folder)
ENV_DIR = "VAEGMM_CACHE_DIR"


def cache_dir() -> Path:
    """Where the command line keeps compiled programs."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vaegmm_jax" / "xla"


def enable(requested: bool) -> Path | None:
    """Turns the cache on (unless ``requested`` is False or the environment switch is off, or
    the user configured JAX's cache themselves); returns the folder used, or None."""
    if not requested or os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "off", "no"):
        return None
    if jax.config.jax_compilation_cache_dir:  # the user's own setting wins
        return Path(jax.config.jax_compilation_cache_dir)
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # every program of a run is worth keeping: a CPU compile of a few tenths of a second,
    # repeated on every invocation, is most of a small fit
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder
