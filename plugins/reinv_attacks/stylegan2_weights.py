"""The StyleGAN2-ADA generator files as registered weights entries (``stylegan2-ffhq``): the prior
of ``ppa`` and ``ifgmi``. Registers no attack: the network is ``_stylegan2_net``, the safe reader
of NVIDIA's pickles ``_stylegan2_load``, the entries ``_stylegan.GENERATORS``.

``reinv-bench weights add stylegan2-ffhq ffhq.pkl`` converts the pickle once, through the
restricted unpickler (no code from it runs), to ``stylegan2-ffhq.pt`` (init kwargs, state dict,
the pickle's SHA-256; read back with ``weights_only=True``).
"""

from __future__ import annotations

from reinv_bench import hookimpl

from ._stylegan import GENERATORS


@hookimpl
def register_weights():
    return list(GENERATORS.values())
