"""Sharded training and scoring on several (fake) CPU devices, several processes, and compile counts."""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import vaegmm_jax as vj
from tests.conftest import manifold_data


def _run_two_processes(worker: str) -> None:
    """Runs ``worker`` (Python source; argv[1] is the process id) as processes 0 and 1 at once."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(worker), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]


def _free_port() -> int:
    """A TCP port nothing listens on now (parallel test workers must not share one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, env_extra: dict, timeout=300):
    env = dict(os.environ, **env_extra)
    if "XLA_FLAGS" in env_extra:  # keep the test session's flags (conftest) beside the extra ones
        env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {env_extra['XLA_FLAGS']}".strip()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_sharded_training_and_scoring_on_4_devices_equal_single_device(tmp_path):
    code = f"""
    import jax, numpy as np, optax
    import vaegmm_jax as vj
    from tests.conftest import manifold_data
    assert len(jax.devices()) == 4, jax.devices()
    X, XT, _ = manifold_data(n_in=512, n_out=16, seed=6)
    out = {{}}
    for name, devices in [("one", jax.devices()[:1]), ("four", jax.devices())]:
        det = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, seed=3, hidden=(8, 4))
        det.devices = devices
        det.fit(X, epochs=3, batch_size=128, verbose=False, optimizer=optax.adam(1e-3), w_recon=1.0)
        out[name + "_scores"] = det.score(XT, batch_size=64)
        out[name + "_mu"] = np.asarray(det.gmm_params.mu)
        out[name + "_kernel"] = np.asarray(jax.tree.leaves(det.params)[0])
    np.savez("{tmp_path}/res.npz", **out)
    """
    _run(code, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"})
    res = np.load(tmp_path / "res.npz")
    np.testing.assert_allclose(res["four_kernel"], res["one_kernel"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res["four_mu"], res["one_mu"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res["four_scores"], res["one_scores"], rtol=1e-4, atol=1e-4)


def test_initialisation_on_another_device_gives_the_same_fit_on_the_detectors_devices(tmp_path):
    # CompileOptions(init_platform=...) runs fresh initialisation on that platform's first device (the
    # host CPU beside a GPU). Stand-in here: cpu:0 initialises, the detector trains on cpu:1-2.
    code = f"""
    import jax, numpy as np, optax
    import vaegmm_jax as vj
    from vaegmm_jax.engine.config import CompileOptions, FitOptions
    from tests.conftest import manifold_data
    X, XT, _ = manifold_data(n_in=256, n_out=16, seed=6)
    devices = jax.devices()[1:3]
    out = {{}}
    for platform in (None, "cpu"):
        options = FitOptions(compile=CompileOptions(init_platform=platform))
        for epochs in (1, 3):
            det = vj.OutlierAEGMM(n_gmm=2, latent_dim=1, seed=4, hidden=(8, 4), devices=devices)
            det.fit(X, epochs=epochs, batch_size=64, verbose=False, optimizer=optax.adam(1e-3), options=options)
            placed = {{d for leaf in jax.tree.leaves(det.params) for d in leaf.devices()}}
            assert placed == set(devices), (platform, epochs, placed)
            out[f"{{platform}}_{{epochs}}_scores"] = det.score(XT)
            out[f"{{platform}}_{{epochs}}_kernel"] = np.asarray(jax.tree.leaves(det.params)[0])
    np.savez("{tmp_path}/res.npz", **out)
    """
    _run(code, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"})
    res = np.load(tmp_path / "res.npz")
    for epochs in (1, 3):
        np.testing.assert_array_equal(res[f"cpu_{epochs}_kernel"], res[f"None_{epochs}_kernel"])
        np.testing.assert_array_equal(res[f"cpu_{epochs}_scores"], res[f"None_{epochs}_scores"])
    assert not np.array_equal(res["None_1_kernel"], res["None_3_kernel"])  # training moved them


def test_initialisation_on_another_device_with_one_training_device(tmp_path):
    # no mesh (the detector's default device, as on a one-GPU machine): the state built on the
    # initialisation device must move to the default device (on the H100 the epoch program
    # refused it: "compiled for input shardings that disagree"). Stand-in: cpu:3 initialises.
    code = f"""
    import jax, numpy as np, optax
    import vaegmm_jax as vj
    from vaegmm_jax.engine.config import CompileOptions, FitOptions
    from tests.conftest import manifold_data
    X, XT, _ = manifold_data(n_in=256, n_out=16, seed=6)
    out = {{}}
    for name, device in (("default", None), ("other", jax.devices()[3])):
        class InitOn(CompileOptions):  # a stand-in for init_platform: another device of the same platform
            def init_device(self):
                return device
        det = vj.OutlierAEGMM(n_gmm=2, latent_dim=1, seed=4, hidden=(8, 4), devices=jax.devices()[:1])  # no mesh
        det.fit(X, epochs=2, batch_size=64, verbose=False, optimizer=optax.adam(1e-3),
                options=FitOptions(compile=InitOn()))
        placed = {{d for leaf in jax.tree.leaves(det.params) for d in leaf.devices()}}
        assert placed == {{jax.devices()[0]}}, (name, placed)
        out[name + "_scores"] = det.score(XT)
    np.savez("{tmp_path}/res.npz", **out)
    """
    _run(code, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"})
    res = np.load(tmp_path / "res.npz")
    np.testing.assert_array_equal(res["other_scores"], res["default_scores"])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    X, XT, _ = manifold_data(n_in=512, n_out=16, seed=7)
    det = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, seed=3, hidden=(8, 4))
    det.fit(X, epochs=1, batch_size=128, verbose=False, optimizer=optax.adam(1e-3))
    path = tmp_path_factory.mktemp("par") / "det"
    vj.save_detector(det, path)
    return det, path, XT


def test_two_process_jax_distributed_scoring_equals_single_process(saved, tmp_path):
    det, path, xt = saved
    np.save(tmp_path / "x.npy", xt)
    port = _free_port()
    worker = f"""
    import sys, jax, numpy as np
    pid = int(sys.argv[1])
    jax.distributed.initialize(coordinator_address="127.0.0.1:{port}", num_processes=2, process_id=pid)
    assert jax.process_count() == 2
    import vaegmm_jax as vj
    det = vj.load_detector("{path}")
    x = np.load("{tmp_path}/x.npy")
    half = (len(x) + 1) // 2
    lo, hi = (0, half) if pid == 0 else (half, len(x))
    np.save(f"{tmp_path}/part{{pid}}.npy", det.score(x[lo:hi], batch_size=32, row_offset=lo))
    # One process alone saves or loads (Orbax's collective default would wait for the other).
    if pid == 0:
        vj.save_detector(det, "{tmp_path}/by_process0")
        open("{tmp_path}/saved0", "w").close()
    else:
        try:
            vj.save_detector(det, "{tmp_path}/by_process1")
            raise SystemExit("process 1 saved without an error")
        except vj.CheckpointError as e:
            assert "process 1" in str(e) and "process 0" in str(e), e
        import os, time
        while not os.path.exists("{tmp_path}/saved0"):
            time.sleep(0.05)
        np.save("{tmp_path}/reloaded1.npy", vj.load_detector("{tmp_path}/by_process0").score(x, batch_size=32))
    """
    _run_two_processes(worker)
    both = np.concatenate([np.load(tmp_path / "part0.npy"), np.load(tmp_path / "part1.npy")])
    np.testing.assert_allclose(both, det.score(xt), rtol=1e-5, atol=1e-5)
    # what process 0 saved on its own is complete: it loads here and, alone, in process 1
    np.testing.assert_array_equal(vj.load_detector(tmp_path / "by_process0").score(xt), det.score(xt))
    np.testing.assert_array_equal(np.load(tmp_path / "reloaded1.npy"), det.score(xt, batch_size=32))
    assert not (tmp_path / "by_process1").exists()


# Trains on `devices` and writes what the fit fixed to `out` (.npz); shared by the two-process
# workers and the single-process references.
_FIT_AND_DUMP = """
import jax, numpy as np, optax
import vaegmm_jax as vj
X, XT = np.load("{data}/x.npy"), np.load("{data}/xt.npy")
def fit_and_dump(devices, out, **fit_kwargs):
    det = vj.OutlierAEGMM(n_gmm=2, latent_dim=2, seed=3, hidden=(8, 4))
    det.devices = devices
    det.fit(X, epochs=2, batch_size=64, verbose=False, optimizer=optax.adam(1e-3), **fit_kwargs)
    fitted = (det.params, det.opt_state, det.gmm_params)
    assert all(a.is_fully_addressable for a in jax.tree.leaves(fitted))  # ordinary arrays of this process
    leaves = {{f"p{{i}}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(det.params))}}
    np.savez(out, scores=det.score(XT, batch_size=32), phi=np.asarray(det.gmm_params.phi),
             mu=np.asarray(det.gmm_params.mu), cov=np.asarray(det.gmm_params.cov),
             total=np.asarray(det.history["total"]), **leaves)
"""


@pytest.mark.slow  # ~75 s of compilation on 2 cores (CI budget); run with --runslow
def test_two_process_jax_distributed_training_equals_single_process(tmp_path):
    X, XT, _ = manifold_data(n_in=256, n_out=16, seed=8)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "xt.npy", XT)
    setup = _FIT_AND_DUMP.format(data=tmp_path)
    # Two processes with 2 CPU devices each; both pass the same X and train on all 4 devices.
    # The workers skip the tests' persistent compilation cache: JAX uses it in process 0 only,
    # which would then wait at the first cross-process collective while process 1 compiles,
    # and Gloo waits at most 30 s for a peer.
    port = _free_port()
    worker = f"""
    import sys, jax
    pid = int(sys.argv[1])
    jax.config.update("jax_num_cpu_devices", 2)
    jax.distributed.initialize(coordinator_address="127.0.0.1:{port}", num_processes=2, process_id=pid)
    assert jax.process_count() == 2 and len(jax.devices()) == 4
    exec({setup!r})
    det = vj.OutlierAEGMM()
    det.devices = jax.devices()
    try:  # a per-process share instead of the whole X is refused (in every process)
        det.fit(X[: len(X) // 2] if pid else X, verbose=False)
        raise SystemExit("different training sets were not refused")
    except ValueError as err:
        assert "same full X in every process" in str(err), err
    fit_and_dump(jax.devices(), f"{tmp_path}/proc{{pid}}.npz", checkpoint_dir="{tmp_path}/ckpt")
    """
    _run_two_processes(worker)
    # References: one process with as many devices (the same batch sharding), and one device.
    _run(f"""
    import jax
    import tests.conftest  # the persistent compilation cache
    jax.config.update("jax_num_cpu_devices", 4)
    exec({setup!r})
    fit_and_dump(jax.devices(), "{tmp_path}/four.npz")
    """, {"JAX_PLATFORMS": "cpu"})
    here = {}
    exec(setup, here)
    here["fit_and_dump"](jax.devices()[:1], tmp_path / "one.npz")
    proc0, proc1, four, one = (np.load(tmp_path / f"{n}.npz") for n in ("proc0", "proc1", "four", "one"))
    assert sorted(proc0.files) == sorted(four.files)
    for name in proc0.files:
        np.testing.assert_allclose(proc1[name], proc0[name], rtol=1e-6, atol=1e-6, err_msg=name)
        atol = 1e-4 if name == "scores" else 1e-5  # scores reach ~1e2
        np.testing.assert_allclose(proc0[name], four[name], rtol=1e-5, atol=atol, err_msg=name)
        np.testing.assert_allclose(proc0[name], one[name], rtol=1e-4, atol=10 * atol, err_msg=name)
    # fit(checkpoint_dir=...) saved once, from process 0: complete, and loadable on one device
    det = vj.load_detector(tmp_path / "ckpt")
    np.testing.assert_allclose(det.score(XT, batch_size=32), proc0["scores"], rtol=1e-5, atol=1e-4)


def test_no_recompilation_across_chunks_and_calls(saved):
    det, _, xt = saved
    rng = np.random.default_rng(0)
    det.score(xt, batch_size=64)
    fn = det._jitted_score()
    compiled_before = fn._cache_size()
    for n in (65, 200, 333):  # several chunks each, ragged last chunk
        det.score(rng.uniform(-1, 1, size=(n, xt.shape[1])).astype(np.float32), batch_size=64)
    assert fn._cache_size() == compiled_before  # one compiled shape served every chunk


def test_memmap_and_device_array_scoring_equal_in_memory(saved, tmp_path):
    det, _, xt = saved
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=xt.shape)
    mm[:] = xt
    mm.flush()
    ref = det.score(xt, batch_size=64)
    np.testing.assert_allclose(det.score(np.load(tmp_path / "x.npy", mmap_mode="r"), batch_size=64), ref, rtol=1e-6)
    np.testing.assert_allclose(det.score(jax.device_put(xt), batch_size=64), ref, rtol=1e-6)


def test_bf16_scoring_is_close_and_opt_in(saved):
    det, _, xt = saved
    f32 = det.score(xt)
    bf16 = det.score(xt, compute_dtype="bfloat16")
    assert not np.array_equal(f32, bf16)
    assert np.corrcoef(f32, bf16)[0, 1] > 0.98
    with pytest.raises(ValueError, match="compute_dtype"):
        det.score(xt, compute_dtype="float16")
