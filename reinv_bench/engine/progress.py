"""What a run shows while it works: a rich display (steps and the current step's progress) or,
with ``--quiet`` or when not on a terminal, one log line per step, and a heartbeat line per
running step every ``$REINV_BENCH_HEARTBEAT`` seconds (default 60; 0: none) with its progress,
so a CI or Slurm log shows a long step is alive."""

from __future__ import annotations

import sys
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from reinv_bench.contract.config import env_number


class Reporter:
    """Silent reporter; the base of the others."""

    def start(self, total: int) -> None: ...
    def expect(self, more: int) -> None: ...  # the total grows (or shrinks) as the run learns what it must do
    def step_start(self, label: str) -> None: ...
    def step_progress(self, done: int, total: int) -> None: ...
    def step_end(self, label: str, status: str, seconds: float = 0.0, error: str | None = None) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def heartbeat_seconds() -> float:
    """Seconds between the log's lines about running steps (``REINV_BENCH_HEARTBEAT``, default 60)."""
    return env_number("REINV_BENCH_HEARTBEAT", 60.0, above=True)


class LogReporter(Reporter):
    def __init__(self, stream=None, heartbeat: float | None = None) -> None:
        self.stream = stream or sys.stderr
        self.n = self.total = 0
        self.heartbeat = heartbeat_seconds() if heartbeat is None else heartbeat
        self.running: dict[str, float] = {}  # label -> when it started
        self.latest: tuple[int, int] | None = None  # progress of the in-process step (the latest started)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        """Every ``heartbeat`` seconds: one line per running step, with its progress and the time left."""
        while not self._stop.wait(self.heartbeat):
            with self._lock:  # (step_end writes under it too: no beat of a step after its end line)
                running, latest, now = list(self.running.items()), self.latest, time.monotonic()
                for i, (label, t0) in enumerate(running):
                    if now - t0 < self.heartbeat:  # started since the last beat: its own line said so
                        continue
                    tail = ""
                    if latest and latest[1] and i == len(running) - 1:
                        done, total = latest
                        left = (now - t0) * (total - done) / done if done else None
                        tail = f", {done}/{total} ({100 * done / total:.0f}%)" + (
                            f", about {_duration(left)} left" if left is not None else ""
                        )
                    self._w(f"[reinv-bench] still running {label}: {_duration(now - t0)}{tail}")

    def step_start(self, label: str) -> None:
        with self._lock:
            self.running[label] = time.monotonic()
            self.latest = None

    def step_progress(self, done: int, total: int) -> None:
        self.latest = (done, total)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _w(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, total: int) -> None:
        self.total = total
        self._w(f"[reinv-bench] {total} step(s) to run (cells evaluated included)")
        if self.heartbeat > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, daemon=True, name="reinv-heartbeat")
            self._thread.start()

    def expect(self, more: int) -> None:
        self.total += more

    def step_end(self, label: str, status: str, seconds: float = 0.0, error: str | None = None) -> None:
        with self._lock:
            self.running.pop(label, None)
            self.n += 1
            tail = f" ({seconds:.1f}s)" if status == "done" else ""
            self._w(f"[{self.n}/{self.total}] {status:7s} {label}{tail}" + (f": {error}" if error else ""))

    def message(self, text: str) -> None:
        self._w(f"[reinv-bench] {text}")


class RichReporter(Reporter):
    def __init__(self) -> None:

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.overall = self.progress.add_task("steps", total=0)
        self.tasks: dict[str, int] = {}  # running steps (several with a parallel executor)
        self._last = 0.0

    def start(self, total: int) -> None:
        self.progress.update(self.overall, total=total)
        self.progress.start()

    def expect(self, more: int) -> None:
        task = next(t for t in self.progress.tasks if t.id == self.overall)
        self.progress.update(self.overall, total=(task.total or 0) + more)

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
