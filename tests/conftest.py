"""Shared fixtures: a tiny in-test attack plugin, hermetic registries and workdirs, and the one
way tests invoke the CLI in-process (``invoke``)."""

from __future__ import annotations

import os

import pytest
import torch

from reinv_bench import hookimpl
from reinv_bench.api import Architecture, Attack, Classifier, Inversion, Param


def pytest_configure(config):
    """One thread count for every run a test starts, whatever the machine's load (``run`` alone
    would pick the free cores: reinv_bench.engine.threads): one per xdist worker (two workers share two
    cores), else torch's default; subprocesses inherit it through REINV_BENCH_THREADS. (In a hook,
    not at import: a worker process that imports this module as a plugin keeps its own count.)"""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
    os.environ.setdefault("REINV_BENCH_THREADS", str(torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration/ is in the `integration` tier (pyproject: the README's
    `python -m pytest` leaves it out; .ci/run runs it)."""
    for item in items:
        if item.path.parent.name == "integration":
            item.add_marker(pytest.mark.integration)


def _maybe_die(steps: int) -> None:
    """Executor tests: kill this (worker) process once (REINV_TEST_KILL_ONCE=marker file), or
    always for steps=5 (REINV_TEST_KILL_ALWAYS)."""
    import os
    import signal
    from pathlib import Path

    once = os.environ.get("REINV_TEST_KILL_ONCE")
    if once and not Path(once).exists():
        Path(once).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("REINV_TEST_KILL_ALWAYS") and steps == 5:
        os.kill(os.getpid(), signal.SIGKILL)


class MeanAttack(Attack):
    """A test attack: the prior is the mean public image; inversion nudges it towards each class
    with a few gradient steps on the target's cross-entropy. Fast and deterministic."""

    name = "meanimg"
    prior_params = ("blur",)
    params = {"blur": Param(0, "unused prior parameter"), "steps": Param(3, "gradient steps")}

    def prepare(self, ctx, kind):
        return {"mean": ctx.data.public.x.to("cpu").mean(0)}  # a tensor, or ImageFiles decoded

    def invert(self, ctx, priors, classes):
        _maybe_die(self.config.steps)
        prior = priors["meanimg"]
        x = (
            prior["mean"]
            .expand(len(classes), *prior["mean"].shape)
            .clone()
            .to(ctx.device)
            .requires_grad_(True)
        )
        y = torch.tensor(classes, device=ctx.device)
        for _ in range(self.config.steps):
            loss = torch.nn.functional.cross_entropy(ctx.target(x), y)
            (g,) = torch.autograd.grad(loss, x)
            x = (x - 0.1 * g.sign()).clamp(-1, 1).detach().requires_grad_(True)
        return Inversion(x.detach().cpu(), y.cpu(), {"queries": self.config.steps * len(classes)})


class TinyNet(Architecture):
    """A test architecture: one strided convolution and a linear feature layer (fast anywhere)."""

    name = "tiny"

    def build(self, num_classes, image_shape):
        blocks = [
            torch.nn.Sequential(torch.nn.Conv2d(image_shape[0], 8, 3, stride=4, padding=1), torch.nn.ReLU()),
            torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(128, 32)),
        ]
        return Classifier(blocks, torch.nn.Linear(32, num_classes), 32, num_classes, freeze_point=1)


# module-level hooks: this module is the test plugin, in-process (``load(extra=...)``) and in a
# subprocess (``PYTHONPATH=tests reinv-bench -p conftest ...``)
@hookimpl
def register_attacks():
    return [MeanAttack]


@hookimpl
def register_architectures():
    return [TinyNet()]


@pytest.fixture
def registry():
    import sys

    from reinv_bench.registry.lookup import load

    return load(extra=(sys.modules[__name__],))


@pytest.fixture
def workdir(tmp_path):
    return tmp_path / "work"


def cli_invoke(*args, plugins=(), extra=(), registry=None, ok: bool = False):
    """Run ``reinv-bench ARGS`` in this process through click's CliRunner and return its result.

    ``plugins``: -p values; ``extra``: plugin modules loaded in-process (this conftest module is
    ``sys.modules["conftest"]``); ``registry``: a ready registry instead (its plugin manager too);
    ``ok``: assert the exit code is 0 (the output and exception in the message otherwise)."""
    from click.testing import CliRunner

    from reinv_bench.cli import State, cli

    state = State(tuple(plugins))
    if extra:
        from reinv_bench.registry.lookup import load

        registry = load(extra=tuple(extra))
    if registry is not None:
        state._pm, state._registry = registry.pm, registry
    result = CliRunner().invoke(cli, [str(a) for a in args], obj=state)
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="session")
def invoke():
    """``invoke(*args, plugins=(), extra=(), registry=None, ok=False)``: see ``cli_invoke``."""
    return cli_invoke


def chromium():
    """A headless Chromium driven by selenium through Debian's chromedriver, as (webdriver, service,
    options), or a skip that says what is missing."""
    import shutil

    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    for exe in ("chromium", "chromedriver"):
        if shutil.which(exe) is None:
            pytest.skip(f"{exe} is not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    return webdriver, Service(shutil.which("chromedriver")), options
