"""Loading a saved detector: which class a checkpoint names, rebuilt from its configuration
with its arrays restored (the file format itself is :mod:`vaegmm_jax.io.checkpoint`)."""

from __future__ import annotations

import os
from pathlib import Path

from vaegmm_jax.detectors.gmm_detectors import OutlierAEGMM, OutlierVAEGMM
from vaegmm_jax.detectors.vae_detector import OutlierVAE
from vaegmm_jax.io.checkpoint import (
    META_FILE,
    CheckpointError,
    apply_meta,
    read_live,
    read_meta,
    restore_arrays,
    short_error,
)

#: the classes a checkpoint's ``detector`` field may name: the library's own concrete detectors
#: only, so a hand-edited name can never make a load call some other object of the package
DETECTOR_CLASSES = {cls.__name__: cls for cls in (OutlierVAEGMM, OutlierAEGMM, OutlierVAE)}


def detector_class(name: str, meta_file: Path | None = None) -> type:
    """The detector class a checkpoint names; CheckpointError (naming the file and field) otherwise."""
    cls = DETECTOR_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        where = f"{meta_file}: field 'detector': " if meta_file is not None else ""
        raise CheckpointError(f"{where}unknown detector class {name!r} in checkpoint (not one of the library's "
                              f"detectors: {', '.join(sorted(DETECTOR_CLASSES))})")
    return cls


def load_detector(path: str | os.PathLike, **networks):
    """Loads a detector saved by :func:`save_detector`.

    Args:
      path: the model folder (a version folder inside it, or a folder of the earlier
        unversioned layout, loads too).
      **networks: the same ``encoder_net`` / ``decoder_net`` / ``gmm_density_net``
        (or ``vaegmm``/``aegmm``/``vae`` model) objects the detector was built with, when
        they were custom (their code is not stored, only their parameters). Default
        networks are rebuilt from the stored configuration.

    Returns:
      The detector, with scores bit-identical to the saved one's on the same device. Its
      optimizer state is not read (``opt_state`` is None): ``fit(..., checkpoint_dir=path,
      resume=True)`` reads it against the optimizer that fit is given.

    Raises:
      FileNotFoundError: nothing at ``path``.
      CheckpointError: the folder is not a complete, intact checkpoint (names the file and field).
    """
    return read_live(path, lambda live: load_folder(live.folder, networks))


def load_folder(folder: Path, networks: dict):
    """The detector saved in one version folder (no CURRENT pointer is read)."""
    meta = read_meta(folder)
    meta_file = folder / META_FILE
    cls = detector_class(meta["detector"], meta_file)
    det = _from_config(cls, meta, meta_file, networks)
    apply_meta(det, meta, meta_file)
    restore_arrays(det, folder, meta)
    return det


def _from_config(cls, meta: dict, meta_file: Path, networks: dict):
    try:
        return cls.from_config(meta["config"], **networks)
    except KeyError as err:
        raise CheckpointError(f"{meta_file}: field 'config' lacks the entry {err.args[0]!r} that a "
                              f"{cls.__name__} needs") from err
    except (TypeError, AttributeError, IndexError, ValueError) as err:
        raise CheckpointError(f"{meta_file}: field 'config' cannot rebuild a {cls.__name__}: {short_error(err)}") from err


__all__ = ["DETECTOR_CLASSES", "detector_class", "load_detector", "load_folder"]
