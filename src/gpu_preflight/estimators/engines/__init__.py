"""One module per engine: what that engine allocates, with its sources and measured constants.

Each engine module declares `ENGINES` (a tuple of `base.Engine`: its name, the model kinds it
serves, its own flags and the function that builds the report). `all_engines()` is the registry
`commands/estimate.py` builds its flags from. A module listed here that does not exist yet is
skipped, so an engine can be named before it is built.
"""

from __future__ import annotations

import importlib

from gpu_preflight.estimators.engines.base import Engine

MODULES = ("transformers", "vllm", "llama_cpp", "diffusers", "training")


def all_engines() -> list[Engine]:
    out: list[Engine] = []
    for name in MODULES:
        try:
            module = importlib.import_module(f"gpu_preflight.estimators.engines.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gpu_preflight.estimators.engines.{name}":
                raise
            continue
        out.extend(getattr(module, "ENGINES", ()))
    return out


def model_kind(source) -> str:
    """"pipeline" (diffusers components), "gguf" (a GGUF file) or "llm"."""
    if source.kind == "diffusion" or source.components:
        return "pipeline"
    return "gguf" if source.origin == "gguf" else "llm"


def default_engine(kind: str, engines: list[Engine] | None = None, given: dict | None = None) -> Engine:
    """The engine an option selects (e.g. --train), else the default for the model's kind."""
    engines = engines or all_engines()
    for e in engines:
        if kind in e.kinds and any((given or {}).get(dest) is not None for dest in e.selected_by):
            return e
    for e in engines:
        if kind in e.default_for:
            return e
    for e in engines:
        if kind in e.kinds:
            return e
    raise LookupError(f"no engine serves {kind}")


def find_engine(name: str, engines: list[Engine] | None = None) -> Engine | None:
    return next((e for e in engines or all_engines() if name == e.name or name in e.aliases), None)
