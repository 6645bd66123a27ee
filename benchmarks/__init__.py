"""The benchmarks, one scenario module each: ``python -m benchmarks NAME [--smoke]``.

``python -m benchmarks`` lists them. What each measures, its targets and its last recorded
figures are in ``docs/benchmarks.md``. They reach the engine only through
``pytest_seatrace.engine.instrument`` and start their services only through ``services``.
"""
