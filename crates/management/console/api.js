// Helpers shared by the pages: API calls, DOM building (text only: names and message bodies
// come from clients and are never parsed as HTML), formatting, tables and a line chart.

export const enc = encodeURIComponent;

// Calls brook's management API. The browser sends the HTTP Basic credentials it logged in
// with; errors carry RabbitMQ's {"error", "reason"} text.
export async function api(path, { method = 'GET', body, headers = {} } = {}) {
  const init = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) {
    const reason = data && (data.reason || data.error);
    throw new Error(`${method} ${path}: ${r.status} ${reason ? JSON.stringify(reason) : ''}`);
  }
  return data;
}

// h('td', {class: 'num'}, 'text', otherNode): an element; strings become text nodes.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function fmtNum(n) {
  return n === undefined || n === null ? '' : Number(n).toLocaleString('en-US');
}

export function fmtBytes(n) {
  if (n === undefined || n === null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function fmtRate(r) {
  return `${r >= 100 ? Math.round(r).toLocaleString('en-US') : r.toFixed(1)}/s`;
}

export function fmtTime(ms) {
  return ms ? new Date(ms).toISOString().replace('T', ' ').replace('Z', '') : '';
}

// columns: [{ title, value: row => string | Node, num }]
export function table(columns, rows, empty = 'None.') {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h('table', {},
    h('thead', {}, h('tr', {}, columns.map(c => h('th', {}, c.title)))),
    h('tbody', {}, rows.map(r => h('tr', {}, columns.map(c =>
      h('td', { class: c.num ? 'num' : null }, c.value(r)))))));
}

export function card(key, value) {
  return h('div', { class: 'card' }, h('div', { class: 'k' }, key), h('div', { class: 'v' }, value));
}

export function errorBox(e) {
  return h('p', { class: 'error' }, String(e.message || e));
}

// A line chart of several series of equal length: [{ name, cls, points: [numbers] }].
export function lineChart(series, width = 600, height = 160) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  // Headroom above the highest point, so a steady rate is not drawn on the top edge.
  const max = 1.25 * Math.max(1, ...series.flatMap(s => s.points));
  for (const s of series) {
    const n = Math.max(1, s.points.length - 1);
    const d = s.points.map((v, i) =>
      `${(i / n) * width},${height - 4 - (v / max) * (height - 8)}`).join(' ');
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', d);
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', s.cls === 'in' ? '#2563eb' : '#16a34a');
    line.setAttribute('stroke-width', '2');
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(line);
  }
  return svg;
}
