"""Fuzz targets of mllp_trio, shared by the Hypothesis tests and the atheris runner.

Every target is a function of one ``bytes`` argument that raises
``AssertionError`` (or an unexpected exception) when an invariant breaks:

* ``targets.TARGETS`` maps each target name to its function;
* the Hypothesis tests (``tests/test_fuzz_*.py``) call the same functions,
  and the structured checkers behind them, with generated inputs;
* ``python -m fuzz TARGET`` (or ``python fuzz/run.py TARGET``) runs one
  target coverage-guided under atheris, seeded from ``tests/corpus/TARGET/``.

Nothing here is part of the installed package.
"""
