"""``python -m vaegmm_jax`` runs the ``vaegmm`` command line."""

import sys

from vaegmm_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
