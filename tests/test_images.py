"""Image inputs (N, H, W, C) in all three detectors, with the teaching notebook's conv nets.

Each detector is fitted once (module fixtures) on a few hundred 16x16x1 synthetic
images for 3 epochs: enough to check the path end to end, not to judge accuracy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import roc_auc_score

import vaegmm_jax as vj
from vaegmm_jax.nets import conv_decoder, conv_encoder, from_linen

H = W = 16


def blobs(n, rng):
    """Smooth Gaussian blobs in [0, 1]: the inlier images, (n, H, W, 1)."""
    yy, xx = np.mgrid[:H, :W]
    c = rng.uniform(4, 12, size=(n, 2))
    r = rng.uniform(2, 4, size=(n, 1, 1))
    img = np.exp(-((yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2) / (2 * r**2))
    return img[..., None].astype(np.float32)


_rng = np.random.default_rng(0)
X_TRAIN = blobs(256, _rng)
X_TEST = np.concatenate([blobs(64, _rng), 1.0 - blobs(16, _rng)])  # outliers: inverted images
Y_TEST = np.r_[np.zeros(64), np.ones(16)]
FIT = dict(optimizer=optax.adam(3e-3), epochs=3, batch_size=32, verbose=False)


def _conv_nets(output="sigmoid"):
    # The notebook's architecture with 4x fewer channels: these tests are about the path,
    # not the capacity, and smaller convolutions keep the CPU suite fast.
    return dict(encoder_net=conv_encoder(features=(8, 16)),
                decoder_net=conv_decoder((H, W, 1), output=output, features=(16, 8)))


@pytest.fixture(scope="module")
def vae():
    det = vj.OutlierVAE(likelihood="bernoulli", latent_dim=2, samples=3, **_conv_nets("logits"))
    det.fit(X_TRAIN, **FIT)
    return det


@pytest.fixture(scope="module")
def vaegmm():
    det = vj.OutlierVAEGMM(**_conv_nets(), n_gmm=2, latent_dim=2, samples=2)
    det.fit(X_TRAIN, cov_elbo=dict(sim=0.1), **FIT)
    return det


@pytest.fixture(scope="module")
def aegmm():
    det = vj.OutlierAEGMM(**_conv_nets(), n_gmm=2, latent_dim=2)
    det.fit(X_TRAIN, **FIT)
    return det


# -- the nets (shapes only: traced, not compiled) ----------------------------------------
@pytest.mark.parametrize("shape", [(28, 28, 1), (16, 16, 1), (12, 20, 3)])
def test_conv_net_shapes(shape):
    key, x = jax.random.PRNGKey(0), jnp.zeros((2,) + shape)
    enc = from_linen(conv_encoder())
    h = jax.eval_shape(lambda: enc.apply(enc.init(key, x), x))
    assert h.shape == (2, 16)
    dec = from_linen(conv_decoder(shape, output="logits"))
    z = jnp.zeros((2, 3))
    params = jax.eval_shape(dec.init, key, z)
    out = jax.eval_shape(lambda: dec.apply(dec.init(key, z), z))
    assert out.shape == (2,) + shape
    # the notebook's Dense(7*7*64) for 28x28 images, generalised to (H/4)(W/4)64
    assert params["Dense_0"]["kernel"].shape == (3, (shape[0] // 4) * (shape[1] // 4) * 64)
    assert params["ConvTranspose_2"]["kernel"].shape[-1] == shape[-1]


def test_vae_default_nets_for_images():
    """Images with H, W divisible by 4 get the notebook's conv nets (logits for Bernoulli),
    others a dense MLP; a learned variance doubles the decoder's output channels."""
    det = vj.OutlierVAE(likelihood="bernoulli")
    det.build_model(X_TRAIN[:2])
    enc, dec = det.model.encoder.module, det.model.decoder.module
    assert (type(enc).__name__, enc.features, enc.hidden) == ("ConvEncoder", (32, 64), 16)
    assert type(dec).__name__ == "ConvDecoder"
    assert (dec.features, dec.output, dec.image_shape) == ((64, 32), "logits", (H, W, 1))
    det = vj.OutlierVAE(score_type="recon_prob")
    det.build_model(X_TRAIN[:2])
    assert det.model.decoder.module.channels == 2 and det.model.decoder_layout == "split"
    det = vj.OutlierVAE()
    det.build_model(np.zeros((2, 10, 10, 1), np.float32))
    assert type(det.model.encoder.module).__name__ == "MLP"
    with pytest.raises(ValueError, match="logits"):
        vj.OutlierVAE(likelihood="bernoulli", **_conv_nets("sigmoid")).build_model(X_TRAIN[:2])


