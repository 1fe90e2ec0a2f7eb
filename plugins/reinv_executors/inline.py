"""``inline``: run every step in the driver process, one after another (the default).

Steps compute with this process's torch thread count (torch's default, or ``run --threads N``);
``local`` workers compute with the same count, so both write the same bytes under a cache key.
"""

from __future__ import annotations

from concurrent.futures import Future

from reinv_bench import hookimpl
from reinv_bench.api import Executor


class Inline(Executor):
    name = "inline"

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - reported per step by the driver; Ctrl-C propagates
            fut.set_exception(exc)
        return fut


@hookimpl
def register_executors():
    return [Inline]
