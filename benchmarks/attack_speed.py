"""Iterations per second of each attack's harness loop vs a minimal hand-written PyTorch loop
doing the same forward/backward passes, on the default scenario's shapes (10 classes).

    python benchmarks/attack_speed.py [--device cpu|cuda] [--iters 100] [--repeats 3]

Harness and hand-written loops are timed alternately, ``--repeats`` times each; the median
rate is reported (single short runs on a GPU varied by +-20% here).

Target: the harness within 10% of the hand-written loop (ratio >= 0.9). Models are randomly
initialised at the `quick` widths: speed does not depend on training.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from reinv_attacks._gan import Critic, Generator
from reinv_attacks._latent import latent_init
from reinv_attacks.brepmi import brep_optimize
from reinv_attacks.gmi import gmi_optimize
from reinv_attacks.kedmi import KDiscriminator, kedmi_optimize, prior_loss
from reinv_attacks.lomma import logit_identity
from reinv_attacks.plgmi import CGenerator, augment, max_margin, plg_optimize
from reinv_bench.api import LabelOnly
from reinv_bench.registry import load

SHAPE, K = (1, 32, 32), 10


def timed(fn, iters: int, device) -> float:
    fn(3)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(iters)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return iters / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_flush_denormal(True)
    torch.manual_seed(0)
    reg = load()
    T = reg.get("architecture", "cnn").build(K, SHAPE).to(dev).eval().requires_grad_(False)
    G = Generator(SHAPE, 100, 16).to(dev).eval().requires_grad_(False)
    D = Critic(SHAPE, 16).to(dev).eval().requires_grad_(False)
    KD = KDiscriminator(SHAPE, 16, K).to(dev).eval().requires_grad_(False)
    CG = CGenerator(SHAPE, K, 16, 128).to(dev).eval().requires_grad_(False)
    z0, y = (t.to(dev) for t in latent_init(0, list(range(K)), 5, 100))
    zp, yp = (t.to(dev) for t in latent_init(0, list(range(K)), 5, 128))
    student = reg.get("architecture", "cnn").build(K, SHAPE).to(dev).eval().requires_grad_(False)
    mu_pub = torch.zeros(256, device=dev)
    ident = logit_identity(T, [student], mu_pub, 1.0)

    def hand_gmi(n, identity=False):
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.SGD([z], lr=0.02, momentum=0.9, nesterov=True)
        for _ in range(n):
            x = G(z)
            if identity:
                out = T.forward_all(x)
                iden = (
                    -out.logits.gather(1, y[:, None]).squeeze(1) - student(x).gather(1, y[:, None]).squeeze(1)
                ) / 2
                iden = iden + (out.features - mu_pub).pow(2).mean(1)
            else:
                iden = F.cross_entropy(T(x), y, reduction="none")
            loss = (-D(x) + 100 * iden).sum() / K
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                z.clamp_(-1, 1)

    def hand_kedmi(n):
        mu = torch.zeros(K, 100, device=dev, requires_grad=True)
        lv = torch.ones(K, 100, device=dev, requires_grad=True)
        opt = torch.optim.Adam([mu, lv], lr=0.02)
        yk = y[:K]
        for _ in range(n):
            x = G((mu + torch.exp(0.5 * lv) * torch.randn_like(mu)).clamp(-1, 1))
            loss = (prior_loss(KD(x)[1]) + 100 * F.cross_entropy(T(x), yk, reduction="none")).sum() / K
            opt.zero_grad()
            loss.backward()
            opt.step()

    def hand_plg(n):
        z = zp.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.1)
        for _ in range(n):
            x = CG(z, yp)
            loss = (sum(max_margin(T(augment(x)), yp) for _ in range(2)) / 2).sum() / K
            opt.zero_grad()
            loss.backward()
            opt.step()

    label_of = LabelOnly(T)
    with torch.no_grad():
        zb = torch.randn(K, 100, device=dev)
        yb = label_of(G(zb))

    def hand_brep(n):
        z = zb.clone()
        r = torch.full((K,), 2.0, device=dev)
        for _ in range(n):
            d = torch.randn(K, 32, 100, device=dev)
            d = d / d.norm(dim=2, keepdim=True) * r[:, None, None]
            v = (label_of(G((z[:, None] + d).reshape(-1, 100))).view(K, 32) == yb[:, None]).float() * 2 - 1
            grown = v.sum(1) > 0.75 * 32
            r = torch.where(grown, r * 1.3, r)
            z_new = (
                z + torch.clamp(r / 3, max=3)[:, None] * (((v - 1) / 2)[..., None] * d).mean(1) / r[:, None]
            ).clamp(-1.5, 1.5)
            keep = label_of(G(z_new)) == yb
            z = torch.where(keep[:, None], z_new, z)

    cases = {
        "gmi": (
            lambda n: gmi_optimize(
                G, D, T, z0, y, iters=n, lr=0.02, momentum=0.9, lam=100, clip=1, scale=1 / K
            ),
            hand_gmi,
        ),
        "lomma+gmi": (
            lambda n: gmi_optimize(
                G, D, T, z0, y, iters=n, lr=0.02, momentum=0.9, lam=100, clip=1, scale=1 / K, identity=ident
            ),
            lambda n: hand_gmi(n, identity=True),
        ),
        "kedmi": (
            lambda n: kedmi_optimize(
                G,
                KD,
                T,
                torch.zeros(K, 100, device=dev),
                torch.ones(K, 100, device=dev),
                y[:K],
                iters=n,
                lr=0.02,
                lam=100,
                clip=1,
                scale=1 / K,
            ),
            hand_kedmi,
        ),
        "plgmi": (lambda n: plg_optimize(CG, T, zp, yp, iters=n, lr=0.1, n_aug=2, scale=1 / K), hand_plg),
        "brepmi": (
            lambda n: brep_optimize(
                G,
                label_of,
                zb.clone(),
                yb,
                points=32,
                r0=2.0,
                grow=1.3,
                threshold=0.75,
                patience=10**9,
                max_iters=n,
                clamp=1.5,
            ),
            hand_brep,
        ),
    }
    print(
        f"device {dev}{' (' + torch.cuda.get_device_name(dev) + ')' if dev.type == 'cuda' else ''}, "
        f"{args.iters} iterations, 10 classes, median of {args.repeats}"
    )
    print(f"{'attack':<10} {'harness it/s':>13} {'hand it/s':>10} {'ratio':>6}")
    for name, (harness, hand) in cases.items():
        runs = [(timed(harness, args.iters, dev), timed(hand, args.iters, dev)) for _ in range(args.repeats)]
        a, b = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"{name:<10} {a:13.1f} {b:10.1f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
