"""Stored results: the store, outcomes, statistics, judging, aggregation, published numbers."""
