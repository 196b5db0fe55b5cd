// citypulse web view. Plain JavaScript, no build step, no third-party code.
// Data: /api/layout (map), /api/palette (measures and colours), /api/events (Server-Sent
// Events: snapshot, district, alert, active), /api/district/<id> (panel), /api/alerts/<op>.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const S = {
  layout: null, palette: null, measure: 'aqi',
  air: {}, traffic: {}, transitions: [], active: null,
  selected: null, panelTimer: null,
};

function el(tag, attrs, ...children) {
  const svg = ['svg', 'g', 'rect', 'line', 'circle', 'text', 'polyline', 'title'].includes(tag);
  const e = svg ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c !== undefined && c !== null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function fmtTime(ms) {
  if (!ms) return '—';
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
}

function num(x, digits) {
  return typeof x === 'number' ? x.toFixed(digits) : '—';
}

// --- measures ------------------------------------------------------------------------------

function measureDef(key) { return S.palette.measures.find(m => m.key === key); }

// The value, its text and its category for one district under one measure.
function reading(key, district) {
  const m = measureDef(key);
  const r = (m.kind === 'air' ? S.air : S.traffic)[district];
  const v = r ? r[m.field] : undefined;
  if (v === undefined || v === null) return { text: '—', label: 'no data', cat: S.palette.no_data, value: null };
  let cat;
  if (m.category_field) {
    cat = m.categories.find(c => c.token === r[m.category_field]);
  } else {
    cat = [...m.categories].reverse().find(c => v >= c.from);
  }
  cat = cat || S.palette.no_data;
  // `value` is the figure, `label` its category in words; `text` both on one line.
  let value;
  if (key === 'aqi') value = String(v);
  else if (key === 'los') value = `LOS ${v}`;
  else if (key === 'tti') value = v.toFixed(2);
  else value = cat.label;
  const label = key === 'eaqi' ? `European AQI` : cat.label;
  const text = key === 'eaqi' ? cat.label : `${value} · ${cat.label}`;
  return { text, value, label, cat };
}

// --- map -----------------------------------------------------------------------------------

function drawMap() {
  const L = S.layout;
  const svg = document.getElementById('map');
  svg.setAttribute('viewBox', `0 0 ${L.width} ${L.height}`);
  document.getElementById('city-name').textContent = `· ${L.name}`;
  for (const d of L.districts) {
    const [x, y, w, h] = d.rect;
    const g = el('g', { class: 'district', id: `district-${d.id}`, 'data-district': d.id, tabindex: 0, role: 'button' },
      el('title', {}, `${d.name} (${d.id}): ${d.segment_count} segments, ${d.station_count} stations`),
      el('rect', { class: 'area', x, y, width: w, height: h, rx: 6 }));
    for (const s of d.segments) {
      const [x1, y1, x2, y2] = s.line;
      g.append(el('line', { class: 'segment', x1, y1, x2, y2, 'stroke-width': 1 + s.lanes, 'data-segment': s.id }));
    }
    for (const s of d.stations) {
      g.append(el('circle', { class: 'station', cx: s.at[0], cy: s.at[1], r: 5, 'data-station': s.id }));
    }
    g.append(el('text', { class: 'name', x: x + 10, y: y + 20 }, d.name));
    g.append(el('text', { class: 'value', x: x + 10, y: y + 44, id: `value-${d.id}` }, '—'));
    g.append(el('text', { class: 'category', x: x + 10, y: y + 62, id: `category-${d.id}` }, 'no data'));
    const hidden = d.segment_count - d.segments.length;
    const more = hidden > 0 ? ` (+${hidden} segments not drawn)` : '';
    g.append(el('text', { class: 'sub', x: x + 10, y: y + h - 26 }, `${d.detector_count} detectors, ${d.station_count} stations${more}`));
    g.addEventListener('click', () => select(d.id));
    g.addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === ' ') select(d.id); });
    svg.append(g);
  }
}

function paintDistrict(id) {
  const g = document.getElementById(`district-${id}`);
  if (!g) return;
  const r = reading(S.measure, id);
  g.querySelector('rect.area').setAttribute('fill', r.cat.fill);
  for (const t of g.querySelectorAll('text')) t.setAttribute('fill', r.cat.text);
  document.getElementById(`value-${id}`).textContent = r.value === null ? '—' : r.value;
  document.getElementById(`category-${id}`).textContent = r.label;
  g.dataset.measure = S.measure;
  g.dataset.category = r.cat.token;
  // The US AQI always rides along, whatever is shown.
  const air = S.air[id];
  if (air && air.aqi !== undefined) {
    g.dataset.aqi = air.aqi;
    g.dataset.aqiCategory = air.category || '';
  }
}

function paintAll() {
  for (const d of S.layout.districts) paintDistrict(d.id);
  drawLegend();
}