def test_conv_decoder_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible by 4"):
        conv_decoder((15, 16, 1))
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        conv_decoder((16, 16))
    with pytest.raises(ValueError, match="output"):
        conv_decoder((16, 16, 1), output="softmax")


# -- training and scoring ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["vae", "vaegmm", "aegmm"])
def test_image_detectors_train_and_score(name, request):
    det = request.getfixturevalue(name)
    assert det.input_shape == (H, W, 1) and det.meta["data_type"] == "image"
    assert all(np.isfinite(v).all() for v in det.history.values())
    s = det.score(X_TEST)
    assert s.shape == (len(X_TEST),) and np.all(np.isfinite(s))
    # inverted images are far from the blobs after a few steps
    assert roc_auc_score(Y_TEST, s) > 0.8
    det.infer_threshold(X_TRAIN, threshold_perc=95, batch_size=128)  # chunks shaped like X_TEST's
    out = det.predict(X_TEST)
    assert out["data"]["is_outlier"].shape == (len(X_TEST),)


def test_vae_image_feature_scores(vae):
    assert vae.model.decoder_layout == "mean" and vae.model.likelihood == "bernoulli"
    fs = vae.feature_score(X_TEST)
    assert fs.shape == X_TEST.shape and np.all(fs >= 0)
    np.testing.assert_allclose(vae.score(X_TEST), fs.reshape(len(fs), -1).mean(axis=1), rtol=1e-5)
    # its own threshold: under pytest-xdist the test that also sets one may run in another worker
    vae.infer_threshold(X_TRAIN, threshold_perc=95, batch_size=128)
    assert vae.predict(X_TEST)["data"]["feature_score"].shape == X_TEST.shape


@pytest.mark.parametrize("name", ["vae", "vaegmm", "aegmm"])
def test_wrong_image_shape_raises(name, request):
    det = request.getfixturevalue(name)
    with pytest.raises(ValueError, match=r"rows of shape \(8, 8, 1\)"):
        det.score(X_TEST[:, :8, :8])
    with pytest.raises(ValueError, match="rows of shape"):
        det.score(np.repeat(X_TEST, 3, axis=-1))
    with pytest.raises(ValueError, match="rows of shape"):
        det.score(X_TEST.reshape(len(X_TEST), -1))


def test_bernoulli_needs_pixels_in_unit_interval(vae):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vj.OutlierVAE(likelihood="bernoulli").fit(X_TRAIN * 255.0, verbose=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vae.score(X_TEST - 0.5)


def test_image_save_load(vae, vaegmm, tmp_path):
    vj.save_detector(vae, tmp_path / "vae")
    loaded = vj.load_detector(tmp_path / "vae", **_conv_nets("logits"))
    np.testing.assert_array_equal(loaded.score(X_TEST), vae.score(X_TEST))
    vj.save_detector(vaegmm, tmp_path / "vaegmm")
    with pytest.raises(ValueError, match="custom networks"):
        vj.load_detector(tmp_path / "vaegmm")  # the conv nets' code is not stored
    loaded = vj.load_detector(tmp_path / "vaegmm", **_conv_nets())
    np.testing.assert_array_equal(loaded.score(X_TEST), vaegmm.score(X_TEST))
