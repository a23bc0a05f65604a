"""Coverage-guided fuzzing (atheris) of the parsers that face the network or the admin.

`python -m tests.fuzz --help` runs it; tests/test_fuzz_short.py runs every target briefly in the suite.
Layout: ``project`` (every import of the code under test), ``targets/`` (one module per target),
``engine`` (the worker process), ``runner`` (the command), ``known`` (found, unfixed bugs),
``crashes/`` (their minimal reproducers), ``seeds/`` (inputs recorded from real targets by ``capture``).
"""
