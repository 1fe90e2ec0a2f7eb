"""Training throughput of the literature architectures at their protocol's resolution, and how
fast ``ImageFiles`` decodes a face tree, on this machine. Prints figures; asserts nothing.

    python benchmarks/face_throughput.py [--device cuda] [--archs vgg16,ir152] [--steps 20]

Each architecture: SGD steps (forward, cross-entropy, backward, step) on random batches, timed
after warm-up with the device synchronised; images/s and peak GPU memory. Decoding: the fake
CelebA tree of ``reinv_bench.testing`` through the celeba64 loader: by threads, by worker
processes, and from the cache.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from reinv_bench.engine.runner import describe_device, resolve_device
from reinv_bench.registry.lookup import load

PROTOCOL = {
    "vgg16": 64,
    "ir152": 64,
    "facenet64": 64,
    "ir50_112": 64,
    "resnet18": 224,
    "resnet50": 224,
    "resnet152": 224,
    "densenet121": 224,
    "inception_v3": 224,
    "inception_resnet_v1": 224,
}


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def train_rate(arch, side: int, dev: torch.device, steps: int, batch: int) -> tuple[float, float]:
    model = arch.build(1000, (3, side, side)).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    x = torch.rand(batch, 3, side, side, device=dev) * 2 - 1
    y = torch.randint(0, 1000, (batch,), device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for i in range(steps + 3):
        if i == 3:
            sync(dev)
            t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(dev)
    rate = steps * batch / (time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    return rate, mem


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--archs", default=",".join(PROTOCOL))
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    dev = resolve_device(args.device)
    reg = load()
    print(f"device {describe_device(dev)}, torch {torch.__version__}")
    print(f"{'arch':22s} {'px':>4s} {'batch':>5s} {'train img/s':>12s} {'peak GiB':>9s}")
    for name in args.archs.split(","):
        side = PROTOCOL[name]
        batch = 64 if side == 64 else 128
        steps = args.steps if dev.type == "cuda" else max(2, args.steps // 10)
        if dev.type != "cuda":
            batch //= 8
        rate, mem = train_rate(reg.get("architecture", name), side, dev, steps, batch)
        print(f"{name:22s} {side:4d} {batch:5d} {rate:12.1f} {mem:9.2f}")
    from reinv_bench.testing import make_celeba

    with tempfile.TemporaryDirectory() as tmp:
        make_celeba(Path(tmp))
        x = reg.get("scenario", "celeba64").load(Path(tmp)).private_train.x
        for label, process_min in (
            ("threads", "1000000000"),
            ("processes, pool start included", "1"),
            ("processes", "1"),
            ("cached", "1"),
        ):
            os.environ["REINV_BENCH_DECODE_PROCESS_MIN"] = process_min
            if label != "cached":
                x.cache.clear()
            t0 = time.perf_counter()
            x.to("cpu")
            print(
                f"decode celeba64, {label}: {len(x) / (time.perf_counter() - t0):.0f} images/s "
                f"({len(x)} images)"
            )


if __name__ == "__main__":
    main()
