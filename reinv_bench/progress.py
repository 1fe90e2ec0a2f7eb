"""What a run shows while it works: a rich display (steps and the current step's progress) or,
with ``--quiet`` or when not on a terminal, one log line per step."""

from __future__ import annotations

import sys
import time


class Reporter:
    """Silent reporter; the base of the others."""

    def start(self, total: int) -> None: ...
    def step_start(self, label: str) -> None: ...
    def step_progress(self, done: int, total: int) -> None: ...
    def step_end(self, label: str, status: str, seconds: float = 0.0, error: str | None = None) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class LogReporter(Reporter):
    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.n = self.total = 0

    def _w(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, total: int) -> None:
        self.total = total
        self._w(f"[reinv-bench] {total} step(s) to run")

    def step_end(self, label: str, status: str, seconds: float = 0.0, error: str | None = None) -> None:
        self.n += 1
        tail = f" ({seconds:.1f}s)" if status == "done" else ""
        self._w(f"[{self.n}/{self.total}] {status:7s} {label}{tail}" + (f": {error}" if error else ""))

    def message(self, text: str) -> None:
        self._w(f"[reinv-bench] {text}")


class RichReporter(Reporter):
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console, transient=False,
        )
        self.overall = self.progress.add_task("steps", total=0)
        self.tasks: dict[str, int] = {}  # running steps (several with a parallel executor)
        self._last = 0.0

    def start(self, total: int) -> None:
        self.progress.update(self.overall, total=total)
        self.progress.start()

    def step_start(self, label: str) -> None:
        self.tasks[label] = self.progress.add_task(f"  {label}", total=None)

    def step_progress(self, done: int, total: int) -> None:  # from the in-process step (the latest)
        now = time.monotonic()
        if self.tasks and (now - self._last > 0.1 or done == total):
            self._last = now
            self.progress.update(next(reversed(self.tasks.values())), completed=done, total=total)

    def step_end(self, label: str, status: str, seconds: float = 0.0, error: str | None = None) -> None:
        if label in self.tasks:
            self.progress.remove_task(self.tasks.pop(label))
        self.progress.advance(self.overall)
        if status != "cached":
            colour = {"done": "green", "failed": "red"}.get(status, "yellow")
            tail = f" ({seconds:.1f}s)" if status == "done" else ""
            self.console.print(f"[{colour}]{status}[/] {label}{tail}" + (f": {error}" if error else ""))

    def message(self, text: str) -> None:
        self.console.print(text)

    def close(self) -> None:
        self.progress.stop()
