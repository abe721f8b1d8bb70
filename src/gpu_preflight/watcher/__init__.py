"""`preflight watch -- CMD`: run a command and record the GPU memory of its process tree.

Layers, one direction (see STYLE.md):
  gpu.py, proctree.py, stream.py  collect (NVML, /proc or psutil, the child's output)
  sampler.py                      turns one tick into a plain sample record and streams it
  analysis.py, diagnose.py        pure functions on those records (peaks, phases, diagnosis)
  record.py                       the JSON record (schema, loading a partial stream)
  render_text.py / render_html.py / render_png.py   the reports
  runner.py                       runs the child, forwards signals, ties the above together

`phase.py` is the tiny API a watched script may use: `with gpu_preflight.phase("load"): ...`.
"""
