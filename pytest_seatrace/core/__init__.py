"""The race's rules and figures: config, records, the result, judging. No pytest, no I/O.

Everything here is plain data and arithmetic, so the engine (which measures), the plugin (which
asks and reports) and the benchmarks share one definition of what a race found and whether it
passed.
"""
