"""Which errors the command line reports as bad input (one line, exit code 2) and which as
internal errors (a traceback, exit code 1); the one-line formatter; and preprocessing files
written before the scaler reused ``core.scaling``.

In process (``vaegmm_jax.cli.main``), so that an internal function can be made to fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from vaegmm_jax.cli import fit as cli_fit, info as cli_info, main  # noqa: E402
from vaegmm_jax.cli.scoring import score_batch  # noqa: E402
from vaegmm_jax.engine.scoring import default_score_batch  # noqa: E402
from vaegmm_jax.core.scaling import fit_scaler  # noqa: E402
from vaegmm_jax.io import checkpoint  # noqa: E402
from vaegmm_jax.io.messages import one_line  # noqa: E402
from vaegmm_jax.io.preprocessing import Scaler, load_preprocessing  # noqa: E402

N_ROWS, N_FEATURES = 48, 4


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_errors")
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(N_ROWS, N_FEATURES)).astype(np.float32),
                         columns=[f"f{i}" for i in range(N_FEATURES)])
    frame.insert(0, "rid", [f"r{i}" for i in range(N_ROWS)])
    frame.to_csv(root / "d.csv", index=False)
    return root


def fit_args(data: Path, out: Path, *extra) -> list[str]:
    return ["fit", str(data / "d.csv"), "--detector", "aegmm", "--id-column", "rid", "--out", str(out),
            "--epochs", "1", "--batch-size", "16", "--quiet", "--no-plots", *extra]


@pytest.fixture(scope="module")
def model(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "model"
    assert main(fit_args(data, out)) == 0
    return out


def run_main(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def assert_bad_input(result: tuple[int, str], *fragments: str) -> None:
    rc, err = result
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    for frag in fragments:
        assert frag.lower() in lines[0].lower(), lines[0]


def assert_internal(result: tuple[int, str], message: str) -> None:
    rc, err = result
    assert rc == 1, (rc, err)
    assert "Traceback" in err and "internal error" in err and message in err, err
    assert ": error:" not in err  # not the bad-input line


# --------------------------------------------------------------------------- #
# An internal bug is never reported as bad input
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("error", [ValueError("an internal bug"), KeyError("an internal bug")])
def test_an_internal_error_while_building_the_detector_is_not_bad_input(data, tmp_path, capsys, monkeypatch, error):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(cli_fit, "build_detector", broken)
    assert_internal(run_main(capsys, *fit_args(data, tmp_path / "m")), "an internal bug")
    assert not (tmp_path / "m").exists()


def test_an_internal_error_while_scoring_a_stream_is_not_bad_input(data, model, tmp_path, capsys, monkeypatch):
    """A ValueError raised between the blocks of the file and the detector (here: the scaling)
    is a bug, although the stream's own reading errors are the file's."""
    def broken(self, X):
        raise ValueError("the scaling broke")

    monkeypatch.setattr(Scaler, "transform", broken)
    assert_internal(run_main(capsys, "score", data / "d.csv", "--model", model, "--out", tmp_path / "s.csv"),
                    "the scaling broke")
    assert not (tmp_path / "s.csv").exists()


def test_an_internal_key_error_in_info_is_not_bad_input(model, capsys, monkeypatch):
    def broken(history):
        raise KeyError("total")

    monkeypatch.setattr(cli_info, "history_summary", broken)
    assert_internal(run_main(capsys, "info", model), "total")


# --------------------------------------------------------------------------- #
# Bad input is still one line, exit code 2
# --------------------------------------------------------------------------- #


def test_a_bad_cell_in_a_later_block_is_bad_input(data, model, tmp_path, capsys):
    frame = pd.read_csv(data / "d.csv")
    frame["f2"] = frame["f2"].astype(object)
    frame.loc[41, "f2"] = "oops"
    frame.to_csv(tmp_path / "late.csv", index=False)
    assert_bad_input(run_main(capsys, "score", tmp_path / "late.csv", "--model", model, "--out", tmp_path / "s.csv",
                              "--chunk-rows", 8), "'f2'", "row 42")
    assert not (tmp_path / "s.csv").exists()


def test_a_preprocessing_file_that_does_not_fit_the_model_is_bad_input(data, model, tmp_path, capsys):
    import shutil

    for name, edit, fragment in (
        ("short", lambda d: dict(d, scaler={"kind": "minmax", "min": [0.0], "range": [1.0]}), "1 features"),
        ("kind", lambda d: dict(d, scaler={"kind": "log"}), "'log'"),
        ("format", lambda d: dict(d, format_version=9), "format"),
    ):
        copy = tmp_path / name
        shutil.copytree(model, copy)
        prep_file = checkpoint.resolve_checkpoint(copy) / "preprocessing.json"
        prep_file.write_text(json.dumps(edit(json.loads(prep_file.read_text()))))
        assert_bad_input(run_main(capsys, "score", data / "d.csv", "--model", copy, "--out", tmp_path / "s.csv"),
                         "preprocessing.json", fragment)
    (prep_file).write_bytes(b"\xff{")
    assert_bad_input(run_main(capsys, "score", data / "d.csv", "--model", copy, "--out", tmp_path / "s.csv"),
                     "preprocessing.json", "corrupt")


@pytest.mark.parametrize("config, fragments", [
    ({"fit": {"no_such_setting": 1}}, ("no_such_setting",)),
    ({"fit": {"epochs": 0}}, ("'epochs'", "positive integer")),
    ({"fit": {"batch_size": "big"}}, ("'batch_size'",)),
    ({"fit": {"w_energy": "high"}}, ("'w_energy'", "finite number")),
    ({"fit": {"learning_rate": -1}}, ("learning_rate", "positive")),
    ({"detector": {"activation": "no_such_activation"}}, ("bad detector setting", "no_such_activation")),
    ({"detector": {"no_such_argument": 1}}, ("bad detector setting", "no_such_argument")),
    ({"scaling": "log"}, ("scaling", "'log'")),
    ({"preset": "no_such_preset"}, ("preset", "no_such_preset")),
])
def test_bad_configurations_are_refused_before_training(data, tmp_path, capsys, no_training, config, fragments):
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    args = fit_args(data, tmp_path / "m", "--config", tmp_path / "cfg.json")
    for flag in ("--epochs", "--batch-size"):  # the flags would win over the configuration
        del args[args.index(flag):args.index(flag) + 2]
    assert_bad_input(run_main(capsys, *args), *fragments)
    assert not (tmp_path / "m").exists()


def test_vaegmm_fit_settings_are_checked_before_training(data, tmp_path, capsys, no_training):
    for cov, fragment in (("x", "cov_elbo"), ({"sim": 0}, "sim"), ({"sim": 1, "cov_diag": None}, "cov_elbo")):
        (tmp_path / "cfg.json").write_text(json.dumps({"fit": {"cov_elbo": cov}}))
        args = fit_args(data, tmp_path / "m", "--config", tmp_path / "cfg.json")
        args[args.index("aegmm")] = "vaegmm"
        assert_bad_input(run_main(capsys, *args), fragment)


def test_unusable_numbers_and_files_are_refused_before_training(data, tmp_path, capsys, no_training):
    assert_bad_input(run_main(capsys, *fit_args(data, tmp_path / "m"), "--epochs", "0"), "argument --epochs")
    assert_bad_input(run_main(capsys, *fit_args(data, tmp_path / "m"), "--learning-rate", "nan"),
                     "argument --learning-rate")
    (tmp_path / "cfg.json").write_bytes(b"\xff\xfe{")
    assert_bad_input(run_main(capsys, *fit_args(data, tmp_path / "m"), "--config", tmp_path / "cfg.json"),
                     "--config", "not valid JSON")
    assert_bad_input(run_main(capsys, *fit_args(data, tmp_path / "m"), "--columns", "f0,,f1"), "column list")
    assert_bad_input(run_main(capsys, "demo", "--out", tmp_path / "demo", "--train-fraction", "1.5"),
                     "argument --train-fraction")
    assert_bad_input(run_main(capsys, "demo", "--out", tmp_path / "demo", "--train-fraction", "0.001"),
                     "--train-fraction", "at least 2")
    assert not (tmp_path / "m").exists()


def test_the_command_line_imports_scikit_learn_and_matplotlib_only_for_the_commands_using_them():
    import subprocess
    import sys

    code = ("import sys\n"
            "from vaegmm_jax.cli import entry\n"
            "entry.build_parser().format_help()\n"
            "print(sorted(m for m in ('sklearn', 'matplotlib') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------- #
# The one-line formatter and the scoring batch
# --------------------------------------------------------------------------- #


def test_one_line():
    assert one_line(KeyError("a 'name' not found")) == "a 'name' not found"  # no repr quotes
    assert one_line(ValueError("two\n  lines\tand tabs ")) == "two lines and tabs"
    assert one_line(ValueError()) == "ValueError"
    assert one_line(KeyError("x", "y")) == "('x', 'y')"
    assert one_line(ValueError("x" * 400), limit=300) == "x" * 297 + "..."
    assert one_line(ValueError("x" * 400)) == "x" * 400


def test_score_batch_is_the_next_power_of_two_within_the_detectors_default_chunk():
    cap = default_score_batch()  # 2048 rows on this CPU: the CLI scores like the library
    assert cap == 2048
    assert [score_batch(n) for n in (0, 1, 8, 9, 100, 2048, 2049, 10 ** 7)] == [8, 8, 8, 16, 128, 2048, cap, cap]


# --------------------------------------------------------------------------- #
# preprocessing.json files written before the scaler reused core.scaling
# --------------------------------------------------------------------------- #

X_OLD = np.array([[0.1, 5.0, -3.0, 7.0], [2.3, 5.0, 1.7, 8.5], [-1.7, 5.0, 0.25, 9.0], [0.9, 5.0, 2.2, 7.25]],
                 np.float32)
#: written by the Scaler of commit 8156587 (statistics and transform in float64) on X_OLD,
#: with what its transform gave (float32 bit patterns)
OLD_FILES = {
    "minmax": (
        {"format_version": 1, "feature_names": ["a", "b", "c", "d"],
         "scaler": {"kind": "minmax", "min": [-1.7000000476837158, 5.0, -3.0, 7.0],
                    "range": [4.0, 1.0, 5.200000047683716, 2.0]},
         "id_column": "id", "label_column": None, "input_format": "csv", "row_shape": [4]},
        [[1055286887, 0, 0, 0], [1065353216, 0, 1063740022, 1061158912], [0, 0, 1059061760, 1065353216],
         [1059481190, 0, 1065353216, 1040187392]],
    ),
    "standard": (
        {"format_version": 1, "feature_names": ["a", "b", "c", "d"],
         "scaler": {"kind": "standard", "mean": [0.39999997057020664, 5.0, 0.2875000238418579, 7.9375],
                    "std": [1.445683228990497, 1.0, 2.028661832162812, 0.8361930100162283]},
         "id_column": "id", "label_column": None, "input_format": "csv", "row_shape": [4]},
        [[3193208482, 0, 3218042217, 3213853166], [1067989399, 0, 1060257502, 1059861892],
         [3216633551, 0, 3164040722, 1067623506], [1051792435, 0, 1064392547, 3209853516]],
    ),
}


@pytest.mark.parametrize("kind", sorted(OLD_FILES))
def test_a_preprocessing_file_of_the_earlier_scaler_transforms_to_the_same_values(tmp_path, kind):
    content, bits = OLD_FILES[kind]
    (tmp_path / "preprocessing.json").write_text(json.dumps(content, indent=2))
    prep = load_preprocessing(tmp_path)
    assert prep.scaler.kind == kind and prep.id_column == "id" and prep.feature_names == ["a", "b", "c", "d"]
    out = prep.scaler.transform(X_OLD)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.view(np.uint32), np.array(bits, np.uint32))
    assert prep.to_dict() == content  # and it writes the same file back


def test_a_scaled_value_beyond_float32_saturates():
    scaler = Scaler("minmax", np.array([0.0, 0.0]), np.array([1e-40, 1.0]))
    out = scaler.transform(np.array([[1.0, 2.0], [-1.0, 3.0]], np.float32))
    np.testing.assert_array_equal(out, np.array([[np.finfo(np.float32).max, 2.0],
                                                 [-np.finfo(np.float32).max, 3.0]], np.float32))


@pytest.mark.parametrize("kind", ["minmax", "standard"])
def test_the_scaler_statistics_are_core_scalings(kind):
    fitted, core = Scaler.fit(X_OLD, kind), fit_scaler(X_OLD, kind)
    np.testing.assert_array_equal(fitted.offset, np.asarray(core.shift, np.float64))
    np.testing.assert_array_equal(fitted.scale, np.asarray(core.scale, np.float64))
    assert fitted.scale[1] == 1.0  # the constant column: only shifted
    # a fresh fit agrees with the earlier scaler up to its float32-stored statistics
    content, bits = OLD_FILES[kind]
    np.testing.assert_allclose(fitted.transform(X_OLD), np.array(bits, np.uint32).view(np.float32), rtol=1e-6,
                               atol=1e-6)
