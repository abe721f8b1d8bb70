"""`preflight serve`: a local page to try models, engines, GPUs and workloads (docs/serve.md).

app.py answers the JSON API and the static page without any socket (tests call it directly);
server.py puts it behind the standard library's ThreadingHTTPServer, bound to loopback unless the
user asks otherwise; commands.py writes the command lines the page shows; static/ is the page.
Every estimate goes through gpu_preflight.api (prepare_estimate / report_for), the code path of
`preflight estimate`.
"""
