"""``inline``: run every step in the driver process, one after another (the default)."""

from __future__ import annotations

from reinv_bench import hookimpl
from reinv_bench.api import Executor


class Inline(Executor):
    name = "inline"

    def map(self, fn, items):
        for item in items:
            try:
                yield item, fn(item), None
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - reported per step by the runner
                yield item, None, exc


@hookimpl
def register_executors():
    return [Inline]
