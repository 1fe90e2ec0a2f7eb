"""StyleGAN2-ADA generator in plain PyTorch, and a loader for NVIDIA's pickles that runs none of their code.

**The generator.** ``Generator(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={},
synthesis_kwargs={})`` has the module and parameter names, the constructor arguments and the
call API of NVlabs' stylegan2-ada-pytorch ``training/networks.py`` (Karras et al., "Training
Generative Adversarial Networks with Limited Data", NeurIPS 2020), so the state dict of its
``G_ema`` loads by name:

- ``G.mapping(z, c, truncation_psi=1, truncation_cutoff=None)`` -> ws ``(N, G.num_ws, w_dim)``:
  2nd-moment normalisation of z (and of the label embedding), ``num_layers`` fully connected
  layers with equalised learning rate (``lr_multiplier`` 0.01, lrelu with gain sqrt(2)), the
  broadcast to ``num_ws``, truncation towards the ``G.mapping.w_avg`` buffer (the first
  ``truncation_cutoff`` ws only, when given); in training mode ``w_avg`` is tracked (beta 0.995).
- ``G.synthesis(ws, noise_mode='random'|'const'|'none', force_fp32=False, fused_modconv=None)``
  -> images ``(N, img_channels, R, R)`` in about [-1, 1]: a learned 4x4 constant, per block an
  up-sampling modulated convolution (``conv0``) and a modulated convolution (``conv1``), both
  demodulated, with per-layer noise (``noise_const`` buffers scaled by ``noise_strength``), the
  bias-activation (lrelu gain sqrt(2), clamped to ``conv_clamp``), and the ``skip`` architecture:
  a ``torgb`` per block whose output is added to the FIR-up-sampled image of the block before
  (``orig`` and ``resnet`` are supported too). Up-sampling is the 2x zero insertion followed by
  the [1,3,3,1] FIR filter (``upfirdn2d``), written here with ``conv2d``/``conv_transpose2d``: no
  custom CUDA kernels, so autograd, ``torch.compile`` and autocast see ordinary ops.
- ``G(z, c, truncation_psi=1, truncation_cutoff=None, noise_mode='random')``: both; ``c`` may be
  None when ``c_dim == 0``. ``G.num_ws``, ``G.init_kwargs`` (what ``save_generator`` stores).

Deliberate differences from the reference: the blocks the reference runs in float16
(``num_fp16_res``: the four highest resolutions of ``ffhq.pkl``) do so here only on CUDA (on CPU
they stay float32); ``channels_last`` memory formats are not used (layout only); noise and the
skip sum are added out of place. The equivalence script ``benchmarks/stylegan2_equivalence.py``
runs both on the same random weights and reports the largest pixel difference: 0 in float32 on CPU
(FFHQ's 1024 px architecture included, truncation psi 0.5 cutoff 8), 3.8e-6 with
``fused_modconv=False`` (the reference multiplies 1x1 convolutions as matrices).

**Loading NVIDIA's pickles safely.** ``ffhq.pkl`` and the other stylegan2-ada-pytorch pickles
store each network as a ``torch_utils.persistence`` record: ``_reconstruct_persistent_obj(meta)``
with the *source code of the module* (``meta['module_src']``), the class name and the object's
state; ``pickle.load`` would ``exec`` that source. ``load_pickle`` reads them with a restricted
unpickler (pure-Python ``pickle._Unpickler``) that resolves only

- ``torch_utils.persistence._reconstruct_persistent_obj`` -> a ``PersistentRecord`` holding the
  class name, the state and the source *as a string* (never compiled or run);
- tensor rebuilding: ``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``,
  ``_rebuild_parameter_with_state`` (empty state only), ``torch._tensor._rebuild_from_type_v2``
  (Tensor/Parameter only) and ``torch.storage._load_from_bytes`` (its bytes read by
  ``torch.load(weights_only=True)``), torch dtypes;
- plain values: ``collections.OrderedDict``, ``builtins.set``/``frozenset``,
  ``_codecs.encode`` (latin-1 only), ``dnnlib.util.EasyDict`` (read as a dict), numpy scalars,
  dtypes and arrays (``numpy.core.multiarray.scalar``/``_reconstruct``,
  ``numpy.core.numeric._frombuffer``, ``numpy.dtype``, ``numpy.ndarray``; ``numpy._core`` alike),

and refuses every other global, every persistent id and every object state (``BUILD``) on
anything but numpy dtypes/arrays with ``UnsafePickleError`` (one line naming what was refused).
``generator_from_pickle(path)`` builds the native ``Generator`` from the ``G_ema`` record's init
arguments and loads its parameters and buffers strictly by name and shape (a 265 MB pickle of
two 1024 px generators: 4 s on CPU).

**Weights.** ``reinv-bench weights add stylegan2-ffhq ffhq.pkl`` (the file from
https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl, which PPA uses)
converts once, through the restricted unpickler, to ``stylegan2-ffhq.pt``: a torch file of the
init kwargs, the state dict and the pickle's SHA-256, read back with ``weights_only=True``
(``load_generator``). NVIDIA publishes no hash, so the SHA-256 of the converted file is recorded
when first added and checked on every use. ``save_generator`` writes the same format for any
generator (tests register tiny random ones).

**Memory.** The 1024 px synthesis of ``ffhq.pkl`` at batch 16, with gradients to ws as PPA
needs, is meant to fit one 80 GB GPU in float32 and under bf16 autocast. Not measured: no GPU
was available to this change, so peak figures on a GPU are still to be taken. What is known: the
storages autograd keeps for the backward pass in float32 (eval mode, fused modulated
convolutions), counted without allocating anything on the meta device by
``saved_activation_bytes``, total 31.0 GiB at batch 16 (2.0 GiB per 16x32x1024x1024 tensor;
the parameters are 116 MiB); the peak adds the transient tensors of the forward and backward of
the largest block (several such 2 GiB tensors). Under bf16 autocast the convolutions' outputs
are bf16 but the bias/noise additions promote back to float32, so expect less than a halving.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import io
import math
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

FORMAT = "reinv-bench/stylegan2-ada-generator/1"  # the "format" field of a converted file


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


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1, padding=0,
              flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
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
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
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


ACTIVATIONS: dict[str, tuple[Any, float, float]] = {  # name: (function(x, alpha), default alpha, default gain)
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


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", alpha: float | None = None,
             gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
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


def _conv(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, padding: int = 0,
          groups: int = 1) -> torch.Tensor:
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


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None,
                     demodulate: bool = True, fused_modconv: bool = True) -> torch.Tensor:
    """StyleGAN2's convolution with per-sample weights ``weight * styles`` (input channels
    scaled), demodulated to unit norm per output channel, noise added after the convolution.
    ``fused_modconv``: one grouped convolution over the batch; else the input is scaled
    before and the output after an ordinary convolution (same result)."""
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:  # the reference's pre-normalisation against fp16 overflow
        weight = weight * (1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
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


# ---------------------------------------------------------------------------------------------
# Layers (names, arguments and parameters as in stylegan2-ada-pytorch's training/networks.py)


class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: weights stored divided by ``lr_multiplier``
    and scaled by ``lr_multiplier / sqrt(in_features)`` at run time."""

    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1, bias_init=0):
        super().__init__()
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        if bias:
            self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init)))
        else:
            self.register_parameter("bias", None)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(torch.nn.Module):
    """Plain (unmodulated) convolution with optional up-sampling: the ``resnet`` skip path."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False, trainable=True):
        super().__init__()
        if down != 1:
            raise NotImplementedError("Conv2dLayer: down-sampling (discriminator only) is not implemented")
        self.activation = activation
        self.up = up
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = ACTIVATIONS[activation][2]
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        b = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            if b is None:
                self.register_parameter("bias", None)
            else:
                self.bias = torch.nn.Parameter(b)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", b)

    def forward(self, x, gain=1):
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = _conv(x, w, self.resample_filter, up=self.up, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation=activation,
                                                        lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("truncation needs w_avg (w_avg_beta is None)")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x


class SynthesisLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation][2]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="random", fused_modconv=True, gain=1):
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', not {noise_mode!r}")
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture="skip",
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, use_fp16=False, fp16_channels_last=False,
                 **layer_kwargs):
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', not {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, **layer_kwargs):
        w_iter = iter(ws.unbind(dim=1))
        on_cuda = ws.device.type == "cuda"
        dtype = torch.float16 if self.use_fp16 and not force_fp32 and on_cuda else torch.float32
        if fused_modconv is None:
            fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        else:
            x = x.to(dtype)
            if self.architecture == "resnet":
                y = self.skip(x, gain=math.sqrt(0.5))
                x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
                x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=math.sqrt(0.5), **layer_kwargs)
                x = y + x
            else:
                x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
                x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(torch.nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 **block_kwargs):
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of 2, at least 4, not {img_resolution}")
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(round(math.log2(img_resolution)))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, use_fp16=res >= fp16_resolution,
                                   **block_kwargs)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws, **block_kwargs):
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be (N, {self.num_ws}, {self.w_dim}), not {tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        i = 0
        for res in self.block_resolutions:  # a block's toRGB shares its w with the next block's first conv
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, i, block.num_conv + block.num_torgb), **block_kwargs)
            i += block.num_conv
        return img


class Generator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, synthesis_kwargs={}):  # noqa: B006 - the reference's signature
        super().__init__()
        self.init_kwargs = copy.deepcopy(dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                              img_channels=img_channels, mapping_kwargs=dict(mapping_kwargs),
                                              synthesis_kwargs=dict(synthesis_kwargs)))
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, noise_mode="random", **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, **synthesis_kwargs)


# ---------------------------------------------------------------------------------------------
# Restricted unpickling of stylegan2-ada-pytorch pickles


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that cannot be read without running code, or cannot be read at all (one line)."""


