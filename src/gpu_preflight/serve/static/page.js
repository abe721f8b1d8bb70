// gpu-preflight local page. Every text from the server (model names included) goes into the page
// through textContent / value, never as markup; the one exception is the curve's SVG, which
// render/plot.py writes with every text escaped.
'use strict';

const GIB = 1073741824;
const S = {
  engines: [], byName: {}, catalog: {}, gpus: [], options: {}, gpuRows: [{ id: 'rtx-4090', count: 1 }],
  curve: null, seq: 0, fullTimer: null, fullCtl: null, curveCtl: null, commandKeys: [], dragging: false,
};
const $ = (id) => document.getElementById(id);
const gib = (n) => (n / GIB).toFixed(1) + ' GiB';

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) { e.textContent = String(text); }
  if (cls) { e.className = cls; }
  return e;
}

function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

async function api(path, body, signal) {
  const opts = body === undefined ? { signal } : {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal,
  };
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (e) { data = { error: 'bad answer from the server' }; }
  return { ok: res.ok, status: res.status, data, elapsed: res.headers.get('X-Elapsed-Ms') };
}

// ---------------------------------------------------------------- model, engine, options

function modelKind() {
  const entry = S.catalog[$('model').value.trim()];
  return entry ? entry.kind : null;
}

function enginesForKind(kind) {
  return S.engines.filter((e) => !kind || e.kinds.includes(kind));
}

function currentEngine() {
  const chosen = $('engine').value;
  if (chosen && S.byName[chosen]) { return S.byName[chosen]; }
  const kind = modelKind() || 'llm';
  const list = enginesForKind(kind);
  return list.find((e) => e.default_for.includes(kind)) || list[0] || S.engines[0];
}

function buildEngineSelect() {
  const sel = $('engine');
  const keep = sel.value;
  clear(sel);
  const kind = modelKind();
  const list = enginesForKind(kind);
  const dflt = list.find((e) => e.default_for.includes(kind || 'llm'));
  sel.appendChild(new Option('default' + (dflt ? ' (' + dflt.name + ')' : ''), ''));
  list.forEach((e) => sel.appendChild(new Option(e.name + ': ' + e.summary, e.name)));
  sel.value = list.some((e) => e.name === keep) ? keep : '';
}

function dropUndeclared() {
  const dests = new Set(currentEngine().options.map((o) => o.dest));
  Object.keys(S.options).forEach((k) => { if (!dests.has(k)) { delete S.options[k]; } });
}

function parseValue(o, text) {
  if (o.kind === 'bool') { return text ? true : undefined; }
  if (text === '' || text === null || text === undefined) { return undefined; }
  if (o.kind === 'int') { const n = parseInt(text, 10); return Number.isFinite(n) ? n : text; }
  if (o.kind === 'number') { const n = parseFloat(text); return Number.isFinite(n) ? n : text; }
  if (o.kind === 'list') { return String(text).split(',').map((s) => s.trim()).filter(Boolean); }
  return String(text);
}

function optionControl(o) {
  const label = el('label', null, 'opt');
  label.title = o.help;
  const name = el('span', o.flag);
  let input;
  if (o.kind === 'bool') {
    input = document.createElement('input');
    input.type = 'checkbox';
    input.checked = S.options[o.dest] === true;
    label.appendChild(input);
    label.appendChild(name);
  } else {
    if (o.kind === 'choice') {
      input = document.createElement('select');
      input.appendChild(new Option(o.default !== null ? 'default (' + o.default + ')' : 'default', ''));
      o.choices.forEach((c) => input.appendChild(new Option(c, c)));
    } else {
      input = document.createElement('input');
      input.type = (o.kind === 'int' || o.kind === 'number') ? 'number' : 'text';
      if (o.kind === 'int') { input.min = '1'; input.step = '1'; }
      if (o.kind === 'number') { input.step = 'any'; }
      input.placeholder = o.default !== null && o.default !== false ? 'default ' + o.default : 'default';
    }
    const v = S.options[o.dest];
    input.value = v === undefined ? '' : (Array.isArray(v) ? v.join(',') : String(v));
    label.appendChild(name);
    label.appendChild(input);
  }
  input.id = 'opt-' + o.dest;
  input.dataset.dest = o.dest;
  input.addEventListener('change', () => {
    const v = parseValue(o, o.kind === 'bool' ? input.checked : input.value);
    if (v === undefined) { delete S.options[o.dest]; } else { S.options[o.dest] = v; }
    refresh();
  });
  return label;
}

