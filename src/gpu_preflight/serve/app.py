"""The local page's HTTP answers, without sockets: `App.handle(method, path, body)` -> Response.

JSON API (docs/serve.md):
  GET  /api/status            version, offline or not, whether Hub search is available
  GET  /api/engines           each engine's kinds and declared options (the page builds its controls from them)
  GET  /api/catalog           the built-in models
  GET  /api/gpus              the GPU table (data/gpus.json)
  GET  /api/hub?q=TEXT        Hub model search (huggingface_hub, online only)
  POST /api/estimate          the keys of gpu_preflight.api.estimate(); answers exactly `preflight estimate --json`
  POST /api/point             the same keys; the report at this workload without the searches (largest context
                              / batch, suggestions), its stack and the command lines: what the page redraws per change
  POST /api/curve             the same keys plus "sweep": the memory curve (estimators/sweep.py) and its SVG
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from gpu_preflight.errors import PreflightError, UsageError

MAX_BODY_BYTES = 64 * 1024
MAX_TEXT = 500
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/page.js": ("page.js", "text/javascript; charset=utf-8"),
          "/static/page.css": ("page.css", "text/css; charset=utf-8")}
REQUEST_KEYS = ("model", "engine", "gpus", "torch", "revision", "offline")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200, elapsed_ms: float | None = None) -> Response:
    headers = {"X-Elapsed-Ms": f"{elapsed_ms:.1f}"} if elapsed_ms is not None else {}
    return Response(status, "application/json", json.dumps(data).encode("utf-8"), headers)


def error_response(exc: PreflightError, status: int = 400) -> Response:
    return json_response({"error": exc.message, "hint": exc.hint}, status)


class LRU:
    def __init__(self, size: int) -> None:
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


class App:
    """`offline`: never contact the Hub. `calibration`: where measured runs are (--calibration).
    `hub_search(text) -> [{"id": ...}]` replaces the huggingface_hub search (tests)."""

    def __init__(self, *, offline: bool = False, calibration: str | None = None,
                 hub_search: Callable[[str], list[dict[str, Any]]] | None = None) -> None:
        self.offline = offline
        self.calibration = calibration
        self.hub_search = hub_search
        self.sources = LRU(32)
        self.curves = LRU(64)

    # ---- routing

    def handle(self, method: str, target: str, body: bytes = b"") -> Response:
        url = urlsplit(target)
        path = url.path
        try:
            if method == "GET" and path in STATIC:
                return self.static(*STATIC[path])
            if method == "GET" and path == "/favicon.ico":
                return Response(204, "image/x-icon", b"")
            if method == "GET" and path == "/static/plot-hover.js":
                from gpu_preflight.render.plot import HOVER_JS

                return Response(200, "text/javascript; charset=utf-8", HOVER_JS.encode())
            gets = {"/api/status": self.status, "/api/engines": self.engines, "/api/catalog": self.catalog,
                    "/api/gpus": self.gpus}
            if method == "GET" and path in gets:
                return json_response(gets[path]())
            if method == "GET" and path == "/api/hub":
                return json_response(self.hub((parse_qs(url.query).get("q") or [""])[0]))
            posts = {"/api/estimate": self.estimate, "/api/point": self.point, "/api/curve": self.curve}
            if path in posts:
                if method != "POST":
                    return json_response({"error": f"{path} takes POST with a JSON body"}, 405)
                t0 = time.perf_counter()
                data = posts[path](parse_body(body))
                return json_response(data, elapsed_ms=(time.perf_counter() - t0) * 1000)
            if path.startswith("/api/") or path in STATIC or path.startswith("/static/"):
                return json_response({"error": f"no {method} {path}"}, 404 if method == "GET" else 405)
            return json_response({"error": f"no page at {path}"}, 404)
        except PreflightError as exc:
            return error_response(exc)

    def static(self, name: str, content_type: str) -> Response:
        text = resources.files("gpu_preflight.serve").joinpath("static", name).read_bytes()
        return Response(200, content_type, text)

    # ---- GET

    def status(self) -> dict[str, Any]:
        from gpu_preflight import __version__

        hub = self.hub_available()
        return {"version": __version__, "offline": self.offline, "hub_search": hub}

    def hub_available(self) -> dict[str, Any]:
        if self.hub_search is not None:
            return {"available": True, "reason": None}
        if self.offline:
            return {"available": False, "reason": "offline (preflight serve --offline): catalog models and local paths only"}
        import importlib.util
        import os

        from gpu_preflight.models.hub import hub_settings

        if hub_settings(os.environ).offline:
            return {"available": False, "reason": "offline (HF_HUB_OFFLINE is set): catalog models and local paths only"}
        if importlib.util.find_spec("huggingface_hub") is None:
            from gpu_preflight.hints import install_extra

            return {"available": False, "reason": f"huggingface_hub is not installed: {install_extra('hub')}"}
        return {"available": True, "reason": None}

    def engines(self) -> dict[str, Any]:
        from gpu_preflight.estimators.engines import all_engines
        from gpu_preflight.estimators.sweep import available
        from gpu_preflight.serve.commands import ENGINE_COMMAND_KEYS

        return {"engines": [{"name": e.name, "kinds": list(e.kinds), "summary": e.summary,
                             "default_for": list(e.default_for), "selected_by": list(e.selected_by),
                             "sweeps": available(e), "options": [option_json(o) for o in e.options]}
                            for e in all_engines()],
                "command_keys": [list(k) for k in ENGINE_COMMAND_KEYS]}

    def catalog(self) -> dict[str, Any]:
        from gpu_preflight.models.catalog import default_catalog

        kinds = {"diffusion": "pipeline"}
        return {"models": [{"id": e.id, "kind": kinds.get(e.kind, e.kind), "hf_repo": e.hf_repo,
                            "aliases": list(e.aliases)}
                           for e in sorted(default_catalog().entries, key=lambda e: (e.kind, e.id))]}

    def gpus(self) -> dict[str, Any]:
        from gpu_preflight.compatibility import facts

        return {"gpus": [{"id": g["id"], "name": g["name"], "memory_bytes": facts.gpu_memory_bytes(g),
                          "architecture": g.get("architecture"), "segment": g.get("segment")}
                         for g in sorted(facts.gpus(), key=lambda g: (g.get("segment") or "", g["name"]))]}

    def hub(self, text: str) -> dict[str, Any]:
        text = text.strip()[:100]
        state = self.hub_available()
        if not state["available"]:
            return {"available": False, "reason": state["reason"], "models": []}
        if not text:
            return {"available": True, "reason": None, "models": []}
        search = self.hub_search or hub_search
        try:
            models = search(text)
        except PreflightError as exc:
            return {"available": False, "reason": exc.message, "models": []}
        return {"available": True, "reason": None, "models": models[:20]}

    # ---- POST

    def request(self, data: dict[str, Any], extra: tuple[str, ...] = ()) -> dict[str, Any]:
        """The body as the normalized request: model, engine, gpus, torch, revision, offline, options."""
        from gpu_preflight.api import given_options

        model = data.get("model")
        if not isinstance(model, str) or not model.strip() or len(model) > MAX_TEXT:
            raise UsageError("give \"model\": a catalog name, a folder, a .gguf or org/name (at most 500 characters)")
        gpus = data.get("gpus")
        gpus = [gpus] if isinstance(gpus, str) else gpus or []
        if not isinstance(gpus, list) or not all(isinstance(g, str) and 0 < len(g) <= 100 for g in gpus) or len(gpus) > 8:
            raise UsageError("\"gpus\" is a list of up to 8 GPU names like \"rtx-4090\" or \"h100:2\"")
        for key in ("engine", "torch", "revision"):
            if data.get(key) is not None and (not isinstance(data[key], str) or len(data[key]) > 100):
                raise UsageError(f"\"{key}\" is a short text")
        if data.get("offline") not in (None, True, False):
            raise UsageError("\"offline\" is true or false")
        options = {k: v for k, v in data.items() if k not in REQUEST_KEYS and k not in extra}
        return {"model": model.strip(), "engine": data.get("engine") or None, "gpus": gpus,
                "torch": data.get("torch") or None, "revision": data.get("revision") or None,
                "offline": True if (self.offline or data.get("offline")) else None,
                "asked_offline": bool(data.get("offline")),
                "options": options, "given": given_options(options)}

    def source(self, req: dict[str, Any]):
        from gpu_preflight.api import load_source

        key = (req["model"], req["revision"], req["offline"])
        src = self.sources.get(key)
        if src is None:
            src = load_source(req["model"], revision=req["revision"], offline=req["offline"])
            if src.origin in ("catalog", "hub"):
                self.sources.put(key, src)
        return src

    def plan(self, req: dict[str, Any]):
        from gpu_preflight.api import prepare_estimate

        return prepare_estimate(self.source(req), engine=req["engine"], gpu_specs=req["gpus"], torch=req["torch"],
                                given=req["given"])

    def estimate(self, data: dict[str, Any]) -> dict[str, Any]:
        from gpu_preflight.api import report_for

        return report_for(self.plan(self.request(data)))

    def point(self, data: dict[str, Any]) -> dict[str, Any]:
        from gpu_preflight.api import report_for
        from gpu_preflight.estimators.sweep import stack_of
        from gpu_preflight.serve.commands import command_lines

        t0 = time.perf_counter()
        req = self.request(data)
        plan = self.plan(req)
        report = report_for(plan, point_only=True)
        return {"report": report, "stack": stack_of(report), "commands": command_lines(req, report, plan.engine),
                "engine": plan.engine.name, "kind": plan.kind, "elapsed_ms": round((time.perf_counter() - t0) * 1000, 1)}

    def curve(self, data: dict[str, Any]) -> dict[str, Any]:
        from gpu_preflight.api import curve_for, report_for
        from gpu_preflight.estimators.sweep import current_value, default_quantity, parse_spec, swept_dests
        from gpu_preflight.render.plot import render_svg

        spec = data.get("sweep")
        if spec is not None and (not isinstance(spec, str) or len(spec) > 200):
            raise UsageError("\"sweep\" is a text like \"context\" or \"side=512:2048\"")
        at = data.get("at")
        if at is not None and (not isinstance(at, int) or isinstance(at, bool) or not 0 < at <= 10_000_000):
            raise UsageError("\"at\" is the user's own value of the swept quantity, a whole number")
        req = self.request(data, extra=("sweep", "at"))
        plan = self.plan(req)
        q = parse_spec(spec)[0] or default_quantity(plan.engine, {}, plan.source)
        skip = swept_dests(q, plan.engine, req["given"])
        key = json.dumps([req["model"], req["revision"], req["offline"], plan.engine.name, req["gpus"], req["torch"],
                          spec, sorted((k, repr(v)) for k, v in plan.opts.items() if k not in skip)])
        cached = self.curves.get(key)
        if cached is None:
            curve = curve_for(plan, given=req["given"], spec=spec, calibration=self.calibration)
            self.curves.put(key, curve)
            if at:
                curve = {**curve, "current": at}
        elif at:
            curve = {**cached, "current": at}
        else:
            curve = dict(cached)  # the same curve; only the user's own point moved
            name = curve["quantity"]["name"]
            curve["current"] = current_value(name, plan.engine, dict(plan.opts), {}, plan.source) or \
                current_value(name, plan.engine, dict(plan.opts), report_for(plan, point_only=True), plan.source)
        return {"curve": curve, "svg": render_svg(curve), "cached": cached is not None}


def option_json(o) -> dict[str, Any]:
    """An engine option as the page builds its control from it."""
    kind = "bool" if o.action == "store_true" else "list" if o.action == "append" else \
        "choice" if o.choices else "int" if getattr(o.type, "__name__", "").endswith("_int") else \
        "number" if getattr(o.type, "__name__", "") == "number" else "text"
    default = o.default if isinstance(o.default, (str, int, float, bool, type(None))) else str(o.default)
    return {"flag": o.flag, "dest": o.dest, "help": o.help, "kind": kind, "default": default,
            "choices": list(o.choices) if o.choices else None, "metavar": o.metavar}


def parse_body(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise UsageError("request body too large")
    try:
        data = json.loads(body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError):
        raise UsageError("the body is not JSON", hint='e.g. {"model": "qwen2.5-7b-instruct", "gpus": ["rtx-4090"]}') from None
    if not isinstance(data, dict):
        raise UsageError("the body is a JSON object of the estimate keys")
    return data


def hub_search(text: str, timeout_s: float = 8.0) -> list[dict[str, Any]]:
    """Models on the Hub whose id contains `text`, most downloaded first (huggingface_hub)."""
    from gpu_preflight.errors import ModelSourceError

    out: list[dict[str, Any]] = []
    failure: list[str] = []

    def run() -> None:
        try:
            from huggingface_hub import HfApi

            for m in HfApi().list_models(search=text, sort="downloads", limit=20):
                out.append({"id": str(m.id), "downloads": getattr(m, "downloads", None),
                            "pipeline_tag": getattr(m, "pipeline_tag", None)})
        except Exception as exc:  # noqa: BLE001 - any network / client failure becomes one message
            failure.append(f"{type(exc).__name__}: {exc}"[:300])

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise ModelSourceError(f"Hub search timed out after {timeout_s:g} s (offline?)")
    if failure:
        raise ModelSourceError(f"Hub search failed: {failure[0]}")
    return out