@dataclass
class PersistentRecord:
    """A ``torch_utils.persistence`` object as plain data: its class, its state (``__dict__``:
    ``_parameters``, ``_buffers``, ``_modules``, ``_init_args``, ``_init_kwargs``, ...) and the
    module source it carried, kept as text and never run."""

    class_name: str
    state: dict
    module_src: str = field(repr=False, default="")
    version: Any = None

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    def __setstate__(self, state):  # BUILD is refused before this; belt and braces
        raise UnsafePickleError("refused: object state for a persistence record")


def _reconstruct_persistent_obj(meta) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise UnsafePickleError("refused: a torch_utils.persistence record without the expected meta "
                                "(type 'class', class_name, state)")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise UnsafePickleError(f"refused: persistence record {meta['class_name']} has a {type(state).__name__} state")
    src = meta.get("module_src")
    return PersistentRecord(meta["class_name"], dict(state), src if isinstance(src, str) else "", meta.get("version"))


def _storage_from_bytes(b):
    if not isinstance(b, (bytes, bytearray)):
        raise UnsafePickleError("refused: torch.storage._load_from_bytes without bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            s = torch.load(io.BytesIO(bytes(b)), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - weights_only refusals and corrupt data alike
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            raise UnsafePickleError(f"refused: a tensor storage that torch.load(weights_only=True) cannot read "
                                    f"({type(exc).__name__}: {first})") from None
    if not isinstance(s, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise UnsafePickleError(f"refused: torch.storage._load_from_bytes gave a {type(s).__name__}, not a storage")
    return s


def _no_hooks(hooks, what):
    if hooks:
        raise UnsafePickleError(f"refused: {what} with backward hooks")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise UnsafePickleError(f"refused: a tensor rebuilt from a {type(storage).__name__}, not a storage")
    _no_hooks(backward_hooks, "a tensor")
    return torch._utils._rebuild_tensor_v2(storage, int(storage_offset), tuple(size), tuple(stride),
                                           bool(requires_grad), collections.OrderedDict(), metadata)


class _NotCallable:
    """A type the pickle may name (as an argument) but not call or instantiate."""

    def __init__(self, cls):
        self.cls = cls

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"refused: the pickle calls {self.cls.__module__}.{self.cls.__qualname__}")

    def __eq__(self, other):
        return other is self.cls or (isinstance(other, _NotCallable) and other.cls is self.cls)

    def __hash__(self):
        return hash(self.cls)


def _rebuild_parameter(data, requires_grad, backward_hooks=None):
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError("refused: a parameter rebuilt from something other than a tensor")
    _no_hooks(backward_hooks, "a parameter")
    return torch.nn.Parameter(data, bool(requires_grad))


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    if state:
        raise UnsafePickleError("refused: a parameter with Python attributes")
    return _rebuild_parameter(data, requires_grad, backward_hooks)


_REBUILDERS = (_rebuild_tensor_v2, _rebuild_parameter, _rebuild_parameter_with_state)


def _rebuild_from_type_v2(func, new_type, args, state):
    new_type = getattr(new_type, "cls", new_type)  # find_class hands types out as _NotCallable
    if func not in _REBUILDERS or new_type not in (torch.Tensor, torch.nn.Parameter) or state:
        raise UnsafePickleError("refused: torch._tensor._rebuild_from_type_v2 with another function, a tensor "
                                "subclass or Python attributes")
    return func(*args)


def _latin1(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("refused: _codecs.encode other than str to latin-1 bytes")
    return text.encode("latin1")


def _numpy_core(module, name):
    core = getattr(np, "_core", None) or np.core
    return getattr(getattr(core, module), name)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch", "Tensor"): torch.Tensor,  # only as _rebuild_from_type_v2's type argument: not callable via REDUCE
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1,
    ("dnnlib.util", "EasyDict"): dict,
    ("dnnlib", "EasyDict"): dict,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
}
_NUMPY_CORE = {("multiarray", "scalar"), ("multiarray", "_reconstruct"), ("numeric", "_frombuffer")}  # numpy[._]core.
_CLASSES_CALLABLE = {collections.OrderedDict, set, frozenset, dict, np.dtype}  # harmless to call with plain data


def _empty(state) -> bool:
    """Whether an object state sets nothing (None, {}, or a (dict, slots) pair of those)."""
    if state is None or (isinstance(state, dict) and not state):
        return True
    return isinstance(state, tuple) and len(state) == 2 and all(_empty(x) for x in state)


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickles tensors, plain values and ``torch_utils.persistence`` records, nothing else:
    every other global, persistent ids, and object state (BUILD) on anything but numpy
    dtypes/arrays raise ``UnsafePickleError``. Nothing from the file is imported or run."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str):
        if self.proto < 3 and self.fix_imports:  # Python 2 names (protocols 0-2), as pickle itself maps them
            import _compat_pickle

            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in _ALLOWED:
            obj = _ALLOWED[(module, name)]
        elif module.startswith(("numpy.core.", "numpy._core.")) and (module.split(".")[2], name) in _NUMPY_CORE:
            obj = _numpy_core(module.split(".")[2], name)
        elif module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            obj = getattr(torch, name)
        else:
            what = f"{module}.{name}"
            raise UnsafePickleError(f"refused: the pickle references {what}, which is not a tensor, a plain value "
                                    "or a torch_utils.persistence record (nothing from it was run)")
        if isinstance(obj, type) and obj not in _CLASSES_CALLABLE and obj is not np.ndarray:
            return _NotCallable(obj)
        return obj

    def persistent_load(self, pid):
        raise UnsafePickleError("refused: the pickle uses persistent ids (a torch.save file? read it with "
                                "torch.load(weights_only=True))")

    def _load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, (np.dtype, np.ndarray)):
            inst.__setstate__(state)
        elif not _empty(state):
            raise UnsafePickleError(f"refused: the pickle sets the state of a {type(inst).__name__}")

    dispatch[pickle.BUILD[0]] = _load_build


