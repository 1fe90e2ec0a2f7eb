"""The StyleGAN2-ADA generator files as registered weights entries (``stylegan2-ffhq``): the prior
of ``ppa`` and ``ifgmi``. Registers no attack: the network is ``_stylegan2_net``, the safe reader
of NVIDIA's pickles ``_stylegan2_load``, the entries ``_stylegan.GENERATORS``.

``reinv-bench weights add stylegan2-ffhq ffhq.pkl`` converts the pickle once, through the
restricted unpickler (no code from it runs, every size checked before it is allocated), to
``stylegan2-ffhq.pt`` (init kwargs, state dict, the pickle's SHA-256; read back with
``weights_only=True``). Only the 1024-px FFHQ architecture is accepted under that name
(``_stylegan2_load.ENTRY_ARCHITECTURES``); another generator is refused in one line saying how it
differs and which entry it fits, if any (the registry has a fixed list of entries, so a different
generator cannot be added under a name of its own).
"""

from __future__ import annotations

from reinv_bench import hookimpl

from ._stylegan import GENERATORS


@hookimpl
def register_weights():
    return list(GENERATORS.values())
