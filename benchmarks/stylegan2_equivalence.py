"""The native StyleGAN2-ADA generator against NVlabs' reference, on the same random weights.

    python benchmarks/stylegan2_equivalence.py /path/to/stylegan2-ada-pytorch [--full] [--batch 4]

Needs a local checkout of https://github.com/NVlabs/stylegan2-ada-pytorch (not vendored here: its
licence is non-commercial). On CPU the reference's custom CUDA ops fall back to its own reference
implementations (``impl='ref'`` paths of upfirdn2d/bias_act, plain conv2d), which is what is
compared. For each configuration a reference ``Generator`` is built with random weights (its own
initialisation, plus random ``w_avg`` and noise strengths so that truncation and noise matter),
its state dict is loaded by name into ``reinv_attacks._stylegan2_net.Generator``, and both render the
same z with truncation (psi 0.5, cutoff 8: PPA's setting) in float32; the largest absolute pixel
difference is printed (images are in about [-1, 1]). The last rows read the reference generator
back from a real ``torch_utils.persistence`` pickle (pickle protocols 2 to 5) with the restricted
unpickler and compare again. ``--full`` adds the FFHQ 1024 px architecture (batch 1, slow on CPU).
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
import warnings
from pathlib import Path

import torch

from reinv_attacks._stylegan2_load import generator_from_pickle
from reinv_attacks._stylegan2_net import Generator

PSI, CUTOFF = 0.5, 8

CONFIGS = {  # name: (Generator kwargs, synthesis call kwargs)
    "skip 64px, clamp 256, fp16 blocks forced to fp32": (
        dict(
            z_dim=64,
            c_dim=0,
            w_dim=64,
            img_resolution=64,
            img_channels=3,
            mapping_kwargs=dict(num_layers=8),
            synthesis_kwargs=dict(channel_base=2048, channel_max=64, num_fp16_res=4, conv_clamp=256),
        ),
        {},
    ),
    "skip 64px, not fused (per-sample scaling)": (
        dict(
            z_dim=64,
            c_dim=0,
            w_dim=64,
            img_resolution=64,
            img_channels=3,
            mapping_kwargs=dict(num_layers=8),
            synthesis_kwargs=dict(channel_base=2048, channel_max=64, conv_clamp=256),
        ),
        dict(fused_modconv=False),
    ),
    "skip 64px, noise_mode random (same seed)": (
        dict(
            z_dim=64,
            c_dim=0,
            w_dim=64,
            img_resolution=64,
            img_channels=3,
            mapping_kwargs=dict(num_layers=8),
            synthesis_kwargs=dict(channel_base=2048, channel_max=64),
        ),
        dict(noise_mode="random"),
    ),
    "resnet 32px, conditional (c_dim 5)": (
        dict(
            z_dim=32,
            c_dim=5,
            w_dim=48,
            img_resolution=32,
            img_channels=3,
            mapping_kwargs=dict(num_layers=4),
            synthesis_kwargs=dict(channel_base=1024, channel_max=64, architecture="resnet"),
        ),
        {},
    ),
    "orig 32px, 1 channel": (
        dict(
            z_dim=32,
            c_dim=0,
            w_dim=32,
            img_resolution=32,
            img_channels=1,
            mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=1024, channel_max=64, architecture="orig"),
        ),
        {},
    ),
}
FULL = (
    "FFHQ 1024px architecture (ffhq.pkl's kwargs)",
    dict(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=1024,
        img_channels=3,
        mapping_kwargs=dict(num_layers=8),
        synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256),
    ),
    {},
)


def reference_generator(kwargs: dict, seed: int):
    import dnnlib
    from training.networks import Generator as Reference

    torch.manual_seed(seed)
    easy = {k: dnnlib.EasyDict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
    G = Reference(**easy).eval().requires_grad_(False)
    with torch.no_grad():  # untrained values that exercise truncation and noise
        G.mapping.w_avg.copy_(torch.randn_like(G.mapping.w_avg))
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.copy_(torch.rand(()) * 0.5)
    return G


def render(G, z, c, call: dict, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)  # noise_mode 'random': both draw the same noise in the same order
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=PSI, truncation_cutoff=CUTOFF)
        return G.synthesis(ws, **{"noise_mode": "const", "force_fp32": True, **call})


def compare(name: str, kwargs: dict, call: dict, batch: int, seed: int) -> float:
    ref = reference_generator(kwargs, seed)
    native = Generator(**kwargs).eval().requires_grad_(False)
    native.load_state_dict(ref.state_dict(), strict=True)
    z = torch.randn(batch, kwargs["z_dim"], generator=torch.Generator().manual_seed(seed + 1))
    c = None
    if kwargs["c_dim"]:
        c = torch.nn.functional.one_hot(torch.arange(batch) % kwargs["c_dim"], kwargs["c_dim"]).float()
    t0 = time.perf_counter()
    a = render(ref, z, c, call, seed)
    t1 = time.perf_counter()
    b = render(native, z, c, call, seed)
    t2 = time.perf_counter()
    diff = (a - b).abs().max().item()
    print(
        f"{name:<52} {tuple(a.shape)!s:<20} range [{a.min():+.2f}, {a.max():+.2f}]  max |diff| {diff:.3e}"
        f"  (reference {t1 - t0:.1f}s, native {t2 - t1:.1f}s)",
        flush=True,
    )
    return diff


def compare_pickle(kwargs: dict, batch: int, seed: int) -> float:
    """The reference pickled the way NVIDIA's .pkl files are, read back without running its code."""
    ref = reference_generator(kwargs, seed)
    z = torch.randn(batch, kwargs["z_dim"], generator=torch.Generator().manual_seed(seed + 1))
    a = render(ref, z, None, {}, seed)
    worst = 0.0
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        data = pickle.dumps(
            dict(G=ref, D=None, G_ema=ref, augment_pipe=None, training_set_kwargs=None), protocol=protocol
        )
        b = render(generator_from_pickle(data), z, None, {}, seed)
        diff = (a - b).abs().max().item()
        worst = max(worst, diff)
        print(
            f"{'persistence pickle, protocol ' + str(protocol) + ', restricted unpickler':<52} "
            f"{tuple(b.shape)!s:<20} {len(data) / 1e6:.1f} MB  max |diff| {diff:.3e}",
            flush=True,
        )
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkout", type=Path, help="local checkout of NVlabs/stylegan2-ada-pytorch")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full", action="store_true", help="also the FFHQ 1024 px architecture (batch 1)")
    args = ap.parse_args()
    if not (args.checkout / "training" / "networks.py").is_file():
        sys.exit(f"{args.checkout} is not a stylegan2-ada-pytorch checkout (no training/networks.py)")
    sys.path.insert(0, str(args.checkout.resolve()))
    warnings.filterwarnings("ignore")
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, CPU float32, truncation psi {PSI} cutoff {CUTOFF}, batch {args.batch}")
    worst = max(compare(name, kw, call, args.batch, args.seed) for name, (kw, call) in CONFIGS.items())
    first = next(iter(CONFIGS.values()))[0]
    worst = max(worst, compare_pickle(first, args.batch, args.seed))
    if args.full:
        name, kw, call = FULL
        worst = max(worst, compare(name, kw, call, 1, args.seed))
    print(f"largest max |diff| over all rows: {worst:.3e}")


if __name__ == "__main__":
    main()