def load_pickle(path_or_bytes) -> Any:
    """The contents of a stylegan2-ada-pytorch pickle (or any pickle of tensors and plain
    values) with persistence records as ``PersistentRecord``; ``UnsafePickleError`` otherwise."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        f, where = io.BytesIO(path_or_bytes), "pickle"
    else:
        path = Path(path_or_bytes)
        if path.is_file() and path.stat().st_size == 0:
            raise UnsafePickleError(f"{path}: file is empty")
        f, where = open(path, "rb"), str(path)  # noqa: SIM115 - closed below
    try:
        return RestrictedUnpickler(f).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{where}: {exc}") from None
    except EOFError:
        raise UnsafePickleError(f"{where}: file is truncated (the pickle ends early)") from None
    except Exception as exc:  # noqa: BLE001 - malformed data: one line, whatever raised
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        if "truncated" in text or "ran out of input" in text.lower():
            raise UnsafePickleError(f"{where}: file is truncated (the pickle ends early)") from None
        raise UnsafePickleError(f"{where}: not a readable pickle ({type(exc).__name__}: {text})") from None
    finally:
        f.close()


def record_state_dict(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict (parameters and persistent buffers, by dotted name) of a record tree."""
    state = record.state
    out: dict[str, torch.Tensor] = collections.OrderedDict()
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for kind in ("_parameters", "_buffers"):
        for name, t in (state.get(kind) or {}).items():
            if t is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise UnsafePickleError(f"{record.class_name}.{name} is a {type(t).__name__}, not a tensor")
            out[prefix + name] = t.detach()
    for name, sub in (state.get("_modules") or {}).items():
        if sub is None:
            continue
        if not isinstance(sub, PersistentRecord):
            raise UnsafePickleError(f"{record.class_name}.{name} is a {type(sub).__name__}, not a persistence record")
        out.update(record_state_dict(sub, f"{prefix}{name}."))
    return out


_GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")


def _plain(v):
    """Init arguments as plain Python values (numpy scalars to numbers, tuples to lists)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise UnsafePickleError(f"unexpected init argument of type {type(v).__name__}")


def generator_kwargs(record: PersistentRecord) -> dict:
    """The ``Generator`` init kwargs of a record (its positional and keyword init arguments)."""
    if record.class_name != "Generator":
        raise UnsafePickleError(f"the record is a {record.class_name}, not a Generator")
    args = record.init_args
    if len(args) > len(_GENERATOR_ARGS):
        raise UnsafePickleError(f"Generator record with {len(args)} positional init arguments")
    kwargs = dict(zip(_GENERATOR_ARGS, args))
    kwargs.update(record.init_kwargs)
    unknown = set(kwargs) - set(_GENERATOR_ARGS)
    if unknown:
        raise UnsafePickleError(f"Generator record with unknown init arguments: {', '.join(sorted(unknown))}")
    return _plain(kwargs)


def generator_from_state(kwargs: dict, state: dict) -> Generator:
    """A native ``Generator`` built with ``kwargs``; ``state`` loaded strictly (every name, every shape)."""
    G = Generator(**kwargs)
    own = G.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or extra or bad:
        def few(names):
            return ", ".join(names[:4]) + (f" (+{len(names) - 4})" if len(names) > 4 else "")
        parts = [f"{what}: {few(names)}" for what, names in (("missing", missing), ("unexpected", extra),
                                                             ("shape differs", bad)) if names]
        raise UnsafePickleError(f"state dict does not fit Generator({kwargs}): {'; '.join(parts)}")
    G.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return G.eval().requires_grad_(False)


def generator_from_pickle(path_or_bytes, key: str = "G_ema") -> Generator:
    """The native generator of a stylegan2-ada-pytorch pickle (``G_ema`` by default), read with
    the restricted unpickler: no code from the pickle runs."""
    data = load_pickle(path_or_bytes)
    record = data.get(key) if isinstance(data, dict) else data
    if not isinstance(record, PersistentRecord):
        have = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise UnsafePickleError(f"no {key!r} network record in the pickle (it holds {have})")
    return generator_from_state(generator_kwargs(record), record_state_dict(record))


# ---------------------------------------------------------------------------------------------
# The safe file format (kwargs + state dict, loaded with weights_only=True)


def save_generator(G: Generator, path, **extra) -> Path:
    """Write ``G`` as a file ``load_generator`` reads with ``weights_only=True``."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    torch.save({"format": FORMAT, "kwargs": _plain(G.init_kwargs), "state_dict": state, **extra}, path)
    return path


