"""What ``--precision`` buys on this machine: target-training images/s through the harness's own
``train_classifier`` and GMI/KEDMI attack iterations/s through the attacks' own loops, at the
64-px face protocol's paper shapes, per precision; peak GPU memory of each. Prints figures;
asserts nothing.

    python benchmarks/precision.py [--device cuda] [--archs vgg16,ir152] [--batches 40] [--iters 30]

Training: ``--batches`` batches of ``--batch`` (64, official) random 3x64x64 images over 1,000
classes (one epoch, after a warm-up epoch), with the celeba64 paper recipe of the architecture and
no defense; bf16 with and without channels_last (off by default in the harness). Attacks: one
official identity batch, 60 classes x 5 latents, paper widths (GAN dim 64), a 1,000-class VGG16
target; the same ``autocast`` the runner wraps an inversion in. Goal (issue 11): bf16 >= 1.5x fp32 training
throughput for VGG16 and IR152 on an H100/H200.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from reinv_attacks._gan import Critic, Generator
from reinv_attacks._latent import latent_init
from reinv_attacks.gmi import gmi_optimize
from reinv_attacks.kedmi import KDiscriminator, kedmi_optimize
from reinv_bench.api import Defense
from reinv_bench.contract.data import Split
from reinv_bench.contract.precision import autocast, set_tf32
from reinv_bench.engine.runner import describe_device, resolve_device
from reinv_bench.engine.train import train_classifier
from reinv_bench.registry.lookup import load

SHAPE, K, IDS, PER = (3, 64, 64), 1000, 60, 5


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset(dev):
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def peak(dev) -> float:
    return torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")


def train_rate(
    reg, arch: str, precision: str, channels_last: bool, dev, batches: int, batch: int
) -> tuple[float, float]:
    scenario = reg.get("scenario", "celeba64")
    recipe = dataclasses.replace(scenario.recipe("target", "paper", arch), epochs=1, batch_size=batch)
    n = batches * recipe.batch_size
    g = torch.Generator().manual_seed(0)
    data = Split(torch.rand(n, *SHAPE, generator=g) * 2 - 1, torch.randint(0, K, (n,), generator=g))
    defense = Defense()  # the undefended target
    model = defense.wrap_model(reg.get("architecture", arch).build(K, SHAPE))
    set_tf32(precision)
    train_classifier(
        model, data, recipe, defense, device=dev, seed=0, precision=precision, channels_last=channels_last
    )  # warm-up: cuDNN autotuning, allocator
    reset(dev)
    t0 = time.perf_counter()
    train_classifier(
        model, data, recipe, defense, device=dev, seed=0, precision=precision, channels_last=channels_last
    )
    sync(dev)
    return n / (time.perf_counter() - t0), peak(dev)


def attack_rate(name: str, reg, precision: str, dev, iters: int) -> tuple[float, float]:
    torch.manual_seed(0)
    T = reg.get("architecture", "vgg16").build(K, SHAPE).to(dev).eval().requires_grad_(False)
    G = Generator(SHAPE, 100, 64).to(dev).eval().requires_grad_(False)
    z, y = (t.to(dev) for t in latent_init(0, list(range(IDS)), PER, 100))
    if name == "gmi":
        D = Critic(SHAPE, 64).to(dev).eval().requires_grad_(False)

        def run(n):
            gmi_optimize(G, D, T, z, y, iters=n, lr=0.02, momentum=0.9, lam=100, clip=1, scale=1 / IDS)
    else:
        D = KDiscriminator(SHAPE, 64, K).to(dev).eval().requires_grad_(False)
        mu, lv = torch.zeros(IDS, 100, device=dev), torch.ones(IDS, 100, device=dev)

        def run(n):
            kedmi_optimize(G, D, T, mu, lv, y[::PER], iters=n, lr=0.02, lam=100, clip=0, scale=1 / IDS)

    set_tf32(precision)
    with autocast(dev, precision):
        run(3)
        reset(dev)
        t0 = time.perf_counter()
        run(iters)
        sync(dev)
    return iters / (time.perf_counter() - t0), peak(dev)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--archs", default="vgg16,ir152")
    ap.add_argument("--precisions", default="fp32,tf32,bf16")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64, help="training batch (official: 64)")
    ap.add_argument("--no-attacks", action="store_true")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    reg = load()
    precisions = args.precisions.split(",")
    print(f"device {describe_device(dev)}, torch {torch.__version__}")
    print(f"target training, 64 px, 1,000 classes, batch {args.batch} (train_classifier)")
    print(f"{'arch':8s} {'precision':18s} {'img/s':>9s} {'vs fp32':>8s} {'peak GiB':>9s}")
    for arch in args.archs.split(","):
        base = None
        variants = [(p, False) for p in precisions]
        if "bf16" in precisions and dev.type == "cuda":
            variants.append(("bf16", True))
        for precision, cl in variants:
            rate, mem = train_rate(reg, arch, precision, cl, dev, args.batches, args.batch)
            base = base or rate
            label = precision + (" channels_last" if cl else "")
            print(f"{arch:8s} {label:18s} {rate:9.1f} {rate / base:7.2f}x {mem:9.2f}", flush=True)
    if args.no_attacks:
        return
    print(f"attacks, one identity batch ({IDS} classes x {PER}), paper widths, VGG16 target")
    print(f"{'attack':8s} {'precision':18s} {'it/s':>9s} {'vs fp32':>8s} {'peak GiB':>9s}")
    for name in ("gmi", "kedmi"):
        base = None
        for precision in precisions:
            rate, mem = attack_rate(name, reg, precision, dev, args.iters)
            base = base or rate
            print(f"{name:8s} {precision:18s} {rate:9.2f} {rate / base:7.2f}x {mem:9.2f}", flush=True)


if __name__ == "__main__":
    main()
