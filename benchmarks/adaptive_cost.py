"""Cost of the adaptive attacker's identity loss per EOT draw (issue 29): one forward and backward
of the adapted identity loss on a batch of reconstructions, per defense's declared adaptation and
number of draws M, against the plain cross-entropy step.

    python benchmarks/adaptive_cost.py [--device cpu|cuda] [--batch 60] [--iters 20] [--draws 1 2 4 8]

Prints milliseconds per step and per draw. The target is the digits' ``cnn`` (or ``resnet8`` for
the skip-connection defenses) at random initialisation: cost does not depend on training.
Trap-MID's ``knows=algorithm`` signatures (trigger reversal) are paid once per class, outside
the steps timed here.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from reinv_attacks.adaptive import adapted_identity, copies
from reinv_bench.api import Split
from reinv_bench.registry.lookup import load

SHAPE, K = (1, 32, 32), 10


def step_ms(loss, x, y, iters: int, device) -> float:
    for _ in range(2):  # warm-up
        loss(x, y).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        x.grad = None
        loss(x, y).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=60)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--draws", type=int, nargs="+", default=[1, 2, 4, 8])
    args = ap.parse_args()
    dev, reg = torch.device(args.device), load()
    torch.manual_seed(0)
    x = (torch.rand(args.batch, *SHAPE, device=dev) * 2 - 1).requires_grad_(True)
    y = torch.arange(args.batch, device=dev) % K
    ce = lambda logits, yy: F.cross_entropy(logits, yy, reduction="none")  # noqa: E731
    public = Split(torch.rand(64, *SHAPE) * 2 - 1, None)
    print(f"device {dev}, batch {args.batch}, ms per step (per draw)")
    plain = reg.get("architecture", "cnn").build(K, SHAPE).to(dev).eval().requires_grad_(False)
    base = step_ms(lambda a, b: ce(plain(a), b), x, y, args.iters, dev)
    print(f"{'plain CE (cnn)':32s} {base:8.2f}")
    for name in ("re", "bido", "negls", "mid", "rolss", "trapmid"):
        d = reg.get("defense", name)({}, "smoke")
        arch = "resnet8" if name == "rolss" else "cnn"
        T = d.wrap_model(reg.get("architecture", arch).build(K, SHAPE)).to(dev).eval().requires_grad_(False)
        ctx = SimpleNamespace(target=T, device=dev, seed=0, data=SimpleNamespace(public=public))
        if name == "trapmid":
            d.load_secrets({"triggers": torch.rand(K, *SHAPE)})
            a = d.adaptation(ctx, "triggers")
        else:
            a = d.adaptation(ctx)
        if a.alternatives:  # mid: each alternative is a full run; time the EOT one
            a = a.alternatives[1]
        for m in args.draws if a.stochastic else [1]:
            loss = adapted_identity(a, T, ce, copies(a, "gmi", SHAPE[-1], 0.0), m, 1.0)
            ms = step_ms(loss, x, y, args.iters, dev)
            print(f"{a.label[:26]:26s} M={m:<3d} {ms:8.2f} ({ms / m:.2f})")


if __name__ == "__main__":
    main()