def load_generator(path, device: str | torch.device = "cpu") -> Generator:
    """A generator written by ``save_generator`` or by ``weights add stylegan2-...`` (never unpickles code)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UnsafePickleError(f"{path} is not a converted StyleGAN2-ADA generator (format {FORMAT!r})")
    return generator_from_state(data["kwargs"], data["state_dict"]).to(device)


def convert_pickle(source, dest) -> Path:
    """Convert an NVIDIA pickle's ``G_ema`` into the safe format (also records the pickle's SHA-256)."""
    source = Path(source)
    G = generator_from_pickle(source)
    h = hashlib.sha256()
    with open(source, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return save_generator(G, dest, source={"filename": source.name, "sha256": h.hexdigest()})


def saved_activation_bytes(G: Generator, batch: int) -> int:
    """Bytes of the storages autograd saves for the backward pass of ``G.synthesis`` in float32
    (ws requiring grad, noise 'const'; the generator's own parameters and buffers excluded),
    counted on the meta device: nothing is allocated or computed. A lower bound of the peak:
    the weights, transient buffers and the backward's own tensors come on top."""
    meta = copy.deepcopy(G).to("meta").eval()
    own = {t.untyped_storage()._cdata for t in [*meta.parameters(), *meta.buffers()]}
    sizes: dict[int, int] = {}
    alive = []  # keeps the storages (and their ids) alive while counting

    def pack(t):
        if t.device.type == "meta" and t.untyped_storage()._cdata not in own:
            sizes[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
            alive.append(t)
        return t

    ws = torch.zeros(batch, G.num_ws, G.w_dim, device="meta", requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = meta.synthesis(ws, noise_mode="const", force_fp32=True)
    del out
    return sum(sizes.values())


# ---------------------------------------------------------------------------------------------
# reinv-bench registration (the only use of reinv_bench in this module)

try:
    from reinv_bench import hookimpl
    from reinv_bench.weights import WeightsFile, WeightsUnavailable
except ImportError:  # used on its own, without reinv-bench
    hookimpl = None


def _convert_for_weights(source: Path, dest: Path) -> None:
    try:
        convert_pickle(source, dest)
    except UnsafePickleError as exc:
        raise WeightsUnavailable(f"{exc} (not converted)") from None


if hookimpl is not None:
    WEIGHTS = WeightsFile(
        "stylegan2-ffhq", "stylegan2-ffhq.pt", "",
        "StyleGAN2-ADA FFHQ 1024 px generator (G_ema of NVIDIA's ffhq.pkl), the image prior of PPA; "
        "`weights add` converts the pickle without running its code",
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
        torch_dir="",
        convert=_convert_for_weights,
    )

    @hookimpl
    def register_weights():
        return [WEIGHTS]
