"""Speed and memory benchmarks that print tables (benchmarks/README.md): a package, run from the
repository root as ``python -m benchmarks.dit_step ...`` (``python benchmarks/dit_step.py`` runs
itself that way; scripts/__init__.py says why), imported as ``from benchmarks import dit_step``
by scripts/gpu_check.py and the tests."""
