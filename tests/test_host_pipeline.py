"""Scoring rows that live on the host: the NaN/inf check runs on the device inside the score
program, every kind of source gives the same scores, and the program compiles once."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import vaegmm_jax as vj
from vaegmm_jax.engine import streaming
from vaegmm_jax.engine.streaming import NonFiniteInputError, map_chunks
from tests.conftest import manifold_split

CHUNK = 64


@pytest.fixture(scope="module")
def fitted():
    x_train, x_test, _ = manifold_split(n_train=256, n_test=300, n_out=20, seed=9)
    det = vj.OutlierVAEGMM(samples=2, seed=3)
    det.fit(x_train, epochs=2, batch_size=64, verbose=False)
    return det, x_test


def _sources(x, tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, x)
    return {
        "numpy": x,
        "memmap": np.load(path, mmap_mode="r"),
        "blocks": (x[i:i + 37] for i in range(0, len(x), 37)),  # blocks that do not align with chunks
        "device": jnp.asarray(x),
    }


def test_every_source_kind_gives_bit_identical_scores(fitted, tmp_path):
    det, x = fitted
    reference = det.score(x, batch_size=CHUNK)
    assert reference.shape == (len(x),) and np.isfinite(reference).all()
    for kind, source in _sources(x, tmp_path).items():
        np.testing.assert_array_equal(det.score(source, batch_size=CHUNK), reference, err_msg=kind)


@pytest.mark.parametrize("kind", ["numpy", "memmap", "blocks", "device"])
@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (-np.inf, "inf")])
def test_a_bad_row_in_the_third_chunk_is_named_by_its_global_index(fitted, tmp_path, kind, bad, word):
    det, x = fitted
    x = x.copy()
    row = 2 * CHUNK + 5
    x[row, 3] = bad
    x[row + 40, 0] = np.nan  # a later bad row is not the one named
    source = _sources(x, tmp_path)[kind]
    with pytest.raises(NonFiniteInputError, match=f"{word} values \\(first bad row {1000 + row}\\)"):
        det.score(source, batch_size=CHUNK, row_offset=1000)
    assert issubclass(NonFiniteInputError, ValueError)  # what callers catch for bad input


def test_the_score_program_compiles_once_across_chunks(fitted):
    det, x = fitted
    det.clear_compiled()
    det.score(x[:CHUNK * 4], batch_size=CHUNK)
    det.score(x[:CHUNK * 4 - 7], batch_size=CHUNK)  # a ragged last chunk is padded: the same shape
    programs = list(det._score_jit.values())
    assert len(programs) == 1
    assert programs[0]._cache_size() == 1


def test_no_score_is_returned_and_later_chunks_stop_after_a_bad_one():
    calls = []

    @jax.jit
    def fn(x, offset):
        return jnp.sum(x, axis=1), jnp.isnan(x[:, 0])

    def counted(x, offset):
        calls.append(int(offset))
        return fn(x, offset)

    x = np.zeros((64 * 40, 3), np.float32)
    x[64 * 2, 0] = np.nan
    with pytest.raises(NonFiniteInputError, match="first bad row 128"):
        map_chunks(counted, x, 64, checked=True)
    # the error surfaces within the pipeline's window, not after all 40 chunks
    assert len(calls) <= 3 + 2 * streaming.PIPELINE_DEPTH


def test_a_bad_block_of_an_iterable_stops_the_pipeline_with_its_error(fitted):
    det, x = fitted

    def blocks():
        yield x[:100]
        yield x[:10, :3]  # wrong row shape

    with pytest.raises(ValueError, match="X block has rows of shape"):
        det.score(blocks(), batch_size=CHUNK)


@jax.jit
def _row_sums_checked(x, offset):
    from vaegmm_jax.engine.validation import nonfinite_rows

    return jnp.sum(x, axis=1) + offset, nonfinite_rows(x)


@pytest.mark.parametrize("threads", [0, 1, 4])
def test_the_threaded_transfer_pipeline_gives_the_inline_results_and_errors(tmp_path, threads):
    # accelerators use the threaded pipeline; on this CPU it is forced, to check it here
    import threading

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 5)).astype(np.float32)
    expected = x.sum(axis=1, dtype=np.float32) + (np.arange(1000) // 64 * 64)
    before = threading.active_count()
    for source in (x, np.load(_save(tmp_path, x), mmap_mode="r"), (x[i:i + 77] for i in range(0, 1000, 77))):
        out = map_chunks(_row_sums_checked, source, 64, checked=True, transfer_threads=threads)
        np.testing.assert_allclose(out, expected, rtol=1e-6)
    bad = x.copy()
    bad[700, 2] = np.inf
    with pytest.raises(NonFiniteInputError, match="inf values \\(first bad row 700\\)"):
        map_chunks(_row_sums_checked, bad, 64, checked=True, transfer_threads=threads)

    def failing_blocks():
        yield x[:300]
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        map_chunks(_row_sums_checked, failing_blocks(), 64, checked=True, transfer_threads=threads)
    assert threading.active_count() == before  # no thread outlives its call


def _save(tmp_path, x):
    path = tmp_path / "x.npy"
    np.save(path, x)
    return path
