"""Rendering stored results: tables, plots, reports, exports, sites and protocol cards."""
