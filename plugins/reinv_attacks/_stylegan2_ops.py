"""The ops of the StyleGAN2-ADA generator in plain PyTorch (``_stylegan2_net`` builds the network
from them): FIR filtering with up-sampling (``upfirdn2d``), bias + activation, modulated
convolution; no custom CUDA kernels, so autograd, ``torch.compile`` and autocast see ordinary ops."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# Ops in plain PyTorch: FIR filtering with up-sampling, bias + activation, modulated convolution


def setup_filter(f, normalize: bool = True, gain: float = 1) -> torch.Tensor:
    """A float32 FIR filter from taps: 1-D taps become their outer product (kept 1-D, i.e.
    separable, from 8 taps on, as the reference stores it), normalised to unit DC gain."""
    f = torch.as_tensor(1 if f is None else f, dtype=torch.float32)
    if f.ndim == 0:
        f = f.reshape(1)
    if f.ndim == 1 and f.numel() < 8:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    return f * (gain ** (f.ndim / 2))


def _pads(padding) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from an int, (x, y) or (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return tuple(padding)


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding=0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Per channel: insert ``up - 1`` zeros after every pixel, pad (negative = crop), convolve
    with the FIR filter ``f`` (a true convolution unless ``flip_filter``), keep every ``down``-th
    pixel. Same definition as the reference's ``upfirdn2d``."""
    n, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(n, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x0, x1, y0, y1 = _pads(padding)
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    if f is None:
        f = torch.ones(1, 1, device=x.device)
    taps = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:  # conv2d correlates: flip for a convolution
        taps = taps.flip(list(range(taps.ndim)))
    if taps.ndim == 2:
        x = F.conv2d(x, taps.expand(c, 1, *taps.shape), groups=c)
    else:  # separable: rows, then columns
        x = F.conv2d(x, taps.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        x = F.conv2d(x, taps.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def _filter_size(f: torch.Tensor | None) -> int:
    return 1 if f is None else int(f.shape[-1])


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """2x FIR up-sampling, output exactly ``up`` times the input size (DC gain kept)."""
    fw = _filter_size(f)
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=[p0, p1, p0, p1], gain=up * up)


ACTIVATIONS: dict[
    str, tuple[Any, float, float]
] = {  # name: (function(x, alpha), default alpha, default gain)
    "linear": (lambda x, a: x, 0.0, 1.0),
    "relu": (lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": (lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": (lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": (lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": (lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": (lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply the activation, scale by the gain (the
    activation's default: sqrt(2) for lrelu), clamp to +-``clamp`` (None: no clamp)."""
    fn, def_alpha, def_gain = ACTIVATIONS[act]
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    x = fn(x, float(def_alpha if alpha is None else alpha))
    g = float(def_gain if gain is None else gain)
    if g != 1:
        x = x * g
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def _conv(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> torch.Tensor:
    """Convolution (cross-correlation with ``w``, as ``F.conv2d``) on the ``up``-times
    up-sampled input, padding counted on the up-sampled image. For ``up > 1`` the reference's
    order of operations: a strided transposed convolution with the (unflipped) kernel, then the
    FIR filter; for a 1x1 kernel the convolution first, then the FIR up-sampling."""
    if up == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    out_ch, in_per_group, kh, kw = w.shape
    fw = _filter_size(f)
    p0 = padding + (fw + up - 1) // 2
    p1 = padding + (fw - up) // 2
    if kw == 1 and kh == 1:
        return upfirdn2d(F.conv2d(x, w, groups=groups), f, up=up, padding=[p0, p1, p0, p1], gain=up * up)
    # conv_transpose2d takes (in, out/groups, k, k): swap the roles within each group
    wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
    wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
    p0 -= kw - 1
    p1 -= kw - up
    pt = max(min(-p0, -p1), 0)
    x = F.conv_transpose2d(x, wt, stride=up, padding=pt, groups=groups)
    return upfirdn2d(x, f, padding=[p0 + pt, p1 + pt, p0 + pt, p1 + pt], gain=up * up)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """StyleGAN2's convolution with per-sample weights ``weight * styles`` (input channels
    scaled), demodulated to unit norm per output channel, noise added after the convolution.
    ``fused_modconv``: one grouped convolution over the batch; else the input is scaled
    before and the output after an ordinary convolution (same result)."""
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:  # the reference's pre-normalisation against fp16 overflow
        weight = weight * (
            1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    w = dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # (N, O, I, k, k)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (N, O)
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = _conv(x, weight.to(x.dtype), resample_filter, up=up, padding=padding)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x
    if demodulate:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    x = _conv(x, w.reshape(-1, in_ch, kh, kw).to(x.dtype), resample_filter, up=up, padding=padding, groups=n)
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
