"""Screens candidate settings: trains one detector per set and seed (novelty split of suite.py)
and reads several scores from the same fit: the detector's energy, the posterior-mean
reconstruction MSE, their robust-standardised sum, and the first reconstruction feature alone.
Standardises the rows itself (the detectors had no scaler yet when it was written).

    VAEGMM_DATA=../shared/data python benchmarks/screen_scores.py '{"cls":"dagmm","feat":"rmse","init":{"latent_dim":2}}' thyroid,vowels 2

The JSON: cls (vaegmm|dagmm), init/fit keyword arguments (fit: lr, batch_size), steps (optimizer
steps, default 2000), feat (rmse|logmse|rmse_cos: a reconstruction feature function). The README's
and RESULTS' screen figures (before the whole-suite runs) come from this script, run with the
library's defaults of that time (K 4, DAGMM latent 1, the paper's reconstruction features): give
those in "init" to repeat a screen, e.g. '{"cls":"dagmm","init":{"n_gmm":4,"latent_dim":1,"recon_features":"dagmm"}}'.
"""
import sys, json, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np, jax, jax.numpy as jnp, optax
jax.config.update("jax_compilation_cache_dir", str(Path.home() / ".cache" / "vaegmm_jax_suite_xla"))
from suite import load_set, split
from sklearn.metrics import roc_auc_score
from vaegmm_jax import OutlierVAEGMM, OutlierAEGMM
from vaegmm_jax.detectors.presets import PAPER_SCORING
from vaegmm_jax.core import gmm as G

def _mse(x, r): return jnp.mean((x - r) ** 2, axis=-1)
FEATS = {
  "rmse": lambda x, r: jnp.sqrt(_mse(x, r) + 1e-12)[:, None],
  "logmse": lambda x, r: jnp.log(_mse(x, r) + 1e-6)[:, None],
  "rmse_cos": lambda x, r: jnp.stack([jnp.sqrt(_mse(x, r) + 1e-12), jnp.sum(x*r,-1)/jnp.sqrt((jnp.sum(x*x,-1)+1e-12)*(jnp.sum(r*r,-1)+1e-12))], -1),
}
def run(name, seed, cls, init, fit, steps=2000, prescale=True):
    X, y = load_set(name); xtr, xte, yte = split(X, y, "novelty", seed)
    if prescale:
        mu, sd = xtr.mean(0), xtr.std(0); sd = np.where(sd > 0, sd, 1)
        xtr, xte = (xtr-mu)/sd, (xte-mu)/sd
    fit = dict(fit); lr = fit.pop("lr", 1e-3); bs = min(fit.pop("batch_size", 128), len(xtr))
    ep = max(1, round(steps / -(-len(xtr)//bs)))
    # the rows are scaled here; the score read is the energy, as when the screens ran
    det = cls(seed=seed, **{**PAPER_SCORING, **init}); t=time.time()
    det.fit(xtr, optimizer=optax.adam(lr), epochs=ep, batch_size=bs, verbose=False, **fit)
    e = det.score(xte)
    m = det.model; p = det.params
    out = m.forward(p, jnp.asarray(xte), jax.random.PRNGKey(0))
    mean, _ = m.encode(p, jnp.asarray(xte))
    xr = m.decode(p, mean)
    mse = np.asarray(((xr - xte)**2).mean(1))
    # mse on train for standardising
    mean_tr, _ = m.encode(p, jnp.asarray(xtr)); mse_tr = np.asarray(((m.decode(p, mean_tr) - xtr)**2).mean(1))
    e_tr = det.score(xtr)
    zs = lambda a, ref: (a - np.median(ref)) / (np.percentile(ref, 75) - np.percentile(ref, 25) + 1e-12)
    comb = zs(e, e_tr) + zs(np.log(mse+1e-12), np.log(mse_tr+1e-12))
    r = dict(energy=roc_auc_score(yte, e), mse=roc_auc_score(yte, mse), comb=roc_auc_score(yte, comb),
             relE=roc_auc_score(yte, np.asarray(out.z[:, det.latent_dim])), t=time.time()-t, loss=det.history['total'][-1])
    return r

if __name__ == "__main__":
    cfg = json.loads(sys.argv[1]); sets = sys.argv[2].split(","); seeds = range(int(sys.argv[3]) if len(sys.argv)>3 else 2)
    cls = {"vaegmm": OutlierVAEGMM, "dagmm": OutlierAEGMM}[cfg.pop("cls")]
    steps = cfg.pop("steps", 2000); pre = cfg.pop("prescale", True)
    feat = cfg.pop("feat", None)
    if feat:
        cfg.setdefault("init", {})["recon_features"] = FEATS[feat]
    allr = {}
    for s in sets:
        rs = [run(s, seed, cls, cfg.get("init", {}), cfg.get("fit", {}), steps, pre) for seed in seeds]
        agg = {k: np.mean([r[k] for r in rs]) for k in rs[0]}
        allr[s] = agg
        print(s, " ".join(f"{k}={v:.3f}" for k, v in agg.items()), flush=True)
    print("MEAN", " ".join(f"{k}={np.mean([a[k] for a in allr.values()]):.3f}" for k in ["energy","mse","comb","relE"]))
