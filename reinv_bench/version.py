"""The installed distribution's version (``reinv-bench --version``, every stored row)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reinv-bench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