function buildOptions() {
  const box = $('options');
  Array.from(box.querySelectorAll('label')).forEach((n) => n.remove());
  currentEngine().options.forEach((o) => box.appendChild(optionControl(o)));
}

// ---------------------------------------------------------------- GPUs

function buildGpus() {
  const box = $('gpus');
  clear(box);
  S.gpuRows.forEach((row, i) => {
    const div = el('div', null, 'gpu-row');
    const sel = document.createElement('select');
    sel.appendChild(new Option('this machine\u2019s GPUs', ''));
    S.gpus.forEach((g) => sel.appendChild(new Option(g.name + ' \u00b7 ' + gib(g.memory_bytes), g.id)));
    sel.value = row.id;
    sel.id = 'gpu-' + i;
    sel.addEventListener('change', () => { row.id = sel.value; refresh(); });
    const count = document.createElement('input');
    count.type = 'number'; count.min = '1'; count.max = '64'; count.value = String(row.count);
    count.title = 'GPUs of this kind';
    count.addEventListener('change', () => { row.count = Math.max(1, parseInt(count.value, 10) || 1); refresh(); });
    const rm = el('button', '\u00d7');
    rm.type = 'button'; rm.title = 'remove';
    rm.addEventListener('click', () => { S.gpuRows.splice(i, 1); buildGpus(); refresh(); });
    div.appendChild(sel); div.appendChild(count); div.appendChild(rm);
    box.appendChild(div);
  });
}

// ---------------------------------------------------------------- requests

function request() {
  const req = { model: $('model').value.trim() };
  const gpus = S.gpuRows.filter((r) => r.id).map((r) => (r.count > 1 ? r.id + ':' + r.count : r.id));
  if (gpus.length) { req.gpus = gpus; }
  if ($('engine').value) { req.engine = $('engine').value; }
  if ($('torch').value.trim()) { req.torch = $('torch').value.trim(); }
  Object.assign(req, S.options);
  return req;
}

function sliderDests() { return S.curve ? Object.keys(S.curve.applies || {}) : []; }

function curveRequest() {
  const req = request();
  sliderDests().forEach((d) => { delete req[d]; });
  const x = sliderX();
  if (x) { req.at = x; }
  return req;
}

function showError(data) {
  const box = $('error');
  if (!data) { box.hidden = true; box.textContent = ''; return; }
  box.hidden = false;
  box.textContent = (data.error || 'error') + (data.hint ? '\nhint: ' + data.hint : '');
}

async function refresh() {
  const my = ++S.seq;
  writeUrl();
  const t0 = performance.now();
  let r;
  try { r = await api('/api/point', request()); } catch (e) { showError({ error: String(e) }); return; }
  if (my !== S.seq) { return; }
  if (!r.ok) { showError(r.data); document.body.dataset.state = 'error'; return; }
  showError(null);
  renderPoint(r.data);
  $('timing').textContent = 'verdict in ' + Math.round(performance.now() - t0) + ' ms (server ' +
    r.data.elapsed_ms + ' ms)';
  document.body.dataset.state = 'ready';
  document.body.dataset.seq = String(my);
  loadCurve(my);
  clearTimeout(S.fullTimer);
  S.fullTimer = setTimeout(() => loadFull(my), S.dragging ? 600 : 150);
}

async function loadFull(my) {
  if (S.fullCtl) { S.fullCtl.abort(); }
  S.fullCtl = new AbortController();
  $('limits').textContent = 'computing the largest context / batch and what makes it fit\u2026';
  let r;
  try { r = await api('/api/estimate', request(), S.fullCtl.signal); } catch (e) { return; }
  if (my !== S.seq || !r.ok) { return; }
  renderFull(r.data);
}

async function loadCurve(my) {
  if (S.curveCtl) { S.curveCtl.abort(); }
  S.curveCtl = new AbortController();
  let r;
  try { r = await api('/api/curve', curveRequest(), S.curveCtl.signal); } catch (e) { return; }
  if (my !== S.seq) { return; }
  if (!r.ok) { clear($('curve')); $('curve').appendChild(el('p', (r.data.error || ''), 'note')); return; }
  renderCurve(r.data);
}

// ---------------------------------------------------------------- rendering

