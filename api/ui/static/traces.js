// Trace search: the PostHog span query (posthog-tracing.md "POST query") as a form whose state lives in the
// URL (/ui/traces?service=checkout&status=error&f=... is a deep link), the sparkline above the results,
// and a results list whose rows open the trace page.

import {sparklineChart} from './chart.js';
import {clear, formatDurationNs, formatTime, h, isoToMicros, link} from './dom.js';

export const RANGES = [['-15M', 'last 15 minutes'], ['-1h', 'last hour'], ['-6h', 'last 6 hours'],
                       ['-24h', 'last 24 hours'], ['-7d', 'last 7 days'], ['all', 'all retained']];
const OPERATORS = ['exact', 'is_not', 'icontains', 'not_icontains', 'regex', 'not_regex', 'gt', 'lt',
                   'is_set', 'is_not_set'];
const FILTER_TYPES = [['span_attribute', 'span attribute'], ['span_resource_attribute', 'resource attribute'],
                      ['span', 'span field']];
const SPAN_FIELDS = ['name', 'duration', 'kind', 'status_code', 'trace_id', 'span_id'];
const PAGE = 50;

/** The search as it is written in the URL. */
function readState(params) {
  const filters = [];
  for (const raw of params.getAll('f')) {
    try {
      const f = JSON.parse(raw);
      if (f && typeof f.key === 'string') filters.push(f);
    } catch { /* a hand-edited URL: ignore the broken filter, keep the rest */ }
  }
  return {
    range: params.get('range') || '-1h',
    service: params.get('service') || '',
    status: params.get('status') || '',
    min: params.get('min') || '',
    max: params.get('max') || '',
    root: params.get('root') !== '0',
    order: params.get('order') === 'duration' ? 'duration' : 'timestamp',
    filters,
  };
}

function writeState(state) {
  const p = new URLSearchParams();
  if (state.range !== '-1h') p.set('range', state.range);
  for (const k of ['service', 'status', 'min', 'max']) if (state[k]) p.set(k, state[k]);
  if (!state.root) p.set('root', '0');
  if (state.order !== 'timestamp') p.set('order', state.order);
  for (const f of state.filters) p.append('f', JSON.stringify(f));
  const qs = p.toString();
  return '/ui/traces' + (qs ? `?${qs}` : '');
}

/** The body of POST tracing/spans/query (and sparkline) for a search. */
export function spanQuery(state) {
  const q = {dateRange: {date_from: state.range, date_to: null}, rootSpans: state.root};
  if (state.service) q.serviceNames = [state.service];
  if (state.status === 'error') q.statusCodes = [2];
  else if (state.status === 'ok') q.statusCodes = [0, 1];
  const values = state.filters.map((f) => ({...f}));
  if (state.min !== '') values.push({key: 'duration', type: 'span', operator: 'gt', value: Number(state.min)});
  if (state.max !== '') values.push({key: 'duration', type: 'span', operator: 'lt', value: Number(state.max)});
  if (values.length) q.filterGroup = {type: 'AND', values};
  return q;
}

function select(name, options, value) {
  return h('select', {name}, options.map(([v, label]) => h('option', {value: v, selected: v === value}, label)));
}

