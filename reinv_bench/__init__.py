"""reinv-bench: a benchmark harness for model-inversion attacks and defenses."""

import pluggy

from reinv_bench.engine.threads import passive_waiting
from reinv_bench.version import __version__

# before torch loads OpenMP: idle threads sleep instead of spinning (reinv_bench.engine.threads)
passive_waiting()

hookimpl = pluggy.HookimplMarker("reinv_bench")
"""Decorate a plugin's hook implementations with this marker."""


def run(request=None, **kwargs):
    """Run a grid from Python, as ``reinv-bench run`` does: see ``reinv_bench.engine.runner.run``."""
    from reinv_bench.engine.runner import run as _run

    return _run(request, **kwargs)


__all__ = ["__version__", "hookimpl", "run"]