const COLORS = {
  weights: '#4e79a7', 'weights (resident)': '#4e79a7', allocator_rounding: '#a0b8d3', kv_cache: '#f28e2b',
  activations: '#59a14f', cublas_workspace: '#b07aa1', allocator_slack: '#bab0ac', 'allocator reserve': '#bab0ac',
  cuda_context_and_libraries: '#76717a', non_torch: '#9c755f', cuda_graphs: '#ff9da7', compute_buffer: '#59a14f',
  other: '#d7d2cc',
};
const SPARE = ['#8cd17d', '#ffbe7d', '#86bcb6', '#f1ce63', '#d4a6c8', '#9d7660'];

function verdictRow(f, report) {
  const short = -f.headroom_bytes;
  let text;
  let cls;
  const each = f.count > 1 ? ' per GPU' : '';
  const name = (f.count > 1 ? f.count + ' \u00d7 ' : '') + f.gpu;
  if (report.engine === 'vllm' && f.starts === false) {
    cls = 'no';
    text = 'Does not start on ' + name + ': vLLM\u2019s budget has no room for one request of this context';
  } else if (f.fits) {
    cls = f.tight ? 'tight' : 'ok';
    text = (f.tight ? 'Fits, tightly, on ' : 'Fits on ') + name + ': ' + gib(f.peak_process_bytes_per_gpu) +
      ' of ' + gib(f.memory_bytes) + each + ' (' + gib(f.headroom_bytes) + ' to spare)';
  } else {
    cls = 'no';
    text = 'Does not fit on ' + name + ': needs ' + gib(f.peak_process_bytes_per_gpu) + each + ', has ' +
      gib(f.memory_bytes) + ' (short by ' + gib(short) + ')';
  }
  const div = el('div', text, cls);
  div.dataset.fits = String(f.fits);
  return div;
}

function renderPoint(d) {
  const rep = d.report;
  $('title').textContent = rep.model + ' \u00b7 ' + rep.engine;
  const v = $('verdict');
  clear(v);
  if (!rep.fits.length) {
    v.appendChild(el('div', 'No target GPU: none visible here; add one on the left.', 'no'));
  }
  rep.fits.forEach((f) => v.appendChild(verdictRow(f, rep)));
  renderBar(d.stack, rep);
  renderCommands(d.commands);
  const ul = $('assumptions');
  clear(ul);
  (rep.assumptions || []).forEach((a) => ul.appendChild(el('li', a)));
}

function renderBar(stack, rep) {
  const bar = $('bar');
  const legend = $('bar-legend');
  clear(bar); clear(legend);
  const parts = stack || { peak: rep.peak_process_bytes };
  const total = Object.values(parts).reduce((a, b) => a + b, 0);
  const mem = rep.fits.length ? rep.fits[0].memory_bytes : 0;
  const scale = Math.max(total, mem, 1);
  let left = 0;
  let spare = 0;
  Object.keys(parts).forEach((k) => {
    const seg = el('div', null, 'seg');
    const color = COLORS[k] || SPARE[spare++ % SPARE.length];
    seg.style.left = (100 * left / scale) + '%';
    seg.style.width = (100 * parts[k] / scale) + '%';
    seg.style.background = color;
    seg.title = k + ': ' + gib(parts[k]);
    bar.appendChild(seg);
    left += parts[k];
    const item = el('span');
    const sw = el('span', null, 'sw');
    sw.style.background = color;
    item.appendChild(sw);
    item.appendChild(document.createTextNode(k.replace(/_/g, ' ') + ' ' + gib(parts[k])));
    legend.appendChild(item);
  });
  if (mem) {
    const m = el('div', null, 'mark');
    m.style.left = 'calc(' + (100 * mem / scale) + '% - 2px)';
    m.title = rep.fits[0].gpu + ': ' + gib(mem);
    bar.appendChild(m);
    legend.appendChild(el('span', '| ' + rep.fits[0].gpu + ' ' + gib(mem)));
  }
}

function commandBlock(label, text) {
  const div = el('div', null, 'cmd');
  div.appendChild(el('div', label, 'label'));
  div.appendChild(el('pre', text));
  return div;
}

function renderCommands(c) {
  const box = $('commands');
  clear(box);
  if (c.engine) {
    const block = commandBlock(c.engine.label, c.engine.command);
    block.id = 'engine-command';
    box.appendChild(block);
  }
  if (c.run_snippet) { box.appendChild(commandBlock('Python (' + c.run_snippet.label + ')', c.run_snippet.code)); }
  box.appendChild(commandBlock('This estimate, in a terminal', c.preflight));
  box.appendChild(commandBlock('This estimate, from Python', c.python_api));
}