function drawLegend() {
  const m = measureDef(S.measure);
  const legend = document.getElementById('legend');
  legend.replaceChildren(...m.categories.concat([S.palette.no_data]).map(c =>
    el('span', { class: 'swatch', style: `background:${c.fill};color:${c.text}` }, c.label)));
}

function setupMeasures() {
  const sel = document.getElementById('measure');
  for (const m of S.palette.measures) sel.append(el('option', { value: m.key }, m.label));
  sel.value = S.measure;
  sel.addEventListener('change', () => { S.measure = sel.value; paintAll(); });
}

// --- district panel ------------------------------------------------------------------------

function select(id) {
  S.selected = id;
  for (const g of document.querySelectorAll('.district')) g.classList.toggle('selected', g.dataset.district === id);
  loadPanel();
}

async function loadPanel() {
  const id = S.selected;
  if (!id) return;
  const d = await getJSON(`/api/district/${encodeURIComponent(id)}`).catch(() => null);
  if (!d || S.selected !== id) return;
  renderPanel(d);
}

function schedulePanel(id) {
  if (S.selected !== id || S.panelTimer) return;
  S.panelTimer = setTimeout(() => { S.panelTimer = null; loadPanel(); }, 1000);
}

function chart(title, points, unit, digits) {
  const pts = points.filter(p => typeof p[1] === 'number');
  const box = el('div', { class: 'chart' }, el('h4', {}, title));
  if (pts.length === 0) {
    box.append(el('p', { class: 'hint' }, '— no data'));
    return box;
  }
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0];
  const vs = pts.map(p => p[1]);
  const lo = Math.min(...vs), hi = Math.max(...vs);
  const span = hi - lo || 1, tspan = t1 - t0 || 1;
  const W = 300, H = 60;
  const coords = pts.map(p => `${((p[0] - t0) / tspan * W).toFixed(1)},${(H - 4 - (p[1] - lo) / span * (H - 8)).toFixed(1)}`);
  box.append(el('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': `${title} from ${lo} to ${hi}` },
    el('polyline', { points: coords.join(' ') })));
  box.append(el('div', { class: 'axis' },
    el('span', {}, fmtTime(t0).slice(11)),
    el('span', {}, `min ${num(lo, digits)} · max ${num(hi, digits)} · now ${num(vs[vs.length - 1], digits)} ${unit}`),
    el('span', {}, fmtTime(t1).slice(11))));
  return box;
}

function renderPanel(d) {
  const shape = S.layout.districts.find(x => x.id === d.district);
  document.getElementById('district-panel').hidden = false;
  document.getElementById('panel-title').textContent = `${shape ? shape.name : d.district} (${d.district})`;
  const air = d.air || {}, tr = d.traffic || {};
  const facts = [
    ['US AQI', reading('aqi', d.district).text],
    ['Dominant pollutant', air.dominant || '—'],
    ['European AQI', reading('eaqi', d.district).text],
    ['NowCast PM2.5', air.pm25_nowcast_ugm3 !== undefined ? `${air.pm25_nowcast_ugm3} µg/m³` : '—'],
    ['Level of service', tr.los ? `LOS ${tr.los}` : '—'],
    ['Congestion index', num(tr.congestion_index, 2)],
    ['Travel time index', num(tr.travel_time_index, 2)],
    ['Air window ends', fmtTime(air.window_end)],
  ];
  document.getElementById('panel-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  const ah = d.air_history, th = d.traffic_history;
  document.getElementById('panel-charts').replaceChildren(
    chart('US AQI', ah.map(p => [p[0], p[1]]), '', 0),
    chart('NowCast PM2.5', ah.map(p => [p[0], p[2]]), 'µg/m³', 1),
    chart('Congestion index', th.map(p => [p[0], p[1]]), '', 2),
    chart('Travel time index', th.map(p => [p[0], p[2]]), '', 2));
  const rows = d.worst_segments.map(w => el('tr', {},
    el('td', {}, w.segment), el('td', {}, num(w.congestion_index, 2)),
    el('td', {}, w.speed_kmh !== undefined && w.speed_kmh !== null ? `${num(w.speed_kmh, 0)} km/h` : '—'),
    el('td', {}, w.los || '—'), el('td', {}, num(w.travel_time_index, 2))));
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 5 }, '— no per-segment results yet')));
  document.querySelector('#worst-segments tbody').replaceChildren(...rows);
}

// --- alerts --------------------------------------------------------------------------------

function operator() { return document.getElementById('operator').value.trim() || 'web-operator'; }

function message(text) { document.getElementById('alert-message').textContent = text; }

