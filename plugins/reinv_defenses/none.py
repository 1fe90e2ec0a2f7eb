"""``none``: the undefended baseline; plain cross-entropy training, no changes."""

from reinv_bench import hookimpl
from reinv_bench.api import Defense


class NoDefense(Defense):
    """Train the target with the scenario's recipe and plain cross-entropy."""

    name = "none"


@hookimpl
def register_defenses():
    return [NoDefense]
