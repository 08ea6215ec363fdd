"""Reproducible benchmarks of mllp_trio beside python-hl7, hl7apy and a plain-Python floor.

Run ``python -m benchmarks --help``; see ``benchmarks/README.md`` for what each number means.
"""
