// The trace page (/ui/traces/<trace_id>[?span=<span_id>]): every span of the trace (POST trace/:id, all
// pages) as a waterfall: nested by parent, bars on one time axis, self time, errors marked, events as ticks.
// A click shows the span's attributes, resource, events and links.

import {colorOf} from './chart.js';
import {clear, formatDurationNs, formatTime, h, isoToMicros, link} from './dom.js';

const KINDS = ['unspecified', 'internal', 'server', 'client', 'producer', 'consumer'];
const STATUS = ['unset', 'ok', 'error'];
const HEX_TRACE_ID = /^[0-9a-f]{32}$/i;

/** Spans → depth-first order under their parents (children by start time); a span whose parent is not in
 * the trace (not yet arrived, or a remote parent) is shown as a root. Cycles in bad data cannot loop. */
export function buildTree(spans) {
  const nodes = spans.map((span, index) => ({span, index, start: isoToMicros(span.timestamp),
                                             durUs: span.duration_nano / 1000, children: [], depth: 0}));
  const byId = new Map(nodes.map((n) => [n.span.span_id, n]));
  const roots = [];
  for (const n of nodes) {
    const parent = n.span.parent_span_id ? byId.get(n.span.parent_span_id) : undefined;
    if (parent && parent !== n) parent.children.push(n);
    else roots.push(n);
  }
  const byStart = (a, b) => a.start - b.start || a.index - b.index;
  const ordered = [];
  const seen = new Set();
  const stack = roots.sort(byStart).reverse().map((n) => [n, 0]);
  while (stack.length) {
    const [n, depth] = stack.pop();
    if (seen.has(n)) continue;
    seen.add(n);
    n.depth = depth;
    ordered.push(n);
    n.children.sort(byStart);
    for (let i = n.children.length - 1; i >= 0; i--) stack.push([n.children[i], depth + 1]);
  }
  // Spans only reachable through a cycle: show them as roots rather than lose them.
  for (const n of nodes) if (!seen.has(n)) { n.depth = 0; ordered.push(n); }
  return ordered;
}

function kvTable(map, emptyText) {
  const keys = Object.keys(map || {}).sort();
  if (!keys.length) return h('p', {class: 'hint'}, emptyText);
  return h('table', {class: 'kv'}, h('tbody', {}, keys.map((k) => h('tr', {}, h('th', {}, k), h('td', {}, map[k])))));
}

function details(node, traceStart) {
  const s = node.span;
  const error = s.status_code === 2;
  const rows = [
    ['service', s.service_name], ['span id', s.span_id], ['parent span id', s.parent_span_id || '(root)'],
    ['kind', KINDS[s.kind] || String(s.kind)],
    ['status', `${STATUS[s.status_code] || s.status_code}${s.status_message ? `: ${s.status_message}` : ''}`],
    ['start', `${formatTime(s.timestamp)} (+${formatDurationNs((node.start - traceStart) * 1000)})`],
    ['duration', formatDurationNs(s.duration_nano)], ['self time', formatDurationNs(s.self_time_nano)],
  ];
  const events = s.events || [];
  const links = s.links || [];
  return h('div', {class: 'span-details', id: 'span-details', dataset: {spanId: s.span_id}},
    h('h3', {}, s.name || '(no name)', error ? h('span', {class: 'badge error'}, 'error') : ''),
    h('table', {class: 'kv'}, h('tbody', {}, rows.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v))))),
    h('h4', {}, 'Attributes'), kvTable(s.attributes, 'none'),
    h('h4', {}, 'Resource'), kvTable(s.resource_attributes, 'none'),
    h('h4', {}, `Events (${events.length})`),
    events.length ? h('table', {class: 'events'}, h('tbody', {}, events.map((e) => h('tr', {},
      h('td', {class: 'mono'}, `+${formatDurationNs((isoToMicros(e.timestamp) - node.start) * 1000)}`),
      h('td', {}, e.name), h('td', {}, kvTable(e.attributes, '')))))) : h('p', {class: 'hint'}, 'none'),
    h('h4', {}, `Links (${links.length})`),
    links.length ? h('ul', {class: 'links'}, links.map((l) => h('li', {},
      HEX_TRACE_ID.test(l.trace_id) ? link(`/ui/traces/${l.trace_id.toLowerCase()}?span=${encodeURIComponent(l.span_id)}`,
                                           `trace ${l.trace_id}`) : `trace ${l.trace_id}`,
      ` span ${l.span_id}`, kvTable(l.attributes, '')))) : h('p', {class: 'hint'}, 'none'));
}

