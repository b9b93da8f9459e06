"""The test suite. Shared helpers are in :mod:`tests.fixtures`; benchmarks import them too."""
