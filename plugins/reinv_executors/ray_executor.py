"""``ray``: each step a Ray task, on an existing Ray cluster or on one started for the run.

    --executor "ray"                          the cluster of RAY_ADDRESS or of `ray start` on this
                                              machine; without one, a local cluster for the run
    --executor "ray[address=HOST:PORT]"       a cluster's head (ray://HOST:PORT: Ray Client)
    --executor "ray[address=local,cpus=2]"    a private cluster on this machine, stopped at the end

Needs the ``ray`` extra: ``pip install "reinv-bench[ray]"``. A step asks for one GPU when the
device is CUDA (``--device cuda``: the task sees its GPU as cuda:0), and ``cpus_per_task`` CPUs
(also its torch threads). ``slots`` tasks are kept in flight (default: the cluster's GPUs, or
CPUs / cpus_per_task). Every node needs reinv-bench and the same plugins installed, and the
workdir must be a filesystem all nodes see (NFS, ...): the start runs a probe task on every node
that reads a file the driver wrote and writes one the driver must read, and stops with an error
saying so otherwise. Ray's own task retries are off: a task whose worker died (killed, out of
memory, node lost) is retried once by the driver. A local cluster gets the directories of the
plugin modules given with ``-p`` on its workers' PYTHONPATH; on an existing cluster, make them
importable on every node. Worker logs stay in Ray's session folder (/tmp/ray/session_latest/logs
on each node). A Ray already initialised in this process (``ray.init`` in a notebook) is used as
it is and left connected; otherwise the executor disconnects at the end and stops a cluster it
started. Ctrl-C cancels the running tasks (``ray.cancel(force=True)``).

``address=auto`` does what ``ray.init()`` does: connect to a running cluster when there is one,
start a local one otherwise (it says so on stderr). A RAY_ADDRESS that cannot be reached is an
error rather than a silent local run.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from concurrent.futures import Future
from pathlib import Path

from reinv_bench import hookimpl
from reinv_bench.api import ConfigError, Executor, Param

from ._remote import RemoteTraceback, cuda_device, first_line, set_threads, worker_pythonpath

EXTRA = 'pip install "reinv-bench[ray]"'


def call(threads: int, fn, *args):
    """Run ``fn(*args)`` with ``threads`` torch threads (0: as the process has them)."""
    set_threads(threads)
    return fn(*args)


def probe(directory: str, token: str) -> tuple[str, str, bool, str]:
    """On a node: whether the driver's probe file is visible here; leaves one for the driver.
    Returns (host, the file written, seen, error)."""
    host = socket.gethostname()
    mine = f".ray-probe-{token}-{host}-{os.getpid()}"
    try:
        seen = (Path(directory) / f".ray-probe-{token}-driver").read_text() == token
    except OSError:
        seen = False
    try:
        (Path(directory) / mine).write_text(token)
        error = ""
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return host, mine, seen, error


def read_probe(path: Path) -> str | None:
    """The driver's read of a node's probe file (None: not visible here)."""
    try:
        return path.read_text()
    except OSError:
        return None


class Ray(Executor):
    name = "ray"
    params = {
        "address": Param(
            "auto",
            "auto (RAY_ADDRESS, else the cluster `ray start` made on this machine, else a local "
            "cluster for the run), HOST:PORT or ray://HOST:PORT, or local (start a cluster here)",
        ),
        "cpus": Param(
            0, "CPUs of a cluster started here with address=local (0: all of this machine's)", low=0
        ),
        "cpus_per_task": Param(1, "CPUs each task reserves, and its torch threads", low=1),
        "slots": Param(
            0,
            "tasks kept in flight (0: the cluster's GPUs for a CUDA run, else its CPUs / cpus_per_task)",
            low=0,
        ),
    }

    def __init__(self, config=None, budget: str = "paper") -> None:
        super().__init__(config, budget)
        try:
            import ray
        except ImportError:
            raise ConfigError(f"executor ray needs the ray package, not installed here: {EXTRA}") from None
        if self.config.cpus and self.config.address != "local":
            raise ConfigError("ray: cpus= sizes a cluster started here; give it with address=local")
        self.ray = ray
        self.slots = self.config.slots or 1
        self.owner = False  # this executor called ray.init: it disconnects (and stops a local cluster)
        self.refs: dict[Future, object] = {}
        self.options: dict[str, object] = {}

    def start(self, env) -> None:
        ray = self.ray
        cuda = cuda_device("ray", env.device, "task")
        if not ray.is_initialized():
            self._init(env)
            self.owner = True
        try:
            res = ray.cluster_resources()
            if cuda and not res.get("GPU"):
                raise ConfigError("ray: the device is CUDA but the Ray cluster has no GPUs; use --device cpu")
            per = self.config.cpus_per_task
            self.slots = self.config.slots or max(
                1, int(res.get("GPU", 0)) if cuda else int(res.get("CPU", 1) // per)
            )
            self.options = {"num_cpus": per, "num_gpus": 1 if cuda else 0, "max_retries": 0}
            self.remote = ray.remote(call)
            self._check_shared(env.workdir)
        except BaseException:
            self.close()
            raise

    def _init(self, env) -> None:
        """``ray.init`` as Ray users expect: the cluster at the address; for ``auto``, the running one
        (RAY_ADDRESS, ``ray start``) or, when none is reachable, a local one started for this run."""
        address = self.config.address
        quiet = {"log_to_driver": False, "logging_level": "WARNING"}
        if address != "local":
            try:
                self.ray.init(address=address, **quiet)
                return
            except Exception as exc:  # noqa: BLE001 - one line, what to do
                if not isinstance(exc, ConnectionError) or address != "auto" or os.environ.get("RAY_ADDRESS"):
                    raise ConfigError(
                        f"ray: cannot connect to a Ray cluster at address={address} ({first_line(exc)}); "
                        "check the address (and RAY_ADDRESS) and that this Ray version matches the cluster's"
                    ) from None
            _note(
                "ray: no running Ray cluster reachable (RAY_ADDRESS unset, none from `ray start` here): "
                "starting a local one for this run, stopped at its end"
            )
        kwargs: dict[str, object] = {"num_cpus": self.config.cpus or None, "include_dashboard": False}
        path = worker_pythonpath(env.plugins)
        if path:
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        try:
            self.ray.init(address="local", **quiet, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one line, what to do
            raise ConfigError(f"ray: cannot start a local Ray cluster ({first_line(exc)})") from None

    def _check_shared(self, workdir: str) -> None:
        """Every node reads a file the driver wrote in the workdir and writes one it must read."""
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = uuid.uuid4().hex[:12]
        mine = Path(workdir) / f".ray-probe-{token}-driver"
        mine.write_text(token)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        task = ray.remote(probe)
        try:
            refs = [
                task.options(
                    num_cpus=0,
                    max_retries=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                ).remote(workdir, token)
                for n in nodes
            ]
            try:
                results = ray.get(refs, timeout=300)
            except ray.exceptions.GetTimeoutError:
                raise ConfigError(
                    "ray: the workdir probe did not run on every node within 300 s; check that "
                    "the nodes have free workers and reinv-bench installed"
                ) from None
            for host, name, seen, error in results:
                problem = (
                    "cannot write there: " + error
                    if error
                    else "does not see the driver's file"
                    if not seen
                    else ""
                    if read_probe(Path(workdir) / name) == token
                    else "wrote a file the driver does not see"
                )
                if problem:
                    raise ConfigError(
                        f"ray: the workdir {workdir} is not a filesystem all Ray nodes see (node "
                        f"{host} {problem}); put --workdir on a shared filesystem (NFS, ...)"
                    )
        finally:
            for path in Path(workdir).glob(f".ray-probe-{token}-*"):
                path.unlink(missing_ok=True)

    def submit(self, fn, *args) -> Future:
        ref = self.remote.options(**self.options).remote(self.config.cpus_per_task, fn, *args)
        fut: Future = Future()
        self.refs[fut] = ref
        ref.future().add_done_callback(lambda done: self._settle(fut, done))
        return fut

    def _settle(self, fut: Future, done: Future) -> None:
        self.refs.pop(fut, None)
        try:
            fut.set_result(done.result())
        except BaseException as exc:  # noqa: BLE001 - handed to the driver
            fut.set_exception(self._unwrap(exc))

    def _unwrap(self, exc: BaseException) -> BaseException:
        """The step's own exception rather than Ray's wrapper (as the ``local`` executor gives it)."""
        from ray.exceptions import RayTaskError

        cause = getattr(exc, "cause", None)
        if isinstance(exc, RayTaskError) and isinstance(cause, BaseException):
            cause.__cause__ = RemoteTraceback(getattr(exc, "traceback_str", "") or str(exc))
            return cause
        return exc

    def lost(self, exc: BaseException) -> bool:
        from ray import exceptions as e

        return isinstance(
            exc,
            (
                e.WorkerCrashedError,
                e.NodeDiedError,
                e.OutOfMemoryError,
                e.LocalRayletDiedError,
                e.ObjectLostError,
            ),
        )

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for ref in list(self.refs.values()):
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001, S110 - already finished or gone
                    pass
        self.refs.clear()
        if self.owner and self.ray.is_initialized():
            self.ray.shutdown()
        self.owner = False


def _note(text: str) -> None:
    print(f"[reinv-bench] {text}", file=sys.stderr, flush=True)


@hookimpl
def register_executors():
    return [Ray]
