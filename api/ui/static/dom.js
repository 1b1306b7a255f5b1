// DOM building without HTML strings. Everything from telemetry is attacker-controlled (issue 18), so text
// goes in through text nodes only: no HTML string is ever parsed (tests/test_ui.py checks every file for the
// DOM APIs that would parse one).

/** h('div', {class: 'x', onclick: fn, dataset: {id: 1}}, 'text', child, [more]) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name === 'style') Object.assign(el.style, value);  // CSSOM: allowed by a strict CSP
    else if (name in el && typeof value !== 'string') el[name] = value;  // checked, value, hidden...
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** A same-app link that navigates without a page load (app.js listens for clicks on a[data-nav]). */
export function link(href, ...children) {
  return h('a', {href, dataset: {nav: ''}}, ...children);
}

export function formatDurationNs(ns) {
  if (ns === null || ns === undefined || !Number.isFinite(ns)) return '';
  if (ns < 1e3) return `${ns} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(ns < 1e4 ? 2 : 1)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(ns < 1e7 ? 2 : 1)} ms`;
  if (ns < 60e9) return `${(ns / 1e9).toFixed(2)} s`;
  return `${Math.floor(ns / 60e9)} m ${Math.round((ns % 60e9) / 1e9)} s`;
}

/** ISO 8601 UTC with up to 9 fraction digits → microseconds since the epoch (Date.parse keeps only ms). */
export function isoToMicros(iso) {
  const m = /^(.*?)(?:\.(\d+))?Z$/.exec(iso);
  if (!m) return Date.parse(iso) * 1000;
  const frac = (m[2] || '').padEnd(6, '0').slice(0, 6);
  return Date.parse(m[1] + 'Z') * 1000 + Number(frac);
}

export function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function formatNumber(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
  return String(Math.round(v * 1000) / 1000);
}
