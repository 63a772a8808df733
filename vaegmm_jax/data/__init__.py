"""Loaders of the public data sets the examples, tests and benchmarks use (no network unless asked).

Modules: :mod:`~vaegmm_jax.data.files` (the data root ``$VAEGMM_DATA``, file lookup, digests),
:mod:`~vaegmm_jax.data.containers` (what the loaders return), :mod:`~vaegmm_jax.data.kddcup`,
:mod:`~vaegmm_jax.data.odds`, :mod:`~vaegmm_jax.data.images` (MNIST, Fashion-MNIST),
:mod:`~vaegmm_jax.data.contamination` (synthetic image outliers),
:mod:`~vaegmm_jax.data.scaling` (scaling fitted on training rows) and
:mod:`~vaegmm_jax.data.downloads` (the opt-in download). Their public names are here too.

Files whose SHA-256 digest is known (:data:`SHA256`) are checked when ``verify=True`` (the
default), and their expected shapes and label counts are checked after parsing. Files with
unknown digests (other ODDS sets, renamed copies) are parsed and structurally validated, but
not checksummed. The loaders never scale features: scaling must be fitted on training rows
only (:func:`fit_column_scaler`).
"""

from vaegmm_jax.data import containers, contamination, downloads, files, images, kddcup, odds, scaling
from vaegmm_jax.data.containers import ImageDataset, TabularDataset
from vaegmm_jax.data.contamination import ContaminationDetails, contaminated_mnist
from vaegmm_jax.data.downloads import download, fetch_verified
from vaegmm_jax.data.files import (
    ENV_VAR,
    SHA256,
    check_sha256,
    data_root,
    gunzip_if_compressed,
    resolve_data_file,
)
from vaegmm_jax.data.images import (
    FASHION_MNIST_CLASSES,
    IDX_CLASS_NAMES,
    MNIST_CLASSES,
    load_fashion_mnist,
    load_idx_images,
    load_mnist,
)
from vaegmm_jax.data.kddcup import (
    ALIBI_KDD_COLUMNS,
    KDD_COLUMNS,
    KDD_SYMBOLIC_COLUMNS,
    KDDCUP_REV_N_ATTACKS,
    kddcup_rev,
    load_kddcup99,
    parse_kdd_csv,
)
from vaegmm_jax.data.odds import load_odds
from vaegmm_jax.data.scaling import ColumnScaler, apply_column_scaler, fit_column_scaler, multiplier_and_offset

__all__ = [*files.__all__, *containers.__all__, *kddcup.__all__, *odds.__all__, *images.__all__,
           *contamination.__all__, *scaling.__all__, *downloads.__all__]
