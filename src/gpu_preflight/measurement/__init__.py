"""Live measurement on the local GPU (`preflight measure`, bench/calibrate.py).

The parent never imports torch: it starts `python -m gpu_preflight.measurement.child SPEC OUT`,
which appends one JSON line per finished phase to OUT, so a crash or kill of the child still
leaves every phase it finished.
"""
