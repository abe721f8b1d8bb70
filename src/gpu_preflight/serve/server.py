"""The HTTP side of `preflight serve`: the standard library's ThreadingHTTPServer around serve.app.App.

Safety: it binds to a loopback address unless the caller passes allow_remote; while bound to
loopback it answers only requests whose Host header names a loopback address (a web page
elsewhere cannot reach it through DNS rebinding), POSTs must carry a JSON content type (a
cross-site form cannot send one without the browser's CORS preflight, which this server never
grants), and every answer carries a Content-Security-Policy that allows only its own scripts.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gpu_preflight.errors import UsageError
from gpu_preflight.serve.app import MAX_BODY_BYTES, SECURITY_HEADERS, App, Response, json_response

LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    h = host.strip().strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, allow_remote: bool) -> None:
    """A non-loopback address is refused unless allow_remote: the page runs estimates on request
    and reads local model folders, which other machines should not reach by accident."""
    if not host or not host.strip():
        raise UsageError("--host is empty", hint="leave it out (127.0.0.1) or give an address")
    if not is_loopback(host) and not allow_remote:
        raise UsageError(f"--host {host} is not a loopback address: the page would be reachable from other machines",
                         hint="keep the default --host 127.0.0.1 (this machine only), or add --allow-remote to mean it")


def host_header_ok(value: str | None) -> bool:
    """Whether a Host header names a loopback address (with or without a port)."""
    if not value:
        return False
    v = value.strip()
    if v.startswith("["):
        name = v[1:v.find("]")] if "]" in v else v
    else:
        name = v.rsplit(":", 1)[0] if v.count(":") == 1 else v
    return is_loopback(name)


class _Handler(BaseHTTPRequestHandler):
    server_version = "gpu-preflight"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(json_response({"error": "use GET"}, 405), head=True)

    def _answer(self, method: str) -> None:
        srv: PreflightServer = self.server  # type: ignore[assignment]
        if not srv.allow_remote and not host_header_ok(self.headers.get("Host")):
            self._send(json_response({"error": "this server answers only requests to a loopback address"}, 403))
            return
        body = b""
        if method == "POST":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                self._send(json_response({"error": "POST needs Content-Type: application/json"}, 415))
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY_BYTES:
                self._send(json_response({"error": "bad or too large Content-Length"}, 413))
                return
            body = self.rfile.read(length)
        try:
            response = srv.app.handle(method, self.path, body)
        except Exception as exc:  # noqa: BLE001 - one request's bug must not end the server
            response = json_response({"error": f"internal error: {type(exc).__name__}: {exc}",
                                      "hint": "run `preflight estimate` with the same model and flags and --debug"}, 500)
        self._send(response)

    def _send(self, r: Response, head: bool = False) -> None:
        self.send_response(r.status)
        self.send_header("Content-Type", r.content_type)
        self.send_header("Content-Length", str(len(r.body)))
        for k, v in {**SECURITY_HEADERS, **r.headers}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(r.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if getattr(self.server, "verbose", False):
            sys.stderr.write("serve: " + (format % args) + "\n")


class PreflightServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, app: App, allow_remote: bool = False, verbose: bool = False) -> None:
        check_bind(host, allow_remote)
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        self.app, self.allow_remote, self.verbose = app, allow_remote, verbose
        try:
            super().__init__((host.strip("[]"), port), _Handler)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                             hint="choose another --port (e.g. --port 8766), or stop what uses this one") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"