function axis(totalUs) {
  return h('div', {class: 'wf-row wf-axis'}, h('div', {class: 'wf-label'}, 'span'),
    h('div', {class: 'wf-track'}, [0, 0.25, 0.5, 0.75, 1].map((f) =>
      h('span', {class: 'wf-tick', style: {left: `${f * 100}%`}}, formatDurationNs(Math.round(f * totalUs * 1000))))),
    h('div', {class: 'wf-dur'}, 'duration'), h('div', {class: 'wf-dur'}, 'self'));
}

/** One row's skeleton, cloned per span: cloneNode is several times cheaper than building each element. */
function rowTemplate() {
  return h('div', {class: 'wf-row', tabindex: 0},
    h('div', {class: 'wf-label'}, h('span', {class: 'wf-toggle'}), h('span', {class: 'svc'}), ' ', h('span', {class: 'wf-name'})),
    h('div', {class: 'wf-track'}, h('div', {class: 'wf-bar'})),
    h('div', {class: 'wf-dur'}), h('div', {class: 'wf-dur self'}));
}

/** The waterfall's rows (one DOM subtree per span, built in one pass into a fragment). Clicks and keys are
 * handled by one listener on the container (see renderTrace), not one closure per row. Telemetry goes in
 * through textContent / dataset only. */
function waterfall(ordered, traceStart, totalUs, services) {
  const frag = document.createDocumentFragment();
  const template = rowTemplate();
  const pct = (us) => `${Math.min(100, Math.max(0, (100 * us) / totalUs))}%`;
  for (const n of ordered) {
    const s = n.span;
    const error = s.status_code === 2;
    const color = colorOf(services.get(s.service_name));
    const row = template.cloneNode(true);
    const [label, track, dur, self] = row.children;
    const [toggleSlot, svc, , name] = label.childNodes;
    const bar = track.firstChild;
    row.dataset.spanId = s.span_id;
    row.dataset.parentSpanId = s.parent_span_id;
    row.dataset.depth = n.depth;
    label.style.paddingLeft = `${n.depth * 14}px`;
    svc.textContent = s.service_name;
    svc.style.borderColor = color;
    name.textContent = s.name || '(no name)';
    bar.style.left = pct(n.start - traceStart);
    bar.style.width = pct(Math.max(n.durUs, totalUs / 2000));
    if (error) {
      row.classList.add('error');
      // The error mark comes before the (possibly long, clipped) name so it is always visible.
      svc.before(h('span', {class: 'badge error', title: s.status_message || 'status error'}, '!'));
    } else {
      bar.style.backgroundColor = color;
    }
    for (const e of s.events || []) {
      track.append(h('span', {class: 'wf-event', title: e.name, style: {left: pct(isoToMicros(e.timestamp) - traceStart)}}));
    }
    if (n.children.length) {
      n.toggle = h('button', {type: 'button', class: 'wf-toggle', title: 'collapse / expand'}, '▾');
      toggleSlot.replaceWith(n.toggle);
    }
    dur.textContent = formatDurationNs(s.duration_nano);
    self.textContent = formatDurationNs(s.self_time_nano);
    n.row = row;
    frag.append(row);
  }
  return frag;
}

function setDescendantsVisible(node, visible) {
  for (const child of node.children) {
    child.row.hidden = !visible;
    setDescendantsVisible(child, visible && !child.collapsed);
  }
}