function filterRow(ctx, filter, onRemove) {
  const type = select('ftype', FILTER_TYPES, filter.type || 'span_attribute');
  const keysId = `keys-${Math.random().toString(36).slice(2)}`;
  const valuesId = `values-${Math.random().toString(36).slice(2)}`;
  const keyList = h('datalist', {id: keysId});
  const valueList = h('datalist', {id: valuesId});
  const key = h('input', {name: 'fkey', list: keysId, placeholder: 'key', value: filter.key || '', size: 22});
  const op = select('fop', OPERATORS.map((o) => [o, o]), filter.operator || 'exact');
  const value = h('input', {name: 'fvalue', list: valuesId, placeholder: 'value', size: 22,
                            value: filter.value === undefined ? '' : String(filter.value)});
  const attributeType = () => (type.value === 'span_resource_attribute' ? 'resource' : 'span');
  const fillKeys = async () => {
    if (type.value === 'span') {
      clear(keyList).append(...SPAN_FIELDS.map((f) => h('option', {value: f})));
      return;
    }
    try {
      const r = await ctx.api.attributes(attributeType(), key.value);
      clear(keyList).append(...r.results.map((a) => h('option', {value: a.name})));
    } catch { /* suggestions are optional */ }
  };
  const fillValues = async () => {
    if (type.value === 'span' || !key.value) return clear(valueList);
    try {
      const r = await ctx.api.values(attributeType(), key.value, value.value);
      clear(valueList).append(...r.results.map((v) => h('option', {value: v.name})));
    } catch { /* suggestions are optional */ }
  };
  key.addEventListener('focus', fillKeys);
  type.addEventListener('change', fillKeys);
  value.addEventListener('focus', fillValues);
  const row = h('div', {class: 'filter-row'}, type, key, keyList, op, value, valueList,
                h('button', {type: 'button', class: 'link', title: 'remove this filter', onclick: () => { row.remove(); onRemove(); }}, '✕'));
  row.read = () => {
    if (!key.value.trim()) return null;
    const f = {key: key.value.trim(), type: type.value, operator: op.value};
    if (!['is_set', 'is_not_set'].includes(op.value)) {
      const numeric = ['gt', 'lt'].includes(op.value) || (type.value === 'span' && ['duration', 'kind', 'status_code'].includes(f.key));
      f.value = numeric && value.value.trim() !== '' && !Number.isNaN(Number(value.value)) ? Number(value.value) : value.value;
    }
    return f;
  };
  return row;
}

function searchForm(ctx, state) {
  const services = h('select', {name: 'service'}, h('option', {value: ''}, 'all services'));
  if (state.service) services.append(h('option', {value: state.service, selected: true}, state.service));
  const loadServices = async (range) => {
    try {
      const r = await ctx.api.serviceNames({date_from: range, date_to: null});
      const chosen = services.value;
      clear(services).append(h('option', {value: ''}, 'all services'));
      const names = r.results.map((s) => s.name);
      if (chosen && !names.includes(chosen)) names.unshift(chosen);
      services.append(...names.map((n) => h('option', {value: n, selected: n === chosen}, n)));
    } catch (e) { ctx.fail(e); }
  };
  const range = select('range', RANGES, state.range);
  range.addEventListener('change', () => loadServices(range.value));
  loadServices(state.range);
  const status = select('status', [['', 'any status'], ['error', 'error'], ['ok', 'ok / unset']], state.status);
  const min = h('input', {name: 'min', type: 'number', min: 0, step: 'any', placeholder: 'min ms', value: state.min, size: 8});
  const max = h('input', {name: 'max', type: 'number', min: 0, step: 'any', placeholder: 'max ms', value: state.max, size: 8});
  const root = h('input', {name: 'root', type: 'checkbox', checked: state.root});
  const order = select('order', [['timestamp', 'newest first'], ['duration', 'slowest first']], state.order);
  const filters = h('div', {class: 'filters'});
  const addFilter = (f) => filters.append(filterRow(ctx, f, () => {}));
  state.filters.forEach(addFilter);
  return h('form', {class: 'panel search', id: 'trace-search', onsubmit: (e) => {
    e.preventDefault();
    const next = {range: range.value, service: services.value, status: status.value, min: min.value,
                  max: max.value, root: root.checked, order: order.value,
                  filters: [...filters.children].map((r) => r.read()).filter(Boolean)};
    ctx.navigate(writeState(next));
  }},
  h('div', {class: 'row'},
    h('label', {}, 'Service ', services), h('label', {}, 'Time ', range), h('label', {}, 'Status ', status),
    h('label', {}, 'Duration ', min, ' – ', max), h('label', {}, root, ' root spans only'),
    h('label', {}, 'Order ', order)),
  filters,
  h('div', {class: 'row'},
    h('button', {type: 'button', onclick: () => addFilter({})}, '+ attribute filter'),
    h('button', {type: 'submit', class: 'primary', id: 'search-button'}, 'Search')));
}

