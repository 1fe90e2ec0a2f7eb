"""StyleGAN2-ADA generator in plain PyTorch (the network; ``_stylegan2_load`` reads NVIDIA's pickles safely,
``stylegan2_weights`` registers the FFHQ generator).

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

import copy
import math

import torch

from ._stylegan2_ops import (  # noqa: F401 - re-exported: the ops stay importable from here
    ACTIVATIONS,
    _conv,
    bias_act,
    modulated_conv2d,
    normalize_2nd_moment,
    setup_filter,
    upfirdn2d,
    upsample2d,
)

# ---------------------------------------------------------------------------------------------
# Layers (names, arguments and parameters as in stylegan2-ada-pytorch's training/networks.py)


class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: weights stored divided by ``lr_multiplier``
    and scaled by ``lr_multiplier / sqrt(in_features)`` at run time."""

    def __init__(
        self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1, bias_init=0
    ):
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

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        bias=True,
        activation="linear",
        up=1,
        down=1,
        resample_filter=(1, 3, 3, 1),
        conv_clamp=None,
        channels_last=False,
        trainable=True,
    ):
        super().__init__()
        if down != 1:
            raise NotImplementedError("Conv2dLayer: down-sampling (discriminator only) is not implemented")
        self.activation = activation
        self.up = up
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
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
    def __init__(
        self,
        z_dim,
        c_dim,
        w_dim,
        num_ws,
        num_layers=8,
        embed_features=None,
        layer_features=None,
        activation="lrelu",
        lr_multiplier=0.01,
        w_avg_beta=0.995,
    ):
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
            setattr(
                self,
                f"fc{i}",
                FullyConnectedLayer(
                    features[i], features[i + 1], activation=activation, lr_multiplier=lr_multiplier
                ),
            )
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
    def __init__(
        self,
        in_channels,
        out_channels,
        w_dim,
        resolution,
        kernel_size=3,
        up=1,
        use_noise=True,
        activation="lrelu",
        resample_filter=(1, 3, 3, 1),
        conv_clamp=None,
        channels_last=False,
    ):
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
            noise = (
                torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
                * self.noise_strength
            )
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            fused_modconv=fused_modconv,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(torch.nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        w_dim,
        resolution,
        img_channels,
        is_last,
        architecture="skip",
        resample_filter=(1, 3, 3, 1),
        conv_clamp=None,
        use_fp16=False,
        fp16_channels_last=False,
        **layer_kwargs,
    ):
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
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim=w_dim,
                resolution=resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels,
            out_channels,
            w_dim=w_dim,
            resolution=resolution,
            conv_clamp=conv_clamp,
            **layer_kwargs,
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels, out_channels, kernel_size=1, bias=False, up=2, resample_filter=resample_filter
            )

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
                x = self.conv1(
                    x, next(w_iter), fused_modconv=fused_modconv, gain=math.sqrt(0.5), **layer_kwargs
                )
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
    def __init__(
        self,
        w_dim,
        img_resolution,
        img_channels,
        channel_base=32768,
        channel_max=512,
        num_fp16_res=0,
        **block_kwargs,
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of 2, at least 4, not {img_resolution}")
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(round(math.log2(img_resolution)))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                use_fp16=res >= fp16_resolution,
                **block_kwargs,
            )
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
    def __init__(  # the reference's signature, mutable defaults included
        self,
        z_dim,
        c_dim,
        w_dim,
        img_resolution,
        img_channels,
        mapping_kwargs={},  # noqa: B006
        synthesis_kwargs={},  # noqa: B006
    ):
        super().__init__()
        self.init_kwargs = copy.deepcopy(
            dict(
                z_dim=z_dim,
                c_dim=c_dim,
                w_dim=w_dim,
                img_resolution=img_resolution,
                img_channels=img_channels,
                mapping_kwargs=dict(mapping_kwargs),
                synthesis_kwargs=dict(synthesis_kwargs),
            )
        )
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs
        )

    def forward(
        self, z, c=None, truncation_psi=1, truncation_cutoff=None, noise_mode="random", **synthesis_kwargs
    ):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, **synthesis_kwargs)


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
