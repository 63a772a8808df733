"""PyTorch VAEGMM: the competitor side of the speed benchmark.

A faithful, idiomatic PyTorch port of VAEGMM (alibi-detect's OutlierVAEGMM, DAGMM energy)
in the KDD shape: encoder 120-60-30-10 tanh -> mean/logvar heads (latent 2) -> reparameterised
sample -> decoder 2-10-30-60-120 (tanh hidden, linear output); z = [latent, rel_euclid, cosine]
(DAGMM paper features); estimation net 4-10 tanh-4 softmax. GMM parameters are estimated from
each minibatch with gradients flowing through them; energy via Cholesky (jitter 1e-6) in the
fast form (precomputed L^-1 and a matmul, REFERENCE 4) with log-sum-exp.

Loss = w_recon * NLL(x; x', sim^2 I) + w_energy * mean E + w_cov_diag * sum 1/diag(Sigma)
       + beta * KL (alibi convention: mean over batch AND latent dims).

Install (benchmark-only dependency; a CPU wheel, not the multi-GB CUDA build):
    pip install -r benchmarks/requirements-torch.txt      # torch==2.13.0
Run:
    python benchmarks/torch_vaegmm.py --rows 100000 --epochs 3 --score-rows 200000 \
        --device cpu --json out/torch_cpu.json [--compile]

``score_rows_per_s`` scores a tensor already on the device (device-resident);
``score_rows_per_s_host_pageable`` / ``_host_pinned`` score NumPy rows that start on the host
(compare with vaegmm_jax's host-fed ``score``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

LOG_2PI = math.log(2.0 * math.pi)
JITTER = 1e-6


def mlp(sizes: list[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class VAEGMM(nn.Module):
    def __init__(self, n_features: int = 120, enc_hidden=(60, 30, 10), latent_dim: int = 2,
                 dec_hidden=(10, 30, 60), gmm_hidden: int = 10, n_gmm: int = 4):
        super().__init__()
        self.latent_dim = latent_dim
        self.n_gmm = n_gmm
        self.encoder = mlp([n_features, *enc_hidden], last_activation=True)
        self.fc_mean = nn.Linear(enc_hidden[-1], latent_dim)
        self.fc_logvar = nn.Linear(enc_hidden[-1], latent_dim)
        self.decoder = mlp([latent_dim, *dec_hidden, n_features], last_activation=False)
        d = latent_dim + 2
        self.gmm_net = nn.Sequential(nn.Linear(d, gmm_hidden), nn.Tanh(),
                                     nn.Linear(gmm_hidden, n_gmm), nn.Softmax(dim=-1))

    def encode(self, x):
        h = self.encoder(x)
        return self.fc_mean(h), self.fc_logvar(h)

    @staticmethod
    def recon_features(x, x_rec, eps: float = 1e-12):
        """DAGMM features [relative Euclidean distance, cosine similarity] (paper form)."""
        xn = torch.linalg.vector_norm(x, dim=-1)
        rn = torch.linalg.vector_norm(x_rec, dim=-1)
        rel = torch.linalg.vector_norm(x - x_rec, dim=-1) / (xn + eps)
        cos = (x * x_rec).sum(-1) / (xn * rn + eps)
        return torch.stack([rel, cos], dim=-1)

    def head(self, x, z_lat):
        """Decoder + recon features + estimation net for latent samples z_lat (x broadcasts)."""
        x_rec = self.decoder(z_lat)
        z = torch.cat([z_lat, self.recon_features(x, x_rec)], dim=-1)
        gamma = self.gmm_net(z)
        return x_rec, z, gamma

    def forward(self, x):
        mean, logvar = self.encode(x)
        z_lat = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        x_rec, z, gamma = self.head(x, z_lat)
        return x_rec, z, gamma, mean, logvar


# ---------------------------------------------------------------- GMM maths
def gmm_params(z, gamma):
    """phi, mu, Sigma from soft memberships (differentiable; centred second moments)."""
    n = z.shape[0]
    sum_gamma = gamma.sum(0)  # (K,)
    phi = sum_gamma / n
    mu = (gamma.T @ z) / sum_gamma[:, None]  # (K, D)
    zc = z[:, None, :] - mu[None]  # (N, K, D)
    cov = torch.einsum("nk,nki,nkj->kij", gamma, zc, zc) / sum_gamma[:, None, None]
    return phi, mu, cov


def gmm_factor(phi, cov, jitter: float = JITTER):
    """Cholesky of Sigma + jitter I; returns log phi, L^-1 (K, D, D) and log|Sigma|."""
    d = cov.shape[-1]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    chol = torch.linalg.cholesky(cov + jitter * eye)
    l_inv = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)  # tiny: K x D x D
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    log_phi = torch.log(phi.clamp_min(1e-30))
    return log_phi, chol, l_inv, log_det


def gmm_energy(z, mu, log_phi, chol, l_inv, log_det, fast: bool = True):
    """E(z) = -logsumexp_k [log phi_k - 0.5 (||L_k^-1 (z - mu_k)||^2 + D log 2pi + log|Sigma_k|)]."""
    d = z.shape[-1]
    zc = z[..., None, :] - mu  # (..., K, D)
    if fast:
        v = torch.einsum("kij,...kj->...ki", l_inv, zc)
    else:  # the slow form: triangular solve with an N-wide right-hand side
        rhs = zc.reshape(-1, *mu.shape).permute(1, 2, 0)  # (K, D, N)
        v = torch.linalg.solve_triangular(chol, rhs, upper=False).permute(2, 0, 1)
        v = v.reshape(zc.shape)
    maha = (v * v).sum(-1)  # (..., K)
    logits = log_phi - 0.5 * (maha + d * LOG_2PI + log_det)
    return -torch.logsumexp(logits, dim=-1)


def vaegmm_loss(model, x, cfg, fast=True):
    x_rec, z, gamma, mean, logvar = model(x)
    n_feat = x.shape[-1]
    s = cfg["sim"]
    # isotropic Gaussian NLL with standard deviation sim (alibi's "elbo" with sim=...)
    nll = (0.5 * ((x - x_rec) ** 2).sum(-1) / (s * s) + n_feat * (math.log(s) + 0.5 * LOG_2PI)).mean()
    phi, mu, cov = gmm_params(z, gamma)
    log_phi, chol, l_inv, log_det = gmm_factor(phi, cov)
    energy = gmm_energy(z, mu, log_phi, chol, l_inv, log_det, fast=fast).mean()
    penalty = (1.0 / torch.diagonal(cov, dim1=-2, dim2=-1)).sum()
    kl = -0.5 * torch.mean(1.0 + logvar - mean.pow(2) - logvar.exp())
    loss = (cfg["w_recon"] * nll + cfg["w_energy"] * energy + cfg["w_cov_diag"] * penalty
            + cfg["beta"] * kl)
    return loss, torch.stack([nll, energy, penalty, kl])


# ---------------------------------------------------------------- runner
class Runner:
    def __init__(self, model, cfg, device, compile_: bool, fast: bool, score_mode: str):
        self.model = model
        self.cfg = cfg
        self.device = device
        self.fast = fast
        self.score_mode = score_mode
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
        self.gmm = None

        def step(xb):
            self.opt.zero_grad(set_to_none=True)
            loss, parts = vaegmm_loss(self.model, xb, self.cfg, fast=self.fast)
            loss.backward()
            self.opt.step()
            return loss.detach(), parts.detach()

        self._step = step
        self._score_chunk = self._score_chunk_eager
        if compile_:
            # Compile Inductor kernels in this process: with the default worker pool the
            # compilation runs on in the background and slows the "steady" epochs on 2 cores.
            import torch._inductor.config as inductor_config
            inductor_config.compile_threads = 1
            # Compile the forward+loss (and through AOTAutograd its backward) and the scoring
            # function. The optimizer step stays eager (idiomatic; compiling it too brings little
            # for ~12k parameters).
            loss_c = torch.compile(vaegmm_loss, dynamic=False)

            def step_c(xb):
                self.opt.zero_grad(set_to_none=True)
                loss, parts = loss_c(self.model, xb, self.cfg, fast=self.fast)
                loss.backward()
                self.opt.step()
                return loss.detach(), parts.detach()

            self._step = step_c
            self._score_chunk = torch.compile(self._score_chunk_eager, dynamic=False)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def train_epoch(self, x, batch_size):
        self.model.train()
        n = x.shape[0]
        perm = torch.randperm(n, device=x.device)
        tot = torch.zeros((), device=x.device)
        parts_tot = torch.zeros(4, device=x.device)
        nb = 0
        for i in range(0, n, batch_size):  # keeps the ragged last batch, like alibi
            xb = x[perm[i:i + batch_size]]
            loss, parts = self._step(xb)
            tot += loss
            parts_tot += parts
            nb += 1
        return (tot / nb).item(), (parts_tot / nb).tolist()

    @torch.no_grad()
    def fit_gmm(self, x, chunk):
        """phi/mu/Sigma fixed from the whole training set: one latent sample per row, in chunks.

        z and gamma (N x (D+K), small) are gathered, then the statistics are computed in
        float64 with centred second moments (no E[zz^T] - mu mu^T cancellation).
        """
        self.model.eval()
        zs, gs = [], []
        for i in range(0, x.shape[0], chunk):
            _, z, gamma, _, _ = self.model(x[i:i + chunk])
            zs.append(z)
            gs.append(gamma)
        z = torch.cat(zs).double()
        gamma = torch.cat(gs).double()
        phi, mu, cov = gmm_params(z, gamma)
        log_phi, chol, l_inv, log_det = gmm_factor(phi, cov)
        if not all(torch.isfinite(t).all() for t in (log_phi, l_inv, log_det)):
            raise FloatingPointError("non-finite GMM parameters after fit")
        f32 = torch.float32
        self.gmm = tuple(t.to(f32) for t in (mu, log_phi, chol, l_inv, log_det))

    def _score_chunk_eager(self, xc, gmm):
        mu, log_phi, chol, l_inv, log_det = gmm
        L = self.cfg["samples"]
        if self.score_mode == "repeat":  # alibi's way: each row repeated L times through everything
            xr = xc.repeat_interleave(L, dim=0)
            mean, logvar = self.model.encode(xr)
            z_lat = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            _, z, _ = self.model.head(xr, z_lat)
            e = gmm_energy(z, mu, log_phi, chol, l_inv, log_det, fast=self.fast)
            return e.view(-1, L).mean(1)
        # shared encoder: the encoder is deterministic, so encode once and draw L samples
        mean, logvar = self.model.encode(xc)
        std = torch.exp(0.5 * logvar)
        eps = torch.randn((L, *mean.shape), device=mean.device, dtype=mean.dtype)
        z_lat = mean + std * eps  # (L, n, d)
        _, z, _ = self.model.head(xc, z_lat)  # x broadcasts over L
        e = gmm_energy(z, mu, log_phi, chol, l_inv, log_det, fast=self.fast)  # (L, n)
        return e.mean(0)

    @torch.no_grad()
    def score(self, x, chunk):
        self.model.eval()
        out = torch.empty(x.shape[0], device=x.device)
        for i in range(0, x.shape[0], chunk):
            xc = x[i:i + chunk]
            out[i:i + xc.shape[0]] = self._score_chunk(xc, self.gmm)
        return out

    @torch.no_grad()
    def score_host(self, x_np, chunk, pinned: bool):
        """Scores rows that start on the host (NumPy), chunk by chunk, as a user feeding data
        would: ``pinned`` copies each chunk into page-locked memory and transfers it
        asynchronously (the best per-chunk path), else a plain pageable ``.to(device)``.
        Returns the scores on the host."""
        self.model.eval()
        out = torch.empty(x_np.shape[0], device=self.device)
        for i in range(0, x_np.shape[0], chunk):
            xc = torch.from_numpy(x_np[i:i + chunk])
            xc = xc.pin_memory().to(self.device, non_blocking=True) if pinned else xc.to(self.device)
            out[i:i + xc.shape[0]] = self._score_chunk(xc, self.gmm)
        return out.cpu()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000, help="training rows")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--score-rows", type=int, default=200_000)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--compile", action="store_true", help="torch.compile the loss/step and scoring")
    p.add_argument("--energy", choices=["inverse", "solve"], default="inverse",
                   help="inverse: precomputed L^-1 + matmul (fast form, default); "
                        "solve: solve_triangular with an N-wide RHS (slow on GPU)")
    p.add_argument("--score-mode", choices=["shared-encoder", "repeat"], default="shared-encoder",
                   help="shared-encoder: encode each row once, decode L samples; "
                        "repeat: repeat rows L times through the whole net (alibi's way)")
    p.add_argument("--batch-size", type=int, default=common.ARCH["batch_size"])
    p.add_argument("--score-chunk", type=int, default=None,
                   help="rows per scoring chunk (x L samples); default 4096 on CPU, 65536 on GPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = dict(common.ARCH)
    cfg["batch_size"] = args.batch_size
    chunk = args.score_chunk or (65536 if device.type == "cuda" else 4096)
    fast = args.energy == "inverse"

    x_np = common.make_data(args.rows, seed=args.seed)
    xs_np = common.make_data(args.score_rows, seed=args.seed + 1)
    result = {
        "runner": "torch",
        "framework": "torch",
        "torch": torch.__version__,
        "device": args.device,
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else common.cpu_name()),
        "threads": torch.get_num_threads(),
        "compile": args.compile,
        "energy_form": args.energy,
        "score_mode": args.score_mode,
        "rows": args.rows,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "score_rows": args.score_rows,
        "score_chunk": chunk,
        "samples": cfg["samples"],
        "data_fingerprint": common.fingerprint(x_np),
        "score_data_fingerprint": common.fingerprint(xs_np),
        "arch": cfg,
    }

    x = torch.from_numpy(x_np).to(device)
    xs = torch.from_numpy(xs_np).to(device)
    model = VAEGMM(n_features=x.shape[1], enc_hidden=tuple(cfg["encoder_hidden"]),
                   latent_dim=cfg["latent_dim"], dec_hidden=tuple(cfg["decoder_hidden"]),
                   gmm_hidden=cfg["gmm_hidden"], n_gmm=cfg["n_gmm"]).to(device)
    runner = Runner(model, cfg, device, compile_=args.compile, fast=fast, score_mode=args.score_mode)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    result["loadavg_start"] = common.loadavg()
    epoch_s, epoch_cpu_s, losses, parts = [], [], [], []
    try:
        for ep in range(args.epochs):
            runner.sync()
            t0, c0 = time.perf_counter(), time.process_time()
            loss, prt = runner.train_epoch(x, args.batch_size)  # .item() syncs
            runner.sync()
            epoch_s.append(time.perf_counter() - t0)
            epoch_cpu_s.append(time.process_time() - c0)
            losses.append(loss)
            parts.append(prt)
            print(f"epoch {ep + 1}: {epoch_s[-1]:.3f} s  loss {loss:.5f}  "
                  f"[nll {prt[0]:.1f} energy {prt[1]:.4f} penalty {prt[2]:.4f} kl {prt[3]:.4f}]",
                  file=sys.stderr)

        t0 = time.perf_counter()
        runner.fit_gmm(x, chunk=max(chunk, 8192))
        runner.sync()
        gmm_fit_s = time.perf_counter() - t0

        # warm-up on a full chunk plus the ragged tail, so that a compiled scorer has seen
        # both shapes (dynamic=False) before the timed call
        tail = xs.shape[0] % chunk
        warm = xs[: min(xs.shape[0], chunk + tail if xs.shape[0] > chunk else chunk)]
        t0 = time.perf_counter()
        runner.score(warm, chunk)
        runner.sync()
        warmup_s = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        scores = runner.score(xs, chunk)
        runner.sync()
        score_s = time.perf_counter() - t0
        score_cpu_s = time.process_time() - c0
    except Exception as e:  # e.g. torch.compile failing on this machine: report it cleanly
        result.update(error=f"{type(e).__name__}: {e}", epoch_s=epoch_s, loss=losses,
                      peak_rss_mb=common.peak_rss_mb())
        common.write_result(args.json, result)
        print(f"FAILED: {type(e).__name__}: {str(e)[:2000]}", file=sys.stderr)
        return 2

    sc = scores.cpu().numpy()
    # host-fed scoring, like for like with vaegmm_jax's score(NumPy): the rows start on the host
    # and the scores end there (pageable, and page-locked per chunk on a GPU)
    host_paths = {"pageable": False, "pinned": True} if device.type == "cuda" else {"pageable": False}
    for name, pinned in host_paths.items():
        runner.score_host(xs_np[: min(len(xs_np), chunk)], chunk, pinned)  # warm-up
        t0 = time.perf_counter()
        host_scores = runner.score_host(xs_np, chunk, pinned)
        result[f"score_rows_per_s_host_{name}"] = args.score_rows / (time.perf_counter() - t0)
        result[f"score_host_{name}_finite"] = bool(torch.isfinite(host_scores).all())  # fresh samples: not == sc
    result.update(
        first_epoch_s=epoch_s[0],
        epoch_s_steady=(float(np.mean(epoch_s[1:])) if len(epoch_s) > 1 else None),
        epoch_s_steady_median=(float(np.median(epoch_s[1:])) if len(epoch_s) > 1 else None),
        epoch_s=epoch_s,
        epoch_cpu_s=epoch_cpu_s,
        train_rows_per_s_steady=(args.rows / float(np.mean(epoch_s[1:])) if len(epoch_s) > 1 else None),
        loss=losses,
        loss_parts_names=["nll", "energy", "penalty", "kl"],
        loss_parts=parts,
        gmm_fit_s=gmm_fit_s,
        score_warmup_s=warmup_s,
        score_s=score_s,
        score_cpu_s=score_cpu_s,
        score_rows_per_s=args.score_rows / score_s,
        score_finite=bool(np.isfinite(sc).all()),
        score_mean=float(np.mean(sc)),
        score_std=float(np.std(sc)),
        peak_rss_mb=common.peak_rss_mb(),
        loadavg_end=common.loadavg(),
    )
    if device.type == "cuda":
        result["cuda_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    common.write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
