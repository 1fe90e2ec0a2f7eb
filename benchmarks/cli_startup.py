"""Start-up time of the command line (issue 28, item 6: target `--help` under 1.5 s on two cores).

    python benchmarks/cli_startup.py [--repeat 5]

Prints the median wall time of `reinv-bench --help` (with the cache of the plugins' commands
warm, and without one: then it loads the plugins), `reinv-bench run --help`, `reinv-bench
plugins` and of importing `reinv_bench.cli` alone, each in a fresh process, and whether torch was
imported. Run it on a quiet machine: the figures scale with the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

PROBE = "import sys; from reinv_bench.cli import main; sys.argv = ['reinv-bench', *sys.argv[1:]]; main()"
COMMANDS = {
    "import reinv_bench.cli": [sys.executable, "-c", "import sys, reinv_bench.cli"],
    "reinv-bench --help": [sys.executable, "-c", PROBE, "--help"],
    "reinv-bench --help, no cache": [sys.executable, "-c", PROBE, "--help"],
    "reinv-bench run --help": [sys.executable, "-c", PROBE, "run", "--help"],
    "reinv-bench plugins": [sys.executable, "-c", PROBE, "plugins"],
}


def torch_loaded(cmd: list[str], env: dict | None) -> bool:
    code = cmd[2].replace("main()", "\ntry:\n    main()\nexcept SystemExit:\n    pass")
    code += "\nimport sys as _s; _s.stderr.write('TORCH=%s' % ('torch' in _s.modules))"
    out = subprocess.run([cmd[0], "-c", code, *cmd[3:]], capture_output=True, text=True, env=env)
    return "TORCH=True" in out.stderr


def environment(label: str) -> dict | None:
    """ "no cache": an empty cache folder (reinv_bench.cli.plugin_commands), new for each run."""
    return {**os.environ, "XDG_CACHE_HOME": tempfile.mkdtemp()} if "no cache" in label else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    subprocess.run(COMMANDS["reinv-bench --help"], capture_output=True, check=True)  # the cache, warm
    for label, cmd in COMMANDS.items():
        times = []
        for _ in range(args.repeat):
            env = environment(label)
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True, env=env)
            times.append(time.perf_counter() - t)
        loaded = torch_loaded(cmd, environment(label))
        print(f"{label:<30} {statistics.median(times):6.2f} s  torch imported: {loaded}")


if __name__ == "__main__":
    main()