function resultRow(span, maxDuration) {
  const error = span.status_code === 2;
  const bar = h('span', {class: 'dur-bar', style: {width: `${Math.max(1, (100 * span.duration_nano) / maxDuration)}%`}});
  return h('tr', {class: error ? 'error' : '', dataset: {traceId: span.trace_id, spanId: span.span_id}},
    h('td', {class: 'time'}, formatTime(span.timestamp)),
    h('td', {}, span.service_name),
    h('td', {}, link(`/ui/traces/${span.trace_id}?span=${span.span_id}`, span.name || '(no name)')),
    h('td', {class: 'dur'}, h('span', {class: 'dur-track'}, bar), ' ', formatDurationNs(span.duration_nano)),
    h('td', {}, error ? h('span', {class: 'badge error'}, 'error') : ''),
    h('td', {class: 'mono'}, link(`/ui/traces/${span.trace_id}`, span.trace_id)));
}

async function drawSparkline(ctx, holder, query, results) {
  if (query.dateRange.date_from === 'all') return;
  const r = await ctx.api.sparkline(query);
  if (!ctx.current()) return;
  const totals = new Map();
  for (const row of r.results) {
    const t = Date.parse(row.time) / 1000;
    totals.set(t, (totals.get(t) || 0) + row.count);
  }
  const times = [...totals.keys()].sort((a, b) => a - b);
  if (!times.length) return;
  const step = times.length > 1 ? times[1] - times[0] : 60;
  const slowest = new Array(times.length).fill(null);
  for (const span of results) {
    const t = isoToMicros(span.timestamp) / 1e6;
    const i = Math.min(times.length - 1, Math.max(0, Math.floor((t - times[0]) / step)));
    const ms = span.duration_nano / 1e6;
    if (slowest[i] === null || ms > slowest[i]) slowest[i] = ms;
  }
  clear(holder);
  sparklineChart(holder, {times, counts: times.map((t) => totals.get(t)), slowestMs: slowest});
}

export async function renderSearch(ctx) {
  const state = readState(ctx.params);
  const query = spanQuery(state);
  const sparkHolder = h('div', {class: 'sparkline', id: 'sparkline'});
  const body = h('tbody');
  const summary = h('p', {class: 'hint', id: 'result-summary'}, 'Searching…');
  const more = h('button', {type: 'button', hidden: true, id: 'load-more'}, 'Load more');
  ctx.main.append(searchForm(ctx, state),
    h('section', {class: 'panel'}, sparkHolder, summary,
      h('table', {class: 'results', id: 'trace-results'},
        h('thead', {}, h('tr', {}, ['Start (UTC)', 'Service', 'Name', 'Duration', 'Status', 'Trace'].map((c) => h('th', {}, c)))),
        body),
      more));
  const shown = [];
  let maxDuration = 1;
  const page = async (cursor) => {
    const q = {...query, limit: PAGE, orderBy: state.order, orderDirection: 'DESC'};
    // Timestamp order pages by keyset cursor, duration order by offset (posthog-tracing.md).
    if (state.order === 'duration' && shown.length) q.offset = shown.length;
    else if (cursor) q.after = cursor;
    const r = await ctx.api.querySpans(q);
    if (!ctx.current()) return null;
    shown.push(...r.results);
    maxDuration = Math.max(maxDuration, ...shown.map((s) => s.duration_nano));
    clear(body).append(...shown.map((s) => resultRow(s, maxDuration)));
    summary.textContent = shown.length ? `${shown.length} ${state.root ? 'traces' : 'spans'}${r.hasMore ? ' (more available)' : ''}`
                                       : 'No spans match this search.';
    more.hidden = !r.hasMore;
    more.onclick = () => page(r.nextCursor).catch(ctx.fail);
    return r;
  };
  const first = await page(null);
  if (first) await drawSparkline(ctx, sparkHolder, query, shown).catch(ctx.fail);
}
