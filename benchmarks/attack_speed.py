"""Iterations per second of each attack's harness loop vs a minimal hand-written PyTorch loop
doing the same forward/backward passes, on the default scenario's shapes (10 classes).

    python benchmarks/attack_speed.py [--device cpu|cuda] [--iters 100] [--repeats 3] [--attack NAME]

Harness and hand-written loops are timed alternately, ``--repeats`` times each; the median
rate is reported (single short runs on a GPU varied by +-20% here).

Target: the harness within 10% of the hand-written loop (ratio >= 0.9). Models are randomly
initialised at the `quick` widths: speed does not depend on training.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time

import torch
import torch.nn.functional as F

from reinv_attacks._gan import Critic, Generator, gradient_penalty, wgan_gp_losses
from reinv_attacks._latent import latent_init
from reinv_attacks.align import Align, taa_transforms
from reinv_attacks.brepmi import brep_optimize
from reinv_attacks.gmi import GMI, gmi_optimize
from reinv_attacks.kedmi import KDiscriminator, kedmi_optimize, prior_loss
from reinv_attacks.lomma import logit_identity
from reinv_attacks.plgmi import CGenerator, augment, max_margin, plg_optimize
from reinv_attacks.ppdg import PPDG, fine_tune
from reinv_attacks.rlbmi import RLBMI, rlb_attack
from reinv_bench.api import AttackContext, BlackBox, LabelOnly
from reinv_bench.registry.lookup import load

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
    ap.add_argument("--attack", action="append", help="only these cases (repeatable); default: all")
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

    # align+gmi: the TAA identity (8 copies, the quick budget) in the gmi loop; hand: the same
    # average written out
    align = Align({}, "quick", base=GMI({}, "quick"))
    a_ident = align.identity(AttackContext(reg.get("scenario", "mnist"), None, T, dev, 0)).loss
    n_copies, _, scale, degrees = align.settings()
    taa = taa_transforms(SHAPE[-1], scale, degrees)

    def hand_align(n):
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.SGD([z], lr=0.02, momentum=0.9, nesterov=True)
        for _ in range(n):
            x = G(z)
            iden = sum(
                F.cross_entropy(T((taa(x * 0.5 + 0.5) - 0.5) / 0.5), y, reduction="none")
                for _ in range(n_copies)
            )
            loss = (-D(x) + 100 * iden / n_copies).sum() / K
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                z.clamp_(-1, 1)

    # ppdg+gmi: its own loop is the generator fine-tune (one iteration = one critic step on 640
    # public + pseudo-private images, batches of 64); its rounds are gmi's loop above
    tune_data = torch.rand(640, *SHAPE, device=dev) * 2 - 1

    def harness_tune(n):
        g, d = copy.deepcopy(G), copy.deepcopy(D)
        c = PPDG({"tune_epochs": n / 10}, "quick", base=GMI({}, "quick")).config
        fine_tune(g, d, wgan_gp_losses(g, d, 100, 10.0, dev), tune_data, 1, c, 0, dev)

    def hand_tune(n):
        g, d = copy.deepcopy(G), copy.deepcopy(D)
        opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        for step in range(n):
            if step % 10 == 0:
                perm = torch.randperm(len(tune_data), device=dev)
            real = tune_data[perm[(step % 10) * 64 : (step % 10 + 1) * 64]]
            g.requires_grad_(False), d.requires_grad_(True)
            fake = g(torch.randn(64, 100, device=dev))
            loss = -(d(real).mean() - d(fake).mean()) + 10 * gradient_penalty(d, real, fake)
            opt_d.zero_grad()
            loss.backward()
            opt_d.step()
            if (step + 1) % 5 == 0:
                g.requires_grad_(True), d.requires_grad_(False)
                loss = -d(g(torch.randn(64, 100, device=dev))).mean()
                opt_g.zero_grad()
                loss.backward()
                opt_g.step()

    # rlbmi: one episode = 10 agents acting, 3 queries each (G(z), G(a), the test latent) and,
    # from episode 17 (SAC batches of 16; official 256), one update of every agent; hand: the same
    # batched passes (10 agents' actor and critics as stacked weights) written out
    probs = BlackBox(T)

    def hand_rlb(n, h=256, bs=16):
        def net(sizes):
            layers = [
                (torch.randn(K, i, o, device=dev) * i**-0.5, torch.zeros(K, 1, o, device=dev))
                for i, o in zip(sizes, sizes[1:])
            ]
            return [(w.requires_grad_(), b.requires_grad_()) for w, b in layers]

        def fwd(layers, x):
            for i, (w, b) in enumerate(layers):
                x = torch.baddbmm(b, x, w)
                x = x.relu() if i < len(layers) - 1 else x
            return x

        def policy(s, e):
            mu, log_std = fwd(actor, s).chunk(2, -1)
            std = log_std.clamp(-20, 2).exp()
            a = torch.tanh(mu + e * std)
            logp = -0.5 * e**2 - std.log() - 0.5 * math.log(2 * math.pi) - torch.log(1 - a**2 + 1e-6)
            return a, logp.mean(-1, keepdim=True)

        actor, q1, q2 = net([100, h, h, 200]), net([200, h, h, 1]), net([200, h, h, 1])
        t1, t2 = ([(w.detach().clone(), b.detach().clone()) for w, b in q] for q in (q1, q2))
        log_alpha = torch.zeros(K, 1, 1, device=dev, requires_grad=True)
        opts = [torch.optim.Adam([p for lay in q for p in lay], lr=5e-4) for q in (actor, q1, q2)]
        opt_alpha, alpha = torch.optim.Adam([log_alpha], lr=5e-4), torch.ones(K, 1, 1, device=dev)
        buf, yk, best = (
            torch.zeros(K, n, 302, device=dev),
            torch.arange(K, device=dev),
            torch.zeros(K, device=dev),
        )
        for ep in range(n):
            z = torch.randn(1, 100).expand(K, 100).to(dev)
            with torch.no_grad():
                a = policy(z[:, None], torch.randn(()).to(dev))[0][:, 0]
                p = probs(G(torch.cat([a, a]))).log()
            other = p[:K].scatter(1, yk[:, None], -math.inf).amax(1, keepdim=True)
            py = p[:K].gather(1, yk[:, None])
            r = 2 * py + 2 * p[K:].gather(1, yk[:, None]) + 8 * (py.exp() - other.exp()).clamp_min(1e-7).log()
            buf[:, ep] = torch.cat([z, a, r, a, torch.ones(K, 1, device=dev)], 1)
            if ep + 1 > bs:
                idx = torch.randint(ep + 1, (bs,), device=dev)
                s, act, rew, s2, done = buf[:, idx].split([100, 100, 1, 100, 1], -1)
                a2, logp2 = policy(s2, torch.randn(()).to(dev))
                with torch.no_grad():
                    q_next = torch.min(fwd(t1, torch.cat([s2, a2], -1)), fwd(t2, torch.cat([s2, a2], -1)))
                    target = rew + 0.99 * (1 - done) * (q_next - alpha * logp2)
                for q, opt in ((q1, opts[1]), (q2, opts[2])):
                    loss = 0.5 * (fwd(q, torch.cat([s, act], -1)) - target).pow(2).mean((1, 2)).sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                alpha_now = log_alpha.detach().exp()
                a_pred, logp = policy(s, torch.randn(()).to(dev))
                loss = -(log_alpha * (logp - 100).detach()).mean((1, 2)).sum()
                opt_alpha.zero_grad()
                loss.backward()
                opt_alpha.step()
                alpha = alpha_now
                frozen_q1 = [(w.detach(), b.detach()) for w, b in q1]
                loss = (alpha * logp - fwd(frozen_q1, torch.cat([s, a_pred], -1))).mean((1, 2)).sum()
                opts[0].zero_grad()
                loss.backward()
                opts[0].step()
                with torch.no_grad():
                    for tq, q in ((t1, q1), (t2, q2)):
                        for (tw, tb), (w, b) in zip(tq, q):
                            tw.copy_(0.01 * w + 0.99 * tw)
                            tb.copy_(0.01 * b + 0.99 * tb)
            with torch.no_grad():
                zt = torch.randn(1, 100).expand(K, 100).to(dev)
                at = policy(zt[:, None], torch.randn(()).to(dev))[0][:, 0]
                best = torch.maximum(best, probs(G(at)).gather(1, yk[:, None])[:, 0])

    def harness_rlb(n):
        c = RLBMI({"episodes": n, "batch_size": 16}).config
        rlb_attack(G, probs, torch.arange(K, device=dev), c, z_dim=100, seed=0)

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
        "rlbmi": (harness_rlb, hand_rlb),
        "align+gmi": (
            lambda n: gmi_optimize(
                G, D, T, z0, y, iters=n, lr=0.02, momentum=0.9, lam=100, clip=1, scale=1 / K, identity=a_ident
            ),
            hand_align,
        ),
        "ppdg tune": (harness_tune, hand_tune),
    }
    print(
        f"device {dev}{' (' + torch.cuda.get_device_name(dev) + ')' if dev.type == 'cuda' else ''}, "
        f"{args.iters} iterations, 10 classes, median of {args.repeats}"
    )
    print(f"{'attack':<10} {'harness it/s':>13} {'hand it/s':>10} {'ratio':>6}")
    for name, (harness, hand) in cases.items():
        if args.attack and name not in args.attack:
            continue
        runs = [(timed(harness, args.iters, dev), timed(hand, args.iters, dev)) for _ in range(args.repeats)]
        a, b = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"{name:<10} {a:13.1f} {b:10.1f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
