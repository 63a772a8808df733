"""Tests for vaegmm_jax.data (the loaders, their file checks and the column scaler).

Real-data tests read the folder named by VAEGMM_DATA and skip, with a reason,
when it is unset or missing. Everything else runs on small synthetic files.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from vaegmm_jax import data as ds

KDD_REL = "kddcup99/kddcup.data_10_percent.gz"


def data_root() -> Path:
    root = os.environ.get(ds.ENV_VAR)
    if not root:
        pytest.skip(f"{ds.ENV_VAR} is not set: point it at the shared data folder to run real-data tests")
    path = Path(root)
    if not path.is_dir():
        pytest.skip(f"{ds.ENV_VAR}={root} is not an existing folder")
    return path


@pytest.fixture(scope="module")
def kdd() -> ds.TabularDataset:
    # Parsing takes ~2 s: do it once for the module.
    return ds.load_kddcup99(data_root(), protocol="dagmm")


@pytest.fixture(scope="module")
def kdd_alibi() -> ds.TabularDataset:
    return ds.load_kddcup99(data_root(), protocol="alibi")


@pytest.fixture(scope="module")
def mnist_test() -> ds.ImageDataset:
    return ds.load_mnist("test", data_root())


def _copy_known(rel: str, dest_root: Path) -> Path:
    dest = dest_root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_root() / rel, dest)
    dest.chmod(0o644)  # the shared copies are read-only
    return dest


def _flip_byte(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0xFF
    file.write_bytes(bytes(data))


# --------------------------------------------------------------------------- #
# Checksum constants
# --------------------------------------------------------------------------- #


def test_checksum_constants_are_full_digests():
    assert len(ds.SHA256) == 9
    for rel, digest in ds.SHA256.items():
        assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest), rel
    # The KDD digest is the one scikit-learn's fetch_kddcup99 uses for the same file.
    assert ds.SHA256[KDD_REL].startswith("8045aca0d84e70e6")


def test_checksum_constants_match_shared_files():
    import hashlib

    root = data_root()
    for rel, digest in ds.SHA256.items():
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest, rel


# --------------------------------------------------------------------------- #
# KDD Cup 1999
# --------------------------------------------------------------------------- #


def test_kdd_dagmm_shape_labels_and_columns(kdd):
    assert kdd.X.shape == (494_021, 118)
    assert kdd.X.dtype == np.float32
    assert kdd.y.shape == (494_021,) and kdd.y.dtype == np.int64
    assert int(kdd.y.sum()) == 97_278  # 'normal.' rows are the anomaly class here
    assert kdd.continuous.dtype == bool and kdd.continuous.shape == (118,)
    assert int(kdd.continuous.sum()) == 38
    assert kdd.continuous[:38].all() and not kdd.continuous[38:].any()
    names = kdd.feature_names
    assert len(names) == 118 and len(set(names)) == 118
    for col, k in (("protocol_type", 3), ("service", 66), ("flag", 11)):
        assert sum(n.startswith(col + "=") for n in names) == k
    # Exactly one indicator per symbolic column is set in every row.
    assert np.array_equal(kdd.X[:, 38:].sum(axis=1), np.full(494_021, 3.0, np.float32))
    assert set(np.unique(kdd.X[:, 38:])) == {0.0, 1.0}
    assert np.isfinite(kdd.X).all()


def test_kdd_labels_agree_with_raw_labels(kdd):
    assert len(kdd.label_names) == 23
    raw = np.asarray(kdd.label_names)[kdd.label_codes]
    assert np.array_equal(kdd.y, (raw == "normal.").astype(np.int64))
    assert int((raw == "smurf.").sum()) == 280_790


def test_kdd_first_row_matches_file(kdd):
    # First line: 0,tcp,http,SF,181,5450,0,...,9,9,1.00,0.00,0.11,0.00,0.00,0.00,0.00,0.00,normal.
    row = dict(zip(kdd.feature_names, kdd.X[0]))
    assert row["duration"] == 0 and row["src_bytes"] == 181 and row["dst_bytes"] == 5450
    assert row["protocol_type=tcp"] == 1 and row["service=http"] == 1 and row["flag=SF"] == 1
    assert row["protocol_type=udp"] == 0
    assert row["dst_host_count"] == 9 and row["dst_host_same_src_port_rate"] == np.float32(0.11)
    assert kdd.y[0] == 1


def test_kdd_alibi_protocol(kdd, kdd_alibi):
    assert kdd_alibi.X.shape == (494_021, 18) and kdd_alibi.X.dtype == np.float32
    assert kdd_alibi.feature_names == ds.ALIBI_KDD_COLUMNS
    assert int(kdd_alibi.y.sum()) == 494_021 - 97_278  # attacks are the outliers
    assert np.array_equal(kdd_alibi.y, 1 - kdd.y)
    idx = [kdd.feature_names.index(c) for c in ds.ALIBI_KDD_COLUMNS]
    assert np.array_equal(kdd_alibi.X, kdd.X[:, idx])


def test_kdd_minmax_fitted_on_training_rows(kdd):
    rng = np.random.default_rng(0)
    perm = rng.permutation(kdd.X.shape[0])
    train, test = perm[: perm.size // 2], perm[perm.size // 2 :]
    # DAGMM protocol: train on the normal class (y == 0 here) of the train half.
    train = train[kdd.y[train] == 0]
    params = ds.fit_column_scaler(kdd.X[train], "minmax", kdd.continuous)
    Xtr = ds.apply_column_scaler(params, kdd.X[train])
    Xte = ds.apply_column_scaler(params, kdd.X[test])
    assert Xtr.dtype == np.float32 and Xtr.shape == kdd.X[train].shape
    cont = Xtr[:, kdd.continuous]
    assert cont.min() >= 0.0 and cont.max() <= 1.0
    nonconst = ~params.constant
    assert np.allclose(cont.min(axis=0)[nonconst], 0.0) and np.allclose(cont.max(axis=0)[nonconst], 1.0)
    # Columns constant on the training rows (e.g. num_outbound_cmds) map to 0.
    assert kdd.feature_names.index("num_outbound_cmds") in params.columns[~nonconst]
    assert np.all(cont[:, ~nonconst] == 0)
    # Indicator columns are left as they are; the input is not modified.
    assert np.array_equal(Xtr[:, ~kdd.continuous], kdd.X[train][:, ~kdd.continuous])
    assert kdd.X[:, 1].max() > 1  # raw src_bytes still unscaled
    # Test rows are transformed with the training fit, so they may leave [0, 1].
    assert Xte.shape == kdd.X[test].shape and np.isfinite(Xte).all()


def test_kddcup_rev(kdd):
    X1, y1, idx1 = ds.kddcup_rev(kdd.X, kdd.y, np.random.default_rng(1), return_index=True)
    assert X1.shape == (97_278 + 24_319, 118)
    assert int(y1.sum()) == 24_319  # attacks are the anomalies (20%)
    assert np.array_equal(X1, kdd.X[idx1])
    assert np.array_equal(y1, 1 - kdd.y[idx1])
    assert np.unique(idx1).size == idx1.size  # attacks drawn without replacement
    assert set(np.flatnonzero(kdd.y == 1)) <= set(idx1.tolist())  # every normal row kept
    _, y1b, idx1b = ds.kddcup_rev(kdd.X, kdd.y, 1, return_index=True)
    assert np.array_equal(idx1, idx1b)  # same seed, same draw
    _, _, idx2 = ds.kddcup_rev(kdd.X, kdd.y, 2, return_index=True)
    assert not np.array_equal(idx1, idx2)  # redrawn per seed


def test_column_scaler_keeps_the_numbers_of_the_minmax_and_z_score_it_replaced():
    """The one column scaler (core statistics) gives what fit_minmax / apply_minmax and the protocols'
    affine fit gave: min-max maps a column constant on the training rows to 0 on every row, a z-score
    only centres it."""
    x = np.array([[1, 5, 0], [3, 5, 1], [2, 5, 0]], np.float32)  # column 1 is constant
    other = np.array([[4, 7, 2], [0, 3, -1]], np.float32)
    mm = ds.fit_column_scaler(x, "minmax")
    assert mm.constant.tolist() == [False, True, False]
    np.testing.assert_array_equal(ds.apply_column_scaler(mm, x), [[0, 0, 0], [1, 0, 1], [0.5, 0, 0]])
    np.testing.assert_array_equal(ds.apply_column_scaler(mm, other), [[1.5, 0, 2], [-0.5, 0, -1]])
    mult, off = ds.multiplier_and_offset(mm)
    assert mult.dtype == off.dtype == np.float32
    np.testing.assert_array_equal(mult, [0.5, 0, 1])
    np.testing.assert_array_equal(off, [-0.5, 0, 0])
    np.testing.assert_array_equal(other * mult + off, ds.apply_column_scaler(mm, other))
    z = ds.fit_column_scaler(x, "standard")
    mult, off = ds.multiplier_and_offset(z)
    np.testing.assert_allclose(mult, [1 / np.sqrt(2 / 3), 1, 1 / np.sqrt(2 / 9)], rtol=1e-6)
    np.testing.assert_allclose(off, [-2 / np.sqrt(2 / 3), -5, -(1 / 3) / np.sqrt(2 / 9)], rtol=1e-6)
    np.testing.assert_allclose(ds.apply_column_scaler(z, other)[:, 1], [2, -2])  # constant column: centred only
    # a column selection leaves the other columns as they are; the input is not modified
    part = ds.fit_column_scaler(x, "minmax", np.array([True, False, False]))
    scaled = ds.apply_column_scaler(part, other)
    np.testing.assert_array_equal(scaled, [[1.5, 7, 2], [-0.5, 3, -1]])
    assert other[0, 0] == 4
    np.testing.assert_array_equal(ds.multiplier_and_offset(part)[0], [0.5, 1, 1])
    with pytest.raises(ValueError, match="kind must be one of"):
        ds.fit_column_scaler(x, "standardize")
    with pytest.raises(ValueError, match="non-finite"):
        ds.fit_column_scaler(np.array([[np.nan], [1.0]]), "minmax")


def test_kddcup_rev_validates():
    X = np.zeros((10, 2), np.float32)
    y = np.array([1] * 8 + [0] * 2)
    with pytest.raises(ValueError, match="only 2 available"):
        ds.kddcup_rev(X, y, 0)
    with pytest.raises(ValueError, match="binary"):
        ds.kddcup_rev(X, np.arange(10), 0, n_attacks=1)
    Xr, yr = ds.kddcup_rev(X, y, 0, n_attacks=1)
    assert Xr.shape == (9, 2) and int(yr.sum()) == 1


def test_kdd_checksum_failure_on_corrupted_copy(tmp_path):
    file = _copy_known(KDD_REL, tmp_path)
    _flip_byte(file, 1000)
    with pytest.raises(ValueError, match="SHA-256 mismatch") as err:
        ds.load_kddcup99(tmp_path)
    assert str(file) in str(err.value) and ds.SHA256[KDD_REL] in str(err.value)


def test_kdd_truncated_copy_fails_checksum_and_gzip(tmp_path):
    file = _copy_known(KDD_REL, tmp_path)
    file.write_bytes(file.read_bytes()[:500_000])
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        ds.load_kddcup99(file)
    with pytest.raises(ValueError, match="malformed gzip"):
        ds.load_kddcup99(file, verify=False)


def _kdd_line(proto="tcp", service="http", flag="SF", label="normal.", src=181) -> str:
    numeric = ["0"] * 38
    numeric[1] = str(src)
    fields = [numeric[0], proto, service, flag, *numeric[1:], label]
    assert len(fields) == 42
    return ",".join(fields)


def test_kdd_small_synthetic_file(tmp_path):
    lines = [
        _kdd_line(),
        _kdd_line("udp", "private", "SF", "teardrop.", src=28),
        _kdd_line("icmp", "ecr_i", "REJ", "smurf.", src=1032),
    ]
    file = tmp_path / "small.csv.gz"
    file.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    d = ds.load_kddcup99(file)  # unknown file name: no checksum, no count checks
    assert d.X.shape == (3, 38 + 3 + 3 + 2)
    assert d.y.tolist() == [1, 0, 0]
    assert d.X[:, d.feature_names.index("src_bytes")].tolist() == [181, 28, 1032]
    assert d.feature_names[38:41] == ("protocol_type=icmp", "protocol_type=tcp", "protocol_type=udp")
    a = ds.load_kddcup99(file, protocol="alibi")
    assert a.X.shape == (3, 18) and a.y.tolist() == [0, 1, 1]


def test_kdd_malformed_csv(tmp_path):
    bad_number = _kdd_line().replace(",181,", ",oops,")
    too_few = ",".join(_kdd_line().split(",")[:30])
    for i, line in enumerate((bad_number, too_few)):
        file = tmp_path / f"bad{i}.csv"
        file.write_text(_kdd_line() + "\n" + line + "\n")
        with pytest.raises(ValueError, match="malformed KDD"):
            ds.load_kddcup99(file)
    with pytest.raises(ValueError, match="protocol"):
        ds.load_kddcup99(file, protocol="nope")


@pytest.mark.parametrize("use_pandas", [True, False])
def test_kdd_parser_rejects_bad_field_counts(use_pandas):
    if use_pandas:
        pytest.importorskip("pandas")
    good = _kdd_line()
    for bad in (good + ",extra", ",".join(good.split(",")[:30]), good.replace(",181,", ",oops,")):
        with pytest.raises(ValueError, match="malformed KDD"):
            ds.parse_kdd_csv(f"{good}\n{bad}\n".encode(), Path("f.csv"), use_pandas=use_pandas)
    with pytest.raises(ValueError, match="malformed KDD"):
        ds.parse_kdd_csv(b"", Path("f.csv"), use_pandas=use_pandas)


def test_kdd_numpy_fallback_parser_matches_pandas():
    pytest.importorskip("pandas")
    raw = gzip.decompress((data_root() / KDD_REL).read_bytes())
    head = b"\n".join(raw.split(b"\n", 3000)[:3000]) + b"\n"
    n1, c1 = ds.parse_kdd_csv(head, Path("head"), use_pandas=True)
    n2, c2 = ds.parse_kdd_csv(head, Path("head"), use_pandas=False)
    assert n1.shape == (3000, 38) and np.array_equal(n1, n2)
    for (names1, codes1), (names2, codes2) in zip(c1, c2):
        assert names1 == names2 and np.array_equal(codes1, codes2)


# --------------------------------------------------------------------------- #
# Paths, environment variable, missing files
# --------------------------------------------------------------------------- #


def test_missing_file_names_path_and_env_var(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=ds.ENV_VAR) as err:
        ds.load_kddcup99(tmp_path)
    assert str(tmp_path / KDD_REL) in str(err.value)
    with pytest.raises(FileNotFoundError, match=ds.ENV_VAR):
        ds.load_odds("thyroid", tmp_path)
    with pytest.raises(FileNotFoundError, match=ds.ENV_VAR):
        ds.load_mnist("test", tmp_path)
    monkeypatch.setenv(ds.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ds.load_fashion_mnist()


def test_unset_env_var_is_explained(monkeypatch):
    monkeypatch.delenv(ds.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=f"{ds.ENV_VAR} is not set"):
        ds.load_kddcup99()
    with pytest.raises(FileNotFoundError, match=f"{ds.ENV_VAR} is not set"):
        ds.load_odds("arrhythmia")


def test_env_var_and_path_forms(tmp_path, monkeypatch):
    file = _copy_known("odds/thyroid.npz", tmp_path)
    monkeypatch.setenv(ds.ENV_VAR, str(tmp_path))
    a = ds.load_odds("thyroid")  # from the environment variable
    b = ds.load_odds("thyroid", tmp_path / "odds")  # the sub-folder
    c = ds.load_odds("thyroid", file)  # the file itself
    d = ds.load_odds(file)  # a path instead of a name
    for other in (b, c, d):
        assert np.array_equal(a.X, other.X) and np.array_equal(a.y, other.y)


# --------------------------------------------------------------------------- #
# ODDS
# --------------------------------------------------------------------------- #


def test_odds_arrhythmia():
    d = ds.load_odds("arrhythmia", data_root())
    assert d.X.shape == (452, 274) and d.X.dtype == np.float32
    assert d.y.shape == (452,) and d.y.dtype == np.int64
    assert int(d.y.sum()) == 66
    assert d.continuous.all() and d.feature_names is None


def test_odds_thyroid():
    d = ds.load_odds("thyroid", data_root())
    assert d.X.shape == (3772, 6) and int(d.y.sum()) == 93
    assert d.X.min() >= 0 and d.X.max() <= 1


def test_odds_checksum_failure(tmp_path):
    file = _copy_known("odds/arrhythmia.mat", tmp_path)
    _flip_byte(file, 5000)
    with pytest.raises(ValueError, match="SHA-256 mismatch") as err:
        ds.load_odds("arrhythmia", tmp_path)
    assert str(file) in str(err.value) and ds.SHA256["odds/arrhythmia.mat"] in str(err.value)
    # A truncated archive is reported as malformed when the checksum is skipped.
    tfile = _copy_known("odds/thyroid.npz", tmp_path)
    tfile.write_bytes(tfile.read_bytes()[:1000])
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        ds.load_odds("thyroid", tmp_path)
    with pytest.raises(ValueError, match="malformed .npz"):
        ds.load_odds("thyroid", tmp_path, verify=False)


def test_odds_unknown_files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = (np.arange(20) < 4).astype(np.int64)
    np.savez(tmp_path / "toy.npz", X=X, y=y)
    scipy.io.savemat(tmp_path / "toy.mat", {"X": X, "y": y[:, None].astype(np.uint8)})
    for name in ("toy.npz", "toy.mat"):
        d = ds.load_odds(tmp_path / name)
        assert d.X.shape == (20, 3) and d.X.dtype == np.float32 and d.y.tolist() == y.tolist()
        assert d.name == "toy"
    np.savez(tmp_path / "nonbinary.npz", X=X, y=np.arange(20))
    with pytest.raises(ValueError, match="binary"):
        ds.load_odds(tmp_path / "nonbinary.npz")
    np.savez(tmp_path / "nolabels.npz", X=X)
    with pytest.raises(ValueError, match="lacks"):
        ds.load_odds(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "mismatch.npz", X=X, y=y[:5])
    with pytest.raises(ValueError, match="shape"):
        ds.load_odds(tmp_path / "mismatch.npz")
    Xnan = X.copy()
    Xnan[0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", X=Xnan, y=y)
    with pytest.raises(ValueError, match="non-finite"):
        ds.load_odds(tmp_path / "nan.npz")
    (tmp_path / "toy.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported"):
        ds.load_odds(tmp_path / "toy.csv")
    with pytest.raises(FileNotFoundError, match="neither a known ODDS name"):
        ds.load_odds("no_such_set")


def test_odds_known_name_shape_check(tmp_path):
    # A thyroid.mat (other format, no known digest) with the wrong shape is rejected.
    (tmp_path / "odds").mkdir()
    scipy.io.savemat(tmp_path / "odds" / "thyroid.mat", {"X": np.zeros((10, 6)), "y": np.zeros((10, 1))})
    with pytest.raises(ValueError, match="expected \\(3772, 6\\) with 93"):
        ds.load_odds("thyroid", tmp_path)
    assert ds.load_odds("thyroid", tmp_path, verify=False).X.shape == (10, 6)


# --------------------------------------------------------------------------- #
# MNIST / Fashion-MNIST
# --------------------------------------------------------------------------- #


def test_mnist_test(mnist_test):
    m = mnist_test
    assert m.images.shape == (10_000, 28, 28, 1) and m.images.dtype == np.float32
    assert m.images.min() == 0.0 and m.images.max() == 1.0
    assert m.labels.shape == (10_000,) and m.labels.dtype == np.int64
    assert np.bincount(m.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert m.name == "mnist-test" and len(m.class_names) == 10


def test_mnist_train_split_missing_or_valid():
    root = data_root()
    if (root / "mnist" / "train-images-idx3-ubyte.gz").exists():
        assert ds.load_mnist("train", root).images.shape == (60_000, 28, 28, 1)
    else:
        # The shared folder holds only the MNIST test split: a clear error, not a crash.
        with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
            ds.load_mnist("train", root)
    with pytest.raises(ValueError, match="split"):
        ds.load_mnist("validation", data_root())


def test_fashion_mnist():
    tr = ds.load_fashion_mnist("train", data_root())
    te = ds.load_fashion_mnist("test", data_root())
    assert tr.images.shape == (60_000, 28, 28, 1) and te.images.shape == (10_000, 28, 28, 1)
    assert np.bincount(tr.labels).tolist() == [6000] * 10
    assert np.bincount(te.labels).tolist() == [1000] * 10
    assert 0.0 <= tr.images.min() and tr.images.max() <= 1.0
    assert tr.class_names[9] == "Ankle boot"


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes((0, 0, 8, arr.ndim)) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_idx_pair(folder: Path, images: np.ndarray, labels: np.ndarray, compress=True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
        data = _idx_bytes(arr)
        (folder / f"t10k-{kind}-ubyte.gz").write_bytes(gzip.compress(data) if compress else data)


def test_idx_synthetic_plain_and_gzip(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labs = np.array([0, 1, 2, 3, 9], np.uint8)
    for compress in (True, False):
        root = tmp_path / f"c{compress}"
        _write_idx_pair(root / "mnist", imgs, labs, compress)
        # Same names as the known files, different content: verify=True rejects it.
        with pytest.raises(ValueError, match="SHA-256 mismatch"):
            ds.load_mnist("test", root)
        m = ds.load_mnist("test", root, verify=False)
        assert m.images.shape == (5, 28, 28, 1)
        assert np.array_equal(m.images[..., 0], imgs.astype(np.float32) / 255)
        assert m.labels.tolist() == [0, 1, 2, 3, 9]


def test_idx_malformed(tmp_path):
    imgs = np.zeros((3, 28, 28), np.uint8)
    labs = np.zeros(3, np.uint8)
    cases = {
        "magic": (b"\x00\x00\x09\x03" + _idx_bytes(imgs)[4:], "magic number"),
        "truncated body": (_idx_bytes(imgs)[:-10], "malformed IDX"),
        "truncated header": (_idx_bytes(imgs)[:9], "truncated header"),
        "tiny": (b"\x00\x00", "only 2 bytes"),
    }
    for i, (name, (payload, message)) in enumerate(cases.items()):
        folder = tmp_path / str(i) / "mnist"
        _write_idx_pair(folder, imgs, labs)
        (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(payload))
        with pytest.raises(ValueError, match=message) as err:
            ds.load_mnist("test", folder, verify=False)
        assert "t10k-images-idx3-ubyte.gz" in str(err.value), name
    # Labels that do not match the images in number, and a broken gzip stream.
    folder = tmp_path / "n" / "mnist"
    _write_idx_pair(folder, imgs, np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="3 images but 4 labels"):
        ds.load_mnist("test", folder, verify=False)
    good = gzip.compress(_idx_bytes(labs))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="malformed gzip"):
        ds.load_mnist("test", folder, verify=False)


def test_mnist_checksum_failure(tmp_path):
    file = _copy_known("mnist/t10k-labels-idx1-ubyte.gz", tmp_path)
    _copy_known("mnist/t10k-images-idx3-ubyte.gz", tmp_path)
    _flip_byte(file, 100)
    with pytest.raises(ValueError, match="SHA-256 mismatch") as err:
        ds.load_mnist("test", tmp_path)
    assert ds.SHA256["mnist/t10k-labels-idx1-ubyte.gz"] in str(err.value)


# --------------------------------------------------------------------------- #
# Contaminated MNIST
# --------------------------------------------------------------------------- #


def _check_contamination(images, labels, out, is_out, det, fraction=0.03):
    n = images.shape[0]
    n_out = int(round(fraction * n))
    assert out.shape == (n + n_out,) + images.shape[1:] and out.dtype == np.float32
    assert is_out.dtype == np.int64 and int(is_out.sum()) == n_out
    assert np.array_equal(is_out, (det.kind > 0).astype(np.int64))
    assert np.array_equal(det.labels, labels[det.source_index])
    counts = np.bincount(det.kind, minlength=4)
    assert counts[0] == n and sorted(counts[1:].tolist()) == sorted(
        [n_out // 3 + (i < n_out % 3) for i in range(3)]
    )
    # Every original appears exactly once, unchanged.
    inl = np.flatnonzero(det.kind == 0)
    assert np.array_equal(np.sort(det.source_index[inl]), np.arange(n))
    assert np.array_equal(out[inl], images[det.source_index[inl]])
    h = images.shape[1]
    k = int(round(0.1 * h * h))
    for r in np.flatnonzero(det.kind > 0):
        src = images[det.source_index[r]]
        if det.kind[r] == 1:
            assert np.array_equal(out[r], np.swapaxes(src, 0, 1))
        elif det.kind[r] == 2:
            top, bottom = slice(0, h // 2), slice(h // 2, h)
            blank, keep = (top, bottom) if det.half[r] == 0 else (bottom, top)
            assert np.all(out[r][blank] == 0) and np.array_equal(out[r][keep], src[keep])
        else:
            changed = out[r] != src
            assert int(changed.sum()) == k - int((src[changed] == 0.5).sum())
            assert np.allclose(out[r][changed], 1.0 - src[changed])
    assert np.all(det.half[det.kind != 2] == -1) and set(det.half[det.kind == 2]) <= {0, 1}


def test_contaminated_synthetic_is_seeded_and_exact():
    rng = np.random.default_rng(0)
    # Values avoid 0.5 so every flipped pixel changes.
    images = (rng.integers(0, 255, size=(200, 28, 28, 1)) / 255.0).astype(np.float32)
    labels = rng.integers(0, 10, size=200)
    out1, y1, det1 = ds.contaminated_mnist(images, labels, seed=3, return_details=True)
    _check_contamination(images, labels, out1, y1, det1)
    out2, y2 = ds.contaminated_mnist(images, labels, seed=3)
    assert np.array_equal(out1, out2) and np.array_equal(y1, y2)
    out3, y3 = ds.contaminated_mnist(images, labels, seed=4)
    assert not np.array_equal(out1, out3)
    # n_out = round(0.1 * 200) = 20 -> groups of 7, 7, 6.
    out4, y4, det4 = ds.contaminated_mnist(images, labels, seed=0, fraction=0.1, return_details=True)
    assert np.bincount(det4.kind).tolist() == [200, 7, 7, 6]
    _check_contamination(images, labels, out4, y4, det4, fraction=0.1)


def test_contaminated_mnist_real(mnist_test):
    m = mnist_test
    out, y, det = ds.contaminated_mnist(m.images, m.labels, seed=0, return_details=True)
    assert out.shape == (10_300, 28, 28, 1) and int(y.sum()) == 300
    assert np.bincount(det.kind).tolist() == [10_000, 100, 100, 100]
    _check_contamination(m.images, m.labels, out, y, det)


def test_contaminated_validates():
    imgs = np.zeros((10, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ds.contaminated_mnist(imgs + 2, np.zeros(10), seed=0, fraction=0.5)
    with pytest.raises(ValueError, match="H == W"):
        ds.contaminated_mnist(np.zeros((10, 28, 20, 1)), np.zeros(10), seed=0)
    with pytest.raises(ValueError, match="labels"):
        ds.contaminated_mnist(imgs, np.zeros(3), seed=0)
    with pytest.raises(ValueError, match="no outliers"):
        ds.contaminated_mnist(imgs, np.zeros(10), seed=0)  # round(0.3) = 0


# --------------------------------------------------------------------------- #
# Download core (a local file:// URL only: no network; download() itself is
# never called by the tests)
# --------------------------------------------------------------------------- #


def test_fetch_verified_local_url(tmp_path):
    import hashlib

    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 1000)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    target = tmp_path / "dest" / "sub" / "file.bin"
    assert ds.fetch_verified(src.as_uri(), target, digest) == target
    assert target.read_bytes() == src.read_bytes()
    bad_target = tmp_path / "dest" / "sub" / "bad.bin"
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        ds.fetch_verified(src.as_uri(), bad_target, "0" * 64)
    assert not bad_target.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]  # no temp left

