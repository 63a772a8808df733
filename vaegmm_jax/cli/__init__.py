"""The ``vaegmm`` command line (also ``python -m vaegmm_jax``): fit, score, evaluate and
inspect detectors.

Subcommands, one module each::

    vaegmm demo     [--out DIR] [--epochs N] [--dataset breast_cancer|thyroid]   demo.py
    vaegmm fit      DATA --detector vaegmm|aegmm|vae --out DIR [options]         fit.py
    vaegmm score    DATA --model DIR --out FILE [--chunk-rows N]                 score.py
    vaegmm evaluate DATA --labels COL --model DIR [--out DIR]                    evaluate.py
    vaegmm info     DIR [--json]                                                 info.py

and what they share: ``entry.py`` (the parser, :func:`main`), ``args.py`` (argument types),
``errors.py`` (which errors are the user's), ``config.py`` (the detector from flags, preset and
``--config``), ``model_folder.py`` (reading and writing a model folder), ``scoring.py``
(streaming a file through a model, thresholds), ``reporting.py`` (metrics, plots) and
``display.py`` (what is printed).

Exit codes: 0 success; 2 bad usage or bad input (a one-line reason on stderr);
1 internal error (with a traceback, please report it). Set ``VAEGMM_DEBUG=1`` to
get tracebacks for bad-input errors too.

A model folder written by ``fit`` holds a pointer ``CURRENT`` and the version folder it
names (see :mod:`vaegmm_jax.io.checkpoint`), which holds the detector checkpoint
(``detector.json``, ``arrays/``), ``preprocessing.json`` (feature names, the scaler fitted
on the training rows, identifier/label columns), ``model_card.json`` and ``plots/``. All of
them are replaced as one unit: ``fit --overwrite`` writes a complete new version before the
pointer moves, so a fit killed at any moment leaves the old model whole (detector and
scaling together), and ``score``/``evaluate``/``info`` read every file from the one
version the pointer named when they started.
"""

from vaegmm_jax.cli.entry import main

__all__ = ["main"]
