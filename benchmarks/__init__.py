"""Benchmarks, each printing a ratio against a baseline in the same run (results: RESULTS.md).

Run them as modules from the repo root, e.g. ``.venv/bin/python -m benchmarks.bench_release``:
they import the test fixtures as ``tests.fixtures``.
"""