function renderFull(rep) {
  const lim = [];
  if (rep.max_context_tokens) { lim.push('largest context that fits: ' + rep.max_context_tokens.toLocaleString('en-US') + ' tokens'); }
  if (rep.max_batch) { lim.push('largest batch: ' + rep.max_batch); }
  if (rep.max_resolution) { lim.push('largest square image: ' + rep.max_resolution + ' px'); }
  if (rep.max_micro_batch) { lim.push('largest micro-batch: ' + rep.max_micro_batch); }
  $('limits').textContent = lim.length ? 'On ' + (rep.fits[0] ? rep.fits[0].gpu : 'the first GPU') + ': ' + lim.join(' \u00b7 ') : '';
  const ul = $('suggestions');
  clear(ul);
  (rep.suggestions || []).forEach((s) => {
    const li = el('li', null, s.fits ? 'gp-ok' : 'gp-no');
    li.appendChild(document.createTextNode((s.fits ? '\u2713 ' : '\u2717 ') + s.change + ' '));
    li.appendChild(el('span', s.flag, 'flag'));
    li.appendChild(document.createTextNode(' \u2192 ' + gib(s.peak_process_bytes)));
    ul.appendChild(li);
  });
  if (!(rep.suggestions || []).length) {
    ul.appendChild(el('li', rep.fits.length && rep.fits[0].fits ? 'nothing to change: it fits' : 'no suggestion'));
  }
  // the full report's engine command can differ (vLLM: the change that makes it start)
  S.commandKeys.forEach(([key, inner]) => {
    const shown = $('engine-command');
    if (rep[key] && rep[key][inner] && shown) { shown.querySelector('pre').textContent = rep[key][inner]; }
  });
}

function renderCurve(d) {
  const box = $('curve');
  S.curve = d.curve;
  clear(box);
  box.innerHTML = d.svg; // written by render/plot.py: every text in it is escaped
  const data = document.createElement('script');
  data.type = 'application/json';
  data.className = 'gp-curve-data';
  data.textContent = JSON.stringify(d.curve);
  box.appendChild(data);
  const tip = el('div', null, 'gp-tip');
  tip.hidden = true;
  box.appendChild(tip);
  if (window.gpCurveSetup) { window.gpCurveSetup(box); }
  configureSlider(d.curve);
}

// ---------------------------------------------------------------- the slider (the swept quantity)

function xRange() {
  const xs = S.curve.points.map((p) => p.x);
  return [Math.min(...xs), Math.max(...xs)];
}

function posToX(pos) {
  const [lo, hi] = xRange();
  const q = S.curve.quantity;
  const f = pos / 1000;
  let x = q.scale === 'log2' ? Math.exp(Math.log(lo) + f * (Math.log(hi) - Math.log(lo))) : lo + f * (hi - lo);
  const step = q.step || 1;
  x = Math.round(x / step) * step;
  return Math.min(Math.max(x, lo), hi);
}

function xToPos(x) {
  const [lo, hi] = xRange();
  if (hi <= lo) { return 0; }
  const q = S.curve.quantity;
  const f = q.scale === 'log2' ? (Math.log(x) - Math.log(lo)) / (Math.log(hi) - Math.log(lo)) : (x - lo) / (hi - lo);
  return Math.round(1000 * Math.min(Math.max(f, 0), 1));
}

function sliderX() {
  if (!S.curve || $('slider-box').hidden) { return null; }
  return posToX(Number($('slider').value));
}

function configureSlider(curve) {
  const box = $('slider-box');
  if (!curve.points.length || !curve.applies) { box.hidden = true; return; }
  box.hidden = false;
  $('slider-label').textContent = curve.quantity.label;
  const s = $('slider');
  s.min = '0'; s.max = '1000'; s.step = '1';
  if (!S.dragging && curve.current) { s.value = String(xToPos(curve.current)); }
  showSliderValue();
}

function showSliderValue() {
  const x = sliderX();
  if (x === null) { return; }
  const unit = S.curve.quantity.unit;
  $('slider-value').textContent = x.toLocaleString('en-US') + (unit ? ' ' + unit : '');
}

function onSlider() {
  const x = sliderX();
  if (x === null) { return; }
  Object.entries(S.curve.applies).forEach(([dest, offset]) => {
    S.options[dest] = x - offset;
    const input = $('opt-' + dest);
    if (input) { input.value = String(x - offset); }
  });
  showSliderValue();
  refresh();
}

