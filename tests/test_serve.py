"""`preflight serve`: the JSON API (no socket), the HTTP server's safety rules (loopback sockets),
and the page in a real headless browser (Debian's chromium + chromedriver, driven by selenium;
those tests skip when any of the three is missing)."""

import http.client
import json
import os
import threading
import time

import pytest

from gpu_preflight.cli import main
from gpu_preflight.errors import UsageError
from gpu_preflight.estimators.engines import all_engines
from gpu_preflight.models.catalog import default_catalog
from gpu_preflight.serve.app import App
from gpu_preflight.serve.server import PreflightServer, check_bind, host_header_ok

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "fixtures", "golden", "serve-page.png")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
EVIL_HUB = ["<script>window.__pwned=1</script>", "org/<img src=x onerror=window.__pwned=2>"]
EVIL_DIR = "<img src=x onerror=window.__pwned=3>"


def post(app, path, body):
    r = app.handle("POST", path, json.dumps(body).encode())
    return r.status, json.loads(r.body)


# ---------------------------------------------------------------- the JSON API, no socket

def test_api_estimate_is_exactly_the_cli_json(capsys):
    assert main(["estimate", "qwen2.5-0.5b-instruct", "--gpu", "rtx-4090", "--batch", "2", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    status, page = post(App(offline=True), "/api/estimate",
                        {"model": "qwen2.5-0.5b-instruct", "gpus": ["rtx-4090"], "batch": 2})
    assert status == 200 and page == cli


def test_api_point_has_the_estimates_verdict_and_commands():
    app = App(offline=True)
    body = {"model": "qwen2.5-7b-instruct", "engine": "vllm", "gpus": ["l4"], "max_model_len": 8192}
    _, full = post(app, "/api/estimate", body)
    _, point = post(app, "/api/point", body)
    rep = point["report"]
    assert rep["fits"] == full["fits"] and rep["peak_process_bytes"] == full["peak_process_bytes"]
    assert point["commands"]["engine"] == {"label": "vLLM", "command": full["vllm"]["serve_command"]}
    assert point["commands"]["preflight"] == \
        "preflight estimate qwen2.5-7b-instruct --engine vllm --gpu l4 --max-model-len 8192"
    assert "gp.estimate('qwen2.5-7b-instruct', engine='vllm', gpus=['l4'], max_model_len=8192)" in \
        point["commands"]["python_api"]


def test_transformers_point_skips_only_the_searches():
    app = App(offline=True)
    body = {"model": "qwen2.5-7b-instruct", "gpus": ["rtx-4090", "l4"], "input_len": 30000}
    _, full = post(app, "/api/estimate", body)
    _, point = post(app, "/api/point", body)
    rep = point["report"]
    for key in ("peak_process_bytes", "breakdown", "fits", "phases", "workload"):
        assert rep[key] == full[key], key
    assert full["max_context_tokens"] and rep["max_context_tokens"] is None
    assert "AutoModelForCausalLM.from_pretrained('Qwen/Qwen2.5-7B-Instruct'" in point["commands"]["run_snippet"]["code"]


def test_api_lists_come_from_the_registries():
    app = App(offline=True)
    engines = json.loads(app.handle("GET", "/api/engines").body)["engines"]
    assert [(e["name"], [o["dest"] for o in e["options"]]) for e in engines] == \
        [(e.name, [o.dest for o in e.options]) for e in all_engines()]
    models = json.loads(app.handle("GET", "/api/catalog").body)["models"]
    assert sorted(m["id"] for m in models) == sorted(e.id for e in default_catalog().entries)
    from gpu_preflight.compatibility import facts

    gpus = json.loads(app.handle("GET", "/api/gpus").body)["gpus"]
    assert len(gpus) == len(facts.gpus()) and {"rtx-4090", "h100-sxm-80gb"} <= {g["id"] for g in gpus}


def test_api_curve_is_cached_across_the_swept_value():
    app = App(offline=True)
    body = {"model": "qwen2.5-0.5b-instruct", "gpus": ["gtx-1650"], "batch": 4, "sweep": "1k:16k:5"}
    _, first = post(app, "/api/curve", body)
    _, again = post(app, "/api/curve", {**body, "input_len": 4000, "at": 4128})
    assert not first["cached"] and again["cached"]
    assert again["curve"]["points"] == first["curve"]["points"] and again["curve"]["current"] == 4128
    assert again["svg"].startswith("<svg") and "your workload: 4,128" in again["svg"]
    _, other = post(app, "/api/curve", {**body, "batch": 2})
    assert not other["cached"]


@pytest.mark.parametrize("body,message", [
    ({}, "give \"model\""),
    ({"model": "qwen2.5-0.5b-instruct", "gpus": "rtx-4090", "warp_factor": 9}, "unknown option 'warp_factor'"),
    ({"model": "qwen2.5-0.5b-instruct", "gpus": "rtx-4090", "batch": 0}, "out of range"),
    ({"model": "qwen2.5-0.5b-instruct", "gpus": "rtx-4090", "max_model_len": 4096}, "--max-model-len does not apply"),
    ({"model": "no-such-model-anywhere", "gpus": "rtx-4090"}, "no-such-model-anywhere"),
    ({"model": "qwen2.5-0.5b-instruct", "gpus": [1, 2]}, "\"gpus\""),
])
def test_api_errors_are_one_line_json(body, message):
    status, data = post(App(offline=True), "/api/point", body)
    assert status == 400 and message in data["error"], data


def test_api_rejects_bad_bodies_and_methods():
    app = App(offline=True)
    assert app.handle("POST", "/api/estimate", b"{not json").status == 400
    assert app.handle("POST", "/api/estimate", b"[1]").status == 400
    assert app.handle("GET", "/api/estimate").status == 405
    assert app.handle("GET", "/nothing").status == 404
    assert app.handle("GET", "/static/../app.py").status == 404


def test_hub_search_offline_and_injected():
    off = json.loads(App(offline=True).handle("GET", "/api/hub?q=llama").body)
    assert off["available"] is False and "offline" in off["reason"]
    fake = App(hub_search=lambda q: [{"id": n} for n in EVIL_HUB])
    found = json.loads(fake.handle("GET", "/api/hub?q=x").body)
    assert [m["id"] for m in found["models"]] == EVIL_HUB  # the JSON carries the names as they are: the page escapes


def test_static_page_has_no_inline_script_and_a_strict_policy():
    app = App(offline=True)
    page = app.handle("GET", "/").body.decode()
    assert "<script>" not in page and 'src="/static/page.js"' in page
    js = app.handle("GET", "/static/page.js").body.decode()
    assert "innerHTML" in js and js.count("innerHTML") == 1  # only the curve's SVG, written by render/plot.py
    from gpu_preflight.serve.app import SECURITY_HEADERS

    assert "script-src 'self'" in SECURITY_HEADERS["Content-Security-Policy"]


# ---------------------------------------------------------------- the HTTP server, on loopback sockets

@pytest.fixture
def live():
    servers = []

    def start(app=None, host="127.0.0.1", allow_remote=False):
        srv = PreflightServer(host, 0, app or App(offline=True), allow_remote=allow_remote)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _get(srv, path, headers=None, method="GET", body=None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, dict(r.getheaders()), r.read()


def test_server_answers_on_loopback_with_a_policy(live):
    srv = live()
    status, headers, body = _get(srv, "/api/status")
    assert status == 200 and json.loads(body)["offline"] is True
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    status, headers, body = _get(srv, "/api/point", {"Content-Type": "application/json"}, "POST",
                                 json.dumps({"model": "qwen2.5-0.5b-instruct", "gpus": ["rtx-3050"]}))
    assert status == 200 and float(headers["X-Elapsed-Ms"]) > 0


def test_server_refuses_other_host_headers_and_form_posts(live):
    srv = live()
    assert _get(srv, "/api/status", {"Host": "evil.example:8765"})[0] == 403  # DNS rebinding
    assert _get(srv, "/api/estimate", {"Content-Type": "text/plain"}, "POST", "{}")[0] == 415  # cross-site form
    assert host_header_ok("localhost:8765") and host_header_ok("[::1]:8765") and host_header_ok("127.0.0.1")
    assert not host_header_ok("example.com") and not host_header_ok("") and not host_header_ok("10.0.0.1:8765")


def test_non_loopback_bind_is_refused_unless_asked(live, capsys):
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(UsageError, match="not a loopback address"):
            check_bind(host, allow_remote=False)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, allow_remote=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 3
    err = capsys.readouterr().err
    assert "not a loopback address" in err and "--allow-remote" in err
    srv = live(host="0.0.0.0", allow_remote=True)  # asked for: it binds every interface
    assert srv.server_address[0] == "0.0.0.0"
    assert _get(srv, "/api/status", {"Host": "some-name:1"})[0] == 200


# ---------------------------------------------------------------- a real browser

def _driver():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=1280,1000",
                "--lang=en-US", "--font-render-hinting=none"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture
def browser(tmp_path):
    d = _driver()
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def _wait(d, cond, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(d, timeout, poll_frequency=0.05).until(cond)


def _text(d, id_):
    return d.find_element("id", id_).text


def _url(srv, query=""):
    return f"http://127.0.0.1:{srv.server_address[1]}/{query}"


def _set_slider(d, pos):
    d.execute_script("const s=document.getElementById('slider'); s.value=arguments[0];"
                     "s.dispatchEvent(new Event('input'));", str(pos))


def test_page_loads_and_the_slider_moves_the_verdict(live, browser):
    srv = live()
    browser.get(_url(srv, "?model=llama-3.1-8b-instruct&gpu=rtx-4090"))
    _wait(browser, lambda d: d.find_element("id", "verdict").text.startswith("Fits on NVIDIA GeForce RTX 4090"))
    _wait(browser, lambda d: not d.find_element("id", "slider-box").get_attribute("hidden"))
    assert browser.find_element("css selector", "#curve svg.gp-curve")
    assert "context length" in _text(browser, "slider-label")
    t0 = time.perf_counter()
    _set_slider(browser, 1000)  # the model's whole context, 131,072 tokens
    _wait(browser, lambda d: d.find_element("id", "verdict").text.startswith("Does not fit on"))
    moved_s = time.perf_counter() - t0
    assert _text(browser, "slider-value") == "131,072 tokens"
    assert browser.find_element("id", "opt-input_len").get_attribute("value") == str(131072 - 128)
    assert "--input-len 130944" in _text(browser, "commands")
    _set_slider(browser, 0)
    _wait(browser, lambda d: d.find_element("id", "verdict").text.startswith("Fits on"))
    assert moved_s < 10
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_engine_options_come_from_the_declarations(live, browser):
    srv = live()
    browser.get(_url(srv, "?model=qwen2.5-7b-instruct&gpu=l4"))
    _wait(browser, lambda d: d.find_element("id", "verdict").text)
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "engine")).select_by_value("vllm")
    _wait(browser, lambda d: d.find_elements("id", "opt-max_model_len"))
    vllm = next(e for e in all_engines() if e.name == "vllm")
    shown = {e.get_attribute("data-dest") for e in browser.find_elements("css selector", "#options [data-dest]")}
    assert shown == {o.dest for o in vllm.options}
    _wait(browser, lambda d: "vllm serve" in d.find_element("id", "commands").text)


def test_hostile_names_never_execute(live, browser, tmp_path):
    from gpu_preflight.models.catalog import default_catalog

    folder = tmp_path / EVIL_DIR
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(default_catalog().find("qwen2.5-0.5b-instruct").config))
    srv = live(App(hub_search=lambda q: [{"id": n} for n in EVIL_HUB]))
    from urllib.parse import quote

    browser.get(_url(srv, "?model=" + quote(str(folder)) + "&gpu=rtx-4090"))
    _wait(browser, lambda d: d.find_element("id", "title").text == f"{EVIL_DIR} · transformers")
    _wait(browser, lambda d: d.find_elements("css selector", "#curve svg"))
    assert EVIL_DIR in browser.find_element("id", "plot-title").text
    browser.find_element("id", "hub-q").send_keys("evil")
    browser.find_element("id", "hub-go").click()
    _wait(browser, lambda d: len(d.find_elements("css selector", "#hub-results button")) == 2)
    assert [b.text for b in browser.find_elements("css selector", "#hub-results button")] == EVIL_HUB
    browser.find_elements("css selector", "#hub-results button")[0].click()
    _wait(browser, lambda d: EVIL_HUB[0] in d.find_element("id", "error").text)
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    scripts = browser.execute_script("return Array.from(document.scripts).map(s => s.src || s.type)")
    assert all(s.endswith(("/static/plot-hover.js", "/static/page.js")) or s == "application/json" for s in scripts)


class RecordingApp(App):
    """The real answers, kept per path (the golden page's data)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.answers = {}

    def handle(self, method, target, body=b""):
        r = super().handle(method, target, body)
        if target.split("?")[0].startswith("/api/"):
            self.answers[target.split("?")[0]] = {"status": r.status, "body": r.body.decode()}
        return r


class FrozenApp(App):
    """Answers every /api/ request from a recording, so the golden screenshot tests the page, not
    today's estimates, engines or GPU table (those have their own tests)."""

    def __init__(self, answers, **kw):
        super().__init__(**kw)
        self.answers = answers

    def handle(self, method, target, body=b""):
        from gpu_preflight.serve.app import Response

        path = target.split("?")[0]
        if path in self.answers:
            a = self.answers[path]
            return Response(a["status"], "application/json", a["body"].encode())
        return super().handle(method, target, body)


GOLDEN_QUERY = "?model=qwen2.5-7b-instruct&gpu=rtx-4090&gpu=l4&batch=4"
GOLDEN_ANSWERS = os.path.join(HERE, "fixtures", "serve", "golden-answers.json")


def test_page_matches_the_golden_screenshot(live, browser):
    update = os.environ.get("PREFLIGHT_UPDATE_GOLDEN") == "1" or not os.path.exists(GOLDEN)
    if update:
        app = RecordingApp(offline=True)
    else:
        with open(GOLDEN_ANSWERS, encoding="utf-8") as fh:
            app = FrozenApp(json.load(fh), offline=True)
    srv = live(app)
    browser.get(_url(srv, GOLDEN_QUERY))
    _wait(browser, lambda d: d.find_element("id", "limits").text.startswith("On NVIDIA GeForce RTX 4090"))
    _wait(browser, lambda d: d.find_elements("css selector", "#curve svg"))
    browser.execute_script("document.getElementById('timing').style.visibility='hidden';"
                           "document.activeElement.blur();")
    time.sleep(0.3)
    shot = browser.get_screenshot_as_png()
    if update:
        os.makedirs(os.path.dirname(GOLDEN_ANSWERS), exist_ok=True)
        with open(GOLDEN_ANSWERS, "w", encoding="utf-8") as fh:
            json.dump(app.answers, fh, indent=1, sort_keys=True)
        with open(GOLDEN, "wb") as fh:
            fh.write(shot)
        pytest.skip(f"wrote {GOLDEN} and {GOLDEN_ANSWERS}; check the image by eye and commit both")
    with open(GOLDEN, "rb") as fh:
        diff = pixel_difference(browser, shot, fh.read())
    assert "changed" in diff, diff
    assert diff["changed"] <= 0.03 and diff["mean"] <= 4.0, \
        f"{diff['changed']:.2%} of pixels differ (mean {diff['mean']:.2f}/255): rerun with " \
        "PREFLIGHT_UPDATE_GOLDEN=1 if the page changed on purpose"


# ---------------------------------------------------------------- PNG comparison, in the browser itself

COMPARE_JS = """
const [a, b, threshold, done] = arguments;
function load(src) {
  return new Promise((ok, fail) => { const i = new Image(); i.onload = () => ok(i); i.onerror = fail; i.src = src; });
}
function pixels(img) {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  return g.getImageData(0, 0, c.width, c.height).data;
}
Promise.all([load(a), load(b)]).then(([ia, ib]) => {
  if (ia.naturalWidth !== ib.naturalWidth || ia.naturalHeight !== ib.naturalHeight) {
    done({size: [[ia.naturalWidth, ia.naturalHeight], [ib.naturalWidth, ib.naturalHeight]]});
    return;
  }
  const pa = pixels(ia), pb = pixels(ib);
  let changed = 0, total = 0;
  for (let i = 0; i < pa.length; i += 4) {
    const d = Math.max(Math.abs(pa[i] - pb[i]), Math.abs(pa[i + 1] - pb[i + 1]), Math.abs(pa[i + 2] - pb[i + 2]));
    total += d;
    if (d > threshold) { changed += 1; }
  }
  const n = pa.length / 4;
  done({changed: changed / n, mean: total / n});
}, (e) => done({error: String(e)}));
"""


def pixel_difference(browser, got: bytes, want: bytes, threshold: int = 40) -> dict:
    """{"changed": share of pixels whose largest channel difference exceeds threshold, "mean": mean
    largest channel difference}, computed by the browser on two PNGs."""
    import base64

    def url(png):
        return "data:image/png;base64," + base64.b64encode(png).decode()

    browser.set_script_timeout(60)
    return browser.execute_async_script(COMPARE_JS, url(got), url(want), threshold)


def test_plot_html_hover_works_from_a_file(browser, tmp_path):
    """The --plot HTML file on its own (file://, no server, no network): hovering a column shows
    that point's breakdown."""
    from selenium.webdriver.common.action_chains import ActionChains

    from gpu_preflight.api import curve
    from gpu_preflight.render.plot import write_plot

    c = curve("qwen2.5-0.5b-instruct", gpus=["gtx-1650"], batch=4, sweep="1k:32k:6").to_json()
    path = tmp_path / "curve.html"
    write_plot(c, str(path))
    browser.get(path.as_uri())
    cols = browser.find_elements("css selector", ".gp-hover rect")
    assert len(cols) == len(c["points"])
    ActionChains(browser).move_to_element(cols[-1]).perform()
    tip = browser.find_element("css selector", ".gp-tip")
    _wait(browser, lambda d: tip.is_displayed())
    last = c["points"][-1]
    assert f"{last['x']:,}" in tip.text and "GeForce GTX 1650: does not fit" in tip.text