function toggleNode(node) {
  node.collapsed = !node.collapsed;
  node.toggle.textContent = node.collapsed ? '▸' : '▾';
  setDescendantsVisible(node, !node.collapsed);
}

export async function renderTrace(ctx, traceId) {
  const heading = h('h2', {}, 'Trace ', h('code', {id: 'trace-id'}, traceId));
  ctx.main.append(h('section', {class: 'panel'}, h('p', {}, link('/ui/traces', '← search')), heading));
  if (!HEX_TRACE_ID.test(traceId)) {
    ctx.main.append(h('div', {class: 'error-banner', role: 'alert'}, 'A trace id is 32 hexadecimal characters.'));
    return;
  }
  const {spans, truncated} = await ctx.api.trace(traceId.toLowerCase());
  if (!ctx.current()) return;
  performance.mark('trace:fetched');
  if (!spans.length) {
    ctx.main.append(h('p', {class: 'hint', id: 'trace-empty'}, 'No spans of this trace are stored (yet, or any more).'));
    return;
  }
  const ordered = buildTree(spans);
  const services = new Map();
  for (const n of ordered) if (!services.has(n.span.service_name)) services.set(n.span.service_name, services.size);
  let traceStart = Infinity;
  let traceEnd = -Infinity;
  for (const n of ordered) {
    traceStart = Math.min(traceStart, n.start);
    traceEnd = Math.max(traceEnd, n.start + n.durUs);
  }
  const totalUs = Math.max(1, traceEnd - traceStart);
  const errors = ordered.filter((n) => n.span.status_code === 2).length;
  const root = ordered[0].span;

  const detailHolder = h('aside', {class: 'panel detail-holder'}, h('p', {class: 'hint'}, 'Click a span for its details.'));
  let selected = null;
  const select = (n) => {
    if (selected) selected.row.classList.remove('selected');
    selected = n;
    n.row.classList.add('selected');
    clear(detailHolder).append(details(n, traceStart));
    const url = new URL(location.href);
    url.searchParams.set('span', n.span.span_id);
    history.replaceState(null, '', url);
  };
  const bySpanId = new Map(ordered.map((n) => [n.span.span_id, n]));
  const nodeOf = (target) => {
    const row = target.closest('.wf-row[data-span-id]');
    return row && bySpanId.get(row.dataset.spanId);
  };
  const rows = h('div', {class: 'waterfall', id: 'waterfall',
    onclick: (e) => {
      const n = nodeOf(e.target);
      if (!n) return;
      if (e.target.closest('button.wf-toggle')) toggleNode(n);
      else select(n);
    },
    onkeydown: (e) => {
      const n = e.key === 'Enter' && nodeOf(e.target);
      if (n) select(n);
    }}, axis(totalUs), waterfall(ordered, traceStart, totalUs, services));
  performance.mark('trace:built');
  heading.after(h('p', {class: 'trace-summary', id: 'trace-summary'},
    `${root.service_name}: ${root.name} · ${spans.length} spans · ${services.size} services · `,
    formatDurationNs(Math.round(totalUs * 1000)), ` · started ${formatTime(root.timestamp)}`,
    errors ? [' · ', h('span', {class: 'badge error'}, `${errors} error${errors > 1 ? 's' : ''}`)] : '',
    truncated ? ' · only the first spans are shown' : ''));
  ctx.main.append(h('div', {class: 'trace-layout'}, h('section', {class: 'panel wf-panel'}, rows), detailHolder));
  const wanted = ctx.params.get('span');
  const initial = wanted && ordered.find((n) => n.span.span_id === wanted);
  if (initial) {
    select(initial);
    initial.row.scrollIntoView({block: 'center'});
  }
  // Rendered = the rows are in the document and the browser has laid them out and painted a frame.
  requestAnimationFrame(() => setTimeout(() => {
    performance.measure('trace:build', 'trace:fetched', 'trace:built');
    performance.measure('trace:render', 'trace:fetched');
    rows.dataset.ready = String(spans.length);
  }, 0));
}
