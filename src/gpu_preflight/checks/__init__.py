"""The check catalog: coded, documented, pure functions of (snapshot, facts) -> findings.

Register a check with `@check("PF1xx", "slug", area=...)`; its docstring must have the sections
What it checks / Why it matters / Example / Fix / Sources (a test enforces it), which
`preflight explain PF1xx` prints.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

STATUSES = ("ok", "skip", "warn", "fail", "error")
SEVERITY = {"ok": 0, "skip": 0, "warn": 1, "fail": 2, "error": 3}
DOC_SECTIONS = ("What it checks", "Why it matters", "Example", "Fix", "Sources")
AREAS = ("driver", "gpu", "torch", "libraries", "environment", "host", "interconnect", "fleet")
SCOPES = ("node", "fleet")  # a node check judges one snapshot; a fleet check judges all nodes together


@dataclass
class Finding:
    code: str
    status: str
    title: str
    message: str
    fix: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    area: str = "driver"

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "status": self.status, "title": self.title, "message": self.message,
                "fix": self.fix, "area": self.area, "evidence": self.evidence}


@dataclass(frozen=True)
class Check:
    code: str
    name: str
    area: str
    title: str
    func: Callable[..., Any]
    scope: str = "node"

    @property
    def doc(self) -> str:
        return textwrap.dedent(self.func.__doc__ or "").strip()

    def sections(self) -> dict[str, str]:
        parts = re.split(r"^(%s):\s*$" % "|".join(DOC_SECTIONS), self.doc, flags=re.M)
        out = {}
        for i in range(1, len(parts) - 1, 2):
            out[parts[i]] = parts[i + 1].strip()
        return out


REGISTRY: dict[str, Check] = {}


def check(code: str, name: str, area: str, title: str, scope: str = "node"):
    def wrap(func):
        if code in REGISTRY:
            raise ValueError(f"duplicate check code {code}")
        REGISTRY[code] = Check(code, name, area, title, func, scope)
        return func

    return wrap


def all_checks() -> list[Check]:
    from gpu_preflight.checks import fleet, interconnect, platform, stack  # noqa: F401 - registers the checks

    return [REGISTRY[k] for k in sorted(REGISTRY)]


def run_checks(snap: dict, only: list[str] | None = None) -> list[Finding]:
    """Run every check; a check that raises, or returns something that is not a Finding with a
    known status, becomes one `error` finding, never a crash."""
    return _run([c for c in all_checks() if c.scope == "node" and (not only or c.code in only)], snap)


def run_fleet_checks(fleet_view: Any) -> list[Finding]:
    """The fleet-scope checks over a `cluster.judge.FleetView` (all nodes together)."""
    return _run([c for c in all_checks() if c.scope == "fleet"], fleet_view)


def _run(checks: list[Check], subject: Any) -> list[Finding]:
    findings: list[Finding] = []
    for chk in checks:
        try:
            result = chk.func(subject)
            items = result if isinstance(result, list) else [result]
            bad = next((f for f in items if not isinstance(f, Finding) or f.status not in SEVERITY), None)
            if bad is not None:
                raise TypeError(f"returned {type(bad).__name__}"
                                + (f" with status {bad.status!r}" if isinstance(bad, Finding) else ""))
        except Exception as exc:  # noqa: BLE001
            items = [Finding(chk.code, "error", chk.title, f"check crashed: {type(exc).__name__}: {str(exc)[:300]}",
                             fix="report this with `preflight snapshot > box.json` attached")]
        for f in items:
            f.area = chk.area
            f.code = chk.code
            findings.append(f)
    return findings


def worst(findings: list[Finding]) -> str:
    """The worst status; the order is that of SEVERITY, so `worst` and `exit_code` always agree."""
    return max((f.status for f in findings), key=lambda s: (SEVERITY.get(s, 3), STATUSES.index(s)
                                                            if s in STATUSES else len(STATUSES)), default="ok")


def exit_code(findings: list[Finding]) -> int:
    """0 ok/skip, 1 warn, 2 fail, 3 error (an unknown status counts as an error)."""
    return max((SEVERITY.get(f.status, 3) for f in findings), default=0)


def is_ok(findings: list[Finding]) -> bool:
    """The report's `ok`: no failure and no error, so `ok` is true exactly when exit_code < 2."""
    return exit_code(findings) < 2
