"""Plugins: the pluggy manager, typed lookups and spec parsing."""
