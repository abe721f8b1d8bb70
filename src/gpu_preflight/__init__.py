"""gpu-preflight: will this AI model run on this GPU machine, will it fit, and what to change."""

__version__ = "0.1.0"
