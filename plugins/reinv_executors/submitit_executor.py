"""``submitit``: each step a Slurm job, through submitit.

    --executor "submitit[partition=gpu,time=720]"            Slurm; one GPU a job with --device cuda
    --executor "submitit[partition=cpu,cpus_per_task=4]"     Slurm, CPU steps with 4 threads each
    --executor "submitit[cluster=local]"                     jobs as processes on this machine (tests)

Needs the ``slurm`` extra: ``pip install "reinv-bench[slurm]"``. Every step (and every cell's
evaluation) is one job; the steps that become ready together are submitted as one job array
(``sbatch --array``), and ``slots`` jobs are kept in flight. A job asks for ``gpus_per_node`` GPUs
(default: one when the device is CUDA; the step runs on cuda:0), ``cpus_per_task`` CPUs (also its
torch threads), ``time`` minutes and ``mem_gb``. The workdir must be on a filesystem the nodes
share: jobs read their dependencies and write their artifacts there, and submitit keeps its
pickles and each job's stdout/stderr under WORKDIR/slurm-logs/RUN/JOB_ID. Jobs run the
driver's Python with the directories of the plugin modules given with ``-p`` on their
PYTHONPATH. Ctrl-C cancels the jobs in flight (``scancel``). A job that ends without a result
(killed, out of memory, node failure, preempted) is retried once by the driver; one that ran out
of its time limit is not (it would again). ``cluster=local`` runs each job as a process here
(every job sees GPU 0: on a GPU machine use the ``local`` executor), ``cluster=debug`` in this
process, one at a time.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import pickle
import shlex
import signal
import sys
import threading
import time
import traceback
import uuid
from concurrent.futures import Future
from pathlib import Path

from reinv_bench import hookimpl
from reinv_bench.api import ConfigError, Executor, Param

from ._remote import RemoteTraceback, cuda_device, first_line, set_threads, worker_pythonpath

EXTRA = 'pip install "reinv-bench[slurm]"'


def call(threads: int, fn, *args):
    """In the job: ``fn(*args)`` with ``threads`` torch threads, its exception returned as a value
    (submitit keeps only a traceback's text) so the driver sees the step's own exception."""
    try:
        set_threads(threads)
        return "ok", fn(*args), ""
    except Exception as exc:  # noqa: BLE001 - re-raised in the driver
        tb = traceback.format_exc()
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        return "raised", exc, tb


class Submitit(Executor):
    name = "submitit"
    params = {
        "cluster": Param(
            "slurm",
            "slurm; local (each job a process on this machine: tests) or debug (in this process)",
            choices=("slurm", "local", "debug"),
        ),
        "partition": Param("", "Slurm partition (empty: the cluster's default)"),
        "gpus_per_node": Param(0, "GPUs per job (0: one when the device is CUDA, else none)", low=0),
        "cpus_per_task": Param(1, "CPUs per job, and its torch threads", low=1),
        "time": Param(720, "time limit of a job, in minutes", low=1),
        "mem_gb": Param(0.0, "memory per job in GB (0: the partition's default)", low=0),
        "slots": Param(
            0,
            "jobs kept in flight (0: 32 on Slurm, this machine's CPUs / cpus_per_task with "
            "cluster=local, 1 with debug)",
            low=0,
        ),
    }

    def __init__(self, config=None, budget: str = "paper") -> None:
        super().__init__(config, budget)
        try:
            import submitit
        except ImportError:
            raise ConfigError(
                f"executor submitit needs the submitit package, not installed here: {EXTRA}"
            ) from None
        from submitit.core.utils import UncompletedJobError

        self.submitit = submitit
        self.uncompleted = UncompletedJobError
        cluster, per = self.config.cluster, self.config.cpus_per_task
        self.slots = (
            self.config.slots
            or {"slurm": 32, "debug": 1}.get(cluster)
            or max(1, (os.cpu_count() or 1) // per)
        )
        self.poll = 1.0 if cluster == "slurm" else 0.1  # seconds between looks at the jobs in flight
        self.executor = None
        self.jobs: dict[Future, object] = {}  # in flight
        self.queue: list[tuple[Future, object, tuple]] = []  # submitted, not yet given to submitit
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, env) -> None:
        cuda = cuda_device("submitit", env.device, "job")
        cluster = self.config.cluster
        if (
            cluster == "local"
            and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            and threading.current_thread() is threading.main_thread()
        ):
            # submitit cancels a local job with SIGINT; a driver started in the background by a
            # shell ignores SIGINT, and its jobs would inherit that and outlive the cancel
            signal.signal(signal.SIGINT, signal.default_int_handler)
        run = f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"  # local job ids (pids) recur
        self.folder = Path(env.workdir) / "slurm-logs" / run
        python = shlex.quote(sys.executable)
        path = worker_pythonpath(env.plugins)
        if path:
            python = f"env PYTHONPATH={shlex.quote(path)} {python}"
        try:
            ex = self.submitit.AutoExecutor(
                folder=self.folder / "%j", cluster=cluster, slurm_python=python, local_python=python
            )
        except Exception as exc:  # noqa: BLE001 - one line, what to do
            first = first_line(exc)
            raise ConfigError(
                f"submitit: cannot use cluster={cluster} here ({first}); cluster=slurm needs Slurm "
                "(srun, sbatch) on this machine, cluster=local runs the jobs here"
            ) from None
        params: dict[str, object] = {
            "name": "reinv-bench",
            "timeout_min": self.config.time,
            "nodes": 1,
            "tasks_per_node": 1,
            "cpus_per_task": self.config.cpus_per_task,
            "gpus_per_node": self.config.gpus_per_node or int(cuda),
        }
        if self.config.mem_gb:
            params["mem_gb"] = self.config.mem_gb
        if self.config.partition:
            params["slurm_partition"] = self.config.partition
        ex.update_parameters(**params)
        self.executor = ex
        # debug jobs run in this process: leave its thread count alone
        self.threads = 0 if cluster == "debug" else self.config.cpus_per_task

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        with self.lock:
            self.queue.append((fut, fn, args))
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="submitit-jobs", daemon=True)
            self.thread.start()
        self.wake.set()
        return fut

    def _loop(self) -> None:
        """Submit what was queued (one array per batch), hand finished jobs' results to their futures."""
        while not self.stop.is_set():
            if self.wake.wait(self.poll):
                self.wake.clear()
                time.sleep(0.02)  # the driver is queueing the rest of a ready batch
            with self.lock:
                batch, self.queue = self.queue, []
            if batch:
                self._submit(batch)
            for fut, job in list(self.jobs.items()):
                if self.stop.is_set():
                    return
                try:
                    done = job.done()
                except Exception as exc:  # noqa: BLE001 - the job's state could not be read
                    self.jobs.pop(fut, None)
                    fut.set_exception(exc)
                    continue
                if done:
                    self.jobs.pop(fut, None)
                    self._finish(fut, job)

    def _submit(self, batch) -> None:
        fns = [functools.partial(call, self.threads, fn, *args) for _, fn, args in batch]
        try:
            jobs = self.executor.submit_array(fns)
        except Exception as exc:  # noqa: BLE001 - every step of the batch fails with the reason
            for fut, _, _ in batch:
                fut.set_exception(RuntimeError(f"submitit: submitting the job failed: {exc}"))
            return
        for (fut, _, _), job in zip(batch, jobs):
            self.jobs[fut] = job

    def _finish(self, fut: Future, job) -> None:
        uncompleted = self.uncompleted
        try:
            if self.config.cluster == "local" and not job.paths.result_pickle.exists():
                # the process has exited: no slow shared filesystem to wait for (job.result() waits 15 s)
                raise uncompleted(f"Job {job.job_id} has not produced any output (state: {job.state})")
            kind, value, tb = job.result()
        except uncompleted as exc:  # no result: killed, out of memory, timed out, node failure
            head = " ".join(str(exc).splitlines()[:2])
            fut.set_exception(uncompleted(f"{head}; logs: {job.paths.stderr}"))
            return
        except Exception as exc:  # noqa: BLE001 - e.g. the job could not unpickle the step
            fut.set_exception(exc)
            return
        if kind == "ok":
            fut.set_result(value)
        else:
            value.__cause__ = RemoteTraceback(tb)
            fut.set_exception(value)

    def lost(self, exc: BaseException) -> bool:
        return isinstance(exc, self.uncompleted) and "TIMEOUT" not in str(exc)

    def close(self, cancel: bool = False) -> None:
        self.stop.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout=5 if cancel else 60)
            self.thread = None
        with self.lock:
            queued, self.queue = self.queue, []
        jobs, self.jobs = self.jobs, {}
        for fut, job in jobs.items():
            if cancel:
                try:
                    job.cancel(check=False)
                except Exception:  # noqa: BLE001, S110 - already finished or gone
                    pass
            fut.cancel()
        for fut, _, _ in queued:
            fut.cancel()
        self.stop.clear()


@hookimpl
def register_executors():
    return [Submitit]
