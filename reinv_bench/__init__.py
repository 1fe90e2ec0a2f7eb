"""reinv-bench: a benchmark harness for model-inversion attacks and defenses."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reinv-bench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

import pluggy

from reinv_bench.engine.threads import passive_waiting

# before torch loads OpenMP: idle threads sleep instead of spinning (reinv_bench.engine.threads)
passive_waiting()

hookimpl = pluggy.HookimplMarker("reinv_bench")
"""Decorate a plugin's hook implementations with this marker."""


def run(request=None, **kwargs):
    """Run a grid from Python, as ``reinv-bench run`` does: see ``reinv_bench.engine.runner.run``."""
    from reinv_bench.engine.runner import run as _run

    return _run(request, **kwargs)


__all__ = ["__version__", "hookimpl", "run"]