async function act(op, body, done) {
  try {
    await getJSON(`/api/alerts/${op}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    message(done);
    S.active = await getJSON('/api/alerts/list', { method: 'POST', body: '' });
    renderFeed();
  } catch (e) {
    message(`${op} failed: ${e.message}`);
  }
}

function alertItem(a) {
  const li = el('li', { class: 'alert', 'data-id': a.id, 'data-severity': a.severity, 'data-acked': a.ack ? 'true' : 'false' },
    el('span', { class: 'badge' }, a.severity), a.summary,
    el('div', { class: 'meta' }, `${a.rule} · ${a.district}${a.sensor ? ' · ' + a.sensor : ''} · ${a.metric} ${a.value} · since ${fmtTime(a.started_at)}`));
  if (a.ack) li.append(el('div', { class: 'acked' }, `acknowledged by ${a.ack.by}`));
  if (a.silenced_by) li.append(el('div', { class: 'meta' }, `silenced (${a.silenced_by})`));
  const ack = el('button', { type: 'button', class: 'ack', 'data-id': a.id }, a.ack ? 'Acknowledged' : 'Acknowledge');
  ack.disabled = Boolean(a.ack);
  ack.addEventListener('click', () => act('ack', { id: a.id, by: operator(), comment: 'from the web view' }, `acknowledged ${a.id}`));
  const silence = el('button', { type: 'button', class: 'silence', 'data-id': a.id }, 'Silence 2 h');
  silence.addEventListener('click', () => act('silence',
    { matcher: { rule: a.rule, district: a.district }, duration: '2h', by: operator(), comment: 'from the web view' },
    `silenced ${a.rule} in ${a.district} for 2 h`));
  li.append(el('div', {}, ack, silence));
  return li;
}

const SEVERITY = { info: 0, warning: 1, critical: 2 };

// firing, resolved, or escalated: a firing of an incident that already fired less severely.
function transitionKind(t) {
  if (t.state !== 'firing') return t.state;
  const earlier = S.transitions.some(x => x.id === t.id && x.state === 'firing' && x.at < t.at
    && SEVERITY[x.severity] < SEVERITY[t.severity]);
  return earlier ? 'escalated' : 'firing';
}

function transitionItem(t) {
  const kind = transitionKind(t);
  return el('li', { class: 'transition', 'data-id': t.id, 'data-state': t.state, 'data-transition': kind, 'data-severity': t.severity },
    el('span', { class: 'badge' }, `${kind} ${t.severity}`), t.summary,
    el('div', { class: 'meta' }, `${t.rule} · ${t.district} · ${fmtTime(t.at)}`));
}

function renderFeed() {
  const active = (S.active && S.active.alerts) || [];
  const ul = document.getElementById('active-alerts');
  ul.replaceChildren(...(active.length ? active.map(alertItem) : [el('li', { class: 'empty' }, 'no active alerts')]));
  const tl = document.getElementById('transitions');
  tl.replaceChildren(...(S.transitions.length ? S.transitions.map(transitionItem) : [el('li', { class: 'empty' }, 'none yet')]));
}

function addTransition(t) {
  const key = x => `${x.id}|${x.state}|${x.severity}|${x.at}`;
  if (S.transitions.some(x => key(x) === key(t))) return;
  S.transitions.push(t);
  S.transitions.sort((a, b) => b.at - a.at);
  S.transitions.length = Math.min(S.transitions.length, 50);
}

// --- live ----------------------------------------------------------------------------------

function status(state, text) {
  const s = document.getElementById('status');
  s.dataset.state = state;
  s.textContent = text;
}

function connect() {
  const es = new EventSource('/api/events');
  es.addEventListener('open', () => status('live', 'live'));
  es.addEventListener('error', () => status('reconnecting', 'reconnecting…'));
  es.addEventListener('snapshot', e => {
    const snap = JSON.parse(e.data);
    S.air = snap.air; S.traffic = snap.traffic;
    S.transitions = []; snap.transitions.forEach(addTransition);
    S.active = snap.active;
    paintAll(); renderFeed(); loadPanel();
    status('live', 'live');
  });
  es.addEventListener('district', e => {
    const u = JSON.parse(e.data);
    (u.kind === 'air' ? S.air : S.traffic)[u.district] = u.result;
    paintDistrict(u.district);
    schedulePanel(u.district);
  });
  es.addEventListener('alert', e => { addTransition(JSON.parse(e.data)); renderFeed(); });
  es.addEventListener('active', e => { S.active = JSON.parse(e.data); renderFeed(); });
}

async function main() {
  [S.layout, S.palette] = await Promise.all([getJSON('/api/layout'), getJSON('/api/palette')]);
  setupMeasures();
  drawMap();
  paintAll();
  renderFeed();
  document.getElementById('panel-close').addEventListener('click', () => {
    S.selected = null;
    document.getElementById('district-panel').hidden = true;
    for (const g of document.querySelectorAll('.district')) g.classList.remove('selected');
  });
  connect();
}

main().catch(e => status('reconnecting', `failed to start: ${e.message}`));