// ---------------------------------------------------------------- Hub search

async function hubSearch() {
  const q = $('hub-q').value.trim();
  const ul = $('hub-results');
  clear(ul);
  if (!q) { return; }
  $('hub-note').textContent = 'searching\u2026';
  const r = await api('/api/hub?q=' + encodeURIComponent(q));
  if (!r.data.available) { $('hub-note').textContent = r.data.reason || 'Hub search is not available'; return; }
  $('hub-note').textContent = r.data.models.length ? '' : 'no model found';
  r.data.models.forEach((m) => {
    const li = el('li');
    const b = el('button', m.id);
    b.type = 'button';
    b.addEventListener('click', () => { $('model').value = m.id; onModelChange(); });
    li.appendChild(b);
    ul.appendChild(li);
  });
}

// ---------------------------------------------------------------- start

// ---------------------------------------------------------------- the page's state in its URL (shareable)

function readUrl() {
  const q = new URLSearchParams(location.search);
  if (q.get('model')) { $('model').value = q.get('model'); }
  if (q.getAll('gpu').length) {
    S.gpuRows = q.getAll('gpu').map((g) => {
      const [id, n] = g.split(':');
      return { id: id === 'this' ? '' : id, count: Math.max(1, parseInt(n || '1', 10) || 1) };
    });
  }
  if (q.get('torch')) { $('torch').value = q.get('torch'); }
  return q;
}

function applyUrlOptions(q) {
  buildEngineSelect();
  if (q.get('engine')) { $('engine').value = q.get('engine'); }
  currentEngine().options.forEach((o) => {
    if (q.has(o.dest)) {
      const v = parseValue(o, o.kind === 'bool' ? q.get(o.dest) === '1' : q.get(o.dest));
      if (v !== undefined) { S.options[o.dest] = v; }
    }
  });
}

function writeUrl() {
  const q = new URLSearchParams();
  q.set('model', $('model').value.trim());
  if ($('engine').value) { q.set('engine', $('engine').value); }
  S.gpuRows.forEach((r) => q.append('gpu', (r.id || 'this') + (r.count > 1 ? ':' + r.count : '')));
  if ($('torch').value.trim()) { q.set('torch', $('torch').value.trim()); }
  Object.entries(S.options).forEach(([k, v]) => q.set(k, v === true ? '1' : Array.isArray(v) ? v.join(',') : String(v)));
  history.replaceState(null, '', '?' + q.toString());
}

function onModelChange() {
  buildEngineSelect();
  dropUndeclared();
  buildOptions();
  S.curve = null;
  $('slider-box').hidden = true;
  refresh();
}

async function init() {
  const [st, en, ca, gp] = await Promise.all(['/api/status', '/api/engines', '/api/catalog', '/api/gpus'].map((p) => api(p)));
  S.engines = en.data.engines;
  S.commandKeys = en.data.command_keys;
  S.engines.forEach((e) => { S.byName[e.name] = e; });
  ca.data.models.forEach((m) => {
    S.catalog[m.id] = m;
    const o = document.createElement('option');
    o.value = m.id;
    o.label = m.kind;
    $('catalog-list').appendChild(o);
  });
  S.gpus = gp.data.gpus;
  const hub = st.data.hub_search;
  $('net').textContent = hub.available ? 'Hub search available' : 'offline: catalog and local paths';
  $('net').className = 'badge' + (hub.available ? '' : ' offline');
  $('hub-note').textContent = hub.available ? '' : hub.reason;
  $('hub-q').disabled = !hub.available;
  $('hub-go').disabled = !hub.available;
  $('model').addEventListener('change', onModelChange);
  $('engine').addEventListener('change', () => { dropUndeclared(); buildOptions(); S.curve = null; refresh(); });
  $('torch').addEventListener('change', refresh);
  $('gpu-add').addEventListener('click', () => { S.gpuRows.push({ id: 'h100-sxm-80gb', count: 1 }); buildGpus(); refresh(); });
  $('hub-go').addEventListener('click', hubSearch);
  $('hub-q').addEventListener('keydown', (e) => { if (e.key === 'Enter') { hubSearch(); } });
  const s = $('slider');
  s.addEventListener('input', onSlider);
  s.addEventListener('pointerdown', () => { S.dragging = true; });
  s.addEventListener('pointerup', () => { S.dragging = false; });
  const q = readUrl();
  buildGpus();
  applyUrlOptions(q);
  buildOptions();
  refresh();
}

init();
