// Metrics (/ui/metrics?metric=...): a picker over GET metrics/values, aggregation, group-by and filters for
// POST metrics/query, one line per returned group; dragging across the chart characterizes that window
// (POST metrics/characterize): baseline and anomaly shaded, onset marked, top movers each charting its
// own series. Exemplars of the metric (from the OpenMetrics scrape) link to their traces.

import {lineChart} from './chart.js';
import {clear, formatNumber, formatTime, h, link} from './dom.js';
import {RANGES} from './traces.js';

const AGGREGATIONS = ['', 'sum', 'avg', 'min', 'max', 'count', 'p50', 'p90', 'p95', 'p99', 'rate', 'increase',
                      'histogram_quantile'];
const INTERVALS = ['', 'second', 'minute', 'minute_5', 'minute_15', 'hour', 'hour_6', 'day', 'week'];
const FILTER_OPS = [['eq', '='], ['neq', '≠'], ['regex', '=~'], ['not_regex', '!~']];
const BASELINE_FILL = 'rgba(31,119,180,0.13)';
const ANOMALY_FILL = 'rgba(214,39,40,0.13)';
const ONSET_STROKE = '#d62728';

function readState(params) {
  const filters = [];
  for (const raw of params.getAll('filter')) {
    try {
      const f = JSON.parse(raw);
      if (f && typeof f.key === 'string') filters.push(f);
    } catch { /* ignore a broken hand-edited filter */ }
  }
  return {
    metric: params.get('metric') || '',
    aggregation: params.get('agg') || '',
    quantile: params.get('q') || '',
    groupBy: (params.get('group') || '').split(',').map((k) => k.trim()).filter(Boolean),
    range: params.get('range') || '-1h',
    interval: params.get('interval') || '',
    filters,
    anomalyFrom: params.get('afrom') || '',
    anomalyTo: params.get('ato') || '',
  };
}

function writeState(state) {
  const p = new URLSearchParams();
  if (state.metric) p.set('metric', state.metric);
  if (state.aggregation) p.set('agg', state.aggregation);
  if (state.quantile) p.set('q', state.quantile);
  if (state.groupBy.length) p.set('group', state.groupBy.join(','));
  if (state.range !== '-1h') p.set('range', state.range);
  if (state.interval) p.set('interval', state.interval);
  for (const f of state.filters) p.append('filter', JSON.stringify(f));
  if (state.anomalyFrom) p.set('afrom', state.anomalyFrom);
  if (state.anomalyTo) p.set('ato', state.anomalyTo);
  const qs = p.toString();
  return '/ui/metrics' + (qs ? `?${qs}` : '');
}

/** The body of POST metrics/query for the form's state. */
export function metricQuery(state) {
  const q = {metricName: state.metric, dateFrom: state.range === 'all' ? '-30d' : state.range};
  if (state.aggregation) q.aggregation = state.aggregation;
  if (state.aggregation === 'histogram_quantile' && state.quantile) q.quantile = Number(state.quantile);
  if (state.groupBy.length) q.groupBy = state.groupBy.map((key) => ({key}));
  if (state.filters.length) q.filters = state.filters;
  if (state.interval) q.interval = state.interval;
  return q;
}

export function seriesLabel(result) {
  const entries = Object.entries(result.labels || {});
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(', ') : (result.metric_name || 'value');
}

/** API results (one grid of bucket times) → uPlot's columns. */
export function toColumns(results) {
  const times = [...new Set(results.flatMap((r) => r.points.map((p) => p.time)))].sort();
  const index = new Map(times.map((t, i) => [t, i]));
  const series = results.filter((r) => r.points.length).map((r) => {
    const values = new Array(times.length).fill(null);
    for (const p of r.points) values[index.get(p.time)] = p.value;
    return {label: seriesLabel(r), values};
  });
  return {times: times.map((t) => Date.parse(t) / 1000), series};
}

function options(values, chosen) {
  return values.map((v) => h('option', {value: v, selected: v === chosen}, v || 'default'));
}

function filterRow(filter) {
  const key = h('input', {name: 'mkey', placeholder: 'label', value: filter.key || '', size: 16});
  const op = h('select', {name: 'mop'}, FILTER_OPS.map(([v, label]) => h('option', {value: v, selected: v === (filter.op || 'eq')}, label)));
  const value = h('input', {name: 'mvalue', placeholder: 'value', value: filter.value === undefined ? '' : String(filter.value), size: 16});
  const row = h('div', {class: 'filter-row'}, key, op, value,
                h('button', {type: 'button', class: 'link', onclick: () => row.remove()}, '✕'));
  row.read = () => (key.value.trim() ? {key: key.value.trim(), op: op.value, value: value.value} : null);
  return row;
}

function metricForm(ctx, state) {
  const names = h('datalist', {id: 'metric-names'});
  const metric = h('input', {name: 'metric', id: 'metric-input', list: 'metric-names', value: state.metric,
                             placeholder: 'metric name', size: 36, autocomplete: 'off', required: true});
  let pending = 0;
  const suggest = async () => {
    const mine = ++pending;
    try {
      const r = await ctx.api.metricNames(metric.value);
      if (mine !== pending) return;
      clear(names).append(...r.results.map((m) => h('option', {value: m.name}, m.metric_type)));
    } catch (e) { ctx.fail(e); }
  };
  metric.addEventListener('input', suggest);
  suggest();
  const aggregation = h('select', {name: 'agg', id: 'agg-select'}, options(AGGREGATIONS, state.aggregation));
  const quantile = h('input', {name: 'q', type: 'number', min: 0.001, max: 0.999, step: 'any', placeholder: '0.95',
                               value: state.quantile, size: 5});
  const group = h('input', {name: 'group', id: 'group-input', value: state.groupBy.join(', '), size: 24,
                            placeholder: 'group by: service_name, route'});
  const range = h('select', {name: 'range'}, RANGES.map(([v, label]) => h('option', {value: v, selected: v === state.range}, label)));
  const interval = h('select', {name: 'interval'}, options(INTERVALS, state.interval).map((o) => {
    if (!o.value) o.textContent = 'auto interval';
    return o;
  }));
  const filters = h('div', {class: 'filters'}, state.filters.map(filterRow));
  return h('form', {class: 'panel search', id: 'metric-form', onsubmit: (e) => {
    e.preventDefault();
    ctx.navigate(writeState({metric: metric.value.trim(), aggregation: aggregation.value, quantile: quantile.value,
      groupBy: group.value.split(',').map((k) => k.trim()).filter(Boolean), range: range.value,
      interval: interval.value, filters: [...filters.children].map((r) => r.read()).filter(Boolean),
      anomalyFrom: '', anomalyTo: ''}));
  }},
  h('div', {class: 'row'}, h('label', {}, 'Metric ', metric), names, h('label', {}, 'Aggregation ', aggregation),
    h('label', {}, 'quantile ', quantile), h('label', {}, 'Group by ', group)),
  filters,
  h('div', {class: 'row'}, h('label', {}, 'Time ', range), interval,
    h('button', {type: 'button', onclick: () => filters.append(filterRow({}))}, '+ label filter'),
    h('button', {type: 'submit', class: 'primary', id: 'draw-button'}, 'Draw')));
}

const RANGE_SECONDS = {'-15M': 900, '-1h': 3600, '-6h': 6 * 3600, '-24h': 86400, '-7d': 7 * 86400, all: 30 * 86400};

/** The x-axis window of a relative range, ending now (epoch seconds). */
function windowOf(range) {
  const now = Date.now() / 1000;
  return [now - (RANGE_SECONDS[range] || 3600), now];
}

const isoSeconds = (sec) => new Date(Math.round(sec) * 1000).toISOString().replace(/\.000Z$/, 'Z');

function legendList(columns) {
  return h('p', {class: 'hint', id: 'series-count'}, `${columns.series.length} series × ${columns.times.length} points`);
}

async function characterizeView(ctx, state, holder) {
  clear(holder).append(h('h3', {}, 'Characterize'), h('p', {class: 'hint'}, 'Comparing the selected window with the baseline…'));
  const query = {metricName: state.metric, anomalyFrom: state.anomalyFrom, anomalyTo: state.anomalyTo};
  if (state.aggregation) query.aggregation = state.aggregation;
  if (state.aggregation === 'histogram_quantile' && state.quantile) query.quantile = Number(state.quantile);
  if (state.filters.length) query.filters = state.filters;
  const r = await ctx.api.characterize(query);
  if (!ctx.current()) return;
  const toSec = (iso) => Date.parse(iso) / 1000;
  const bands = [{from: toSec(r.baseline_from), to: toSec(r.baseline_to), fill: BASELINE_FILL},
                 {from: toSec(r.anomaly_from), to: toSec(r.anomaly_to), fill: ANOMALY_FILL}];
  const markers = r.onset_time ? [{at: toSec(r.onset_time), stroke: ONSET_STROKE, label: 'onset'}] : [];
  const chartHolder = h('div', {class: 'chart', id: 'characterize-chart'});
  const moverHolder = h('div', {class: 'chart', id: 'mover-chart'});
  const moverTitle = h('h4', {id: 'mover-title'});
  const drawMover = async (mover, button) => {
    for (const b of holder.querySelectorAll('.mover.active')) b.classList.remove('active');
    button.classList.add('active');
    moverTitle.textContent = `${mover.key} = ${mover.label}`;
    const q = {metricName: state.metric, aggregation: r.aggregation, dateFrom: r.baseline_from, dateTo: r.anomaly_to,
               interval: r.interval, filters: [...state.filters, {key: mover.key, op: 'eq', value: mover.label}]};
    if (r.aggregation === 'histogram_quantile' && r.quantile) q.quantile = r.quantile;
    try {
      const res = await ctx.api.queryMetrics(q);
      clear(moverHolder);
      const cols = toColumns(res.results);
      lineChart(moverHolder, {...cols, height: 220, bands, markers, xRange: [bands[0].from, bands[1].to]});
      moverHolder.dataset.ready = mover.label;
    } catch (e) { ctx.fail(e); }
  };
  const ratio = (x) => (x === null || x === undefined ? '–' : `×${formatNumber(x)}`);
  clear(holder).append(
    h('h3', {}, 'Characterize'),
    h('p', {class: 'legend-line'}, h('span', {class: 'swatch baseline'}), ' baseline ',
      formatTime(r.baseline_from), ' – ', formatTime(r.baseline_to), '   ',
      h('span', {class: 'swatch anomaly'}), ' anomaly ', formatTime(r.anomaly_from), ' – ', formatTime(r.anomaly_to)),
    h('p', {id: 'characterize-summary'}, h('strong', {}, r.direction), ` · ${r.aggregation} · change ${ratio(r.change_ratio)} · mean `,
      formatNumber(r.baseline_mean), ' → ', formatNumber(r.anomaly_mean), ' · peak ', formatNumber(r.anomaly_peak),
      ' · onset ', r.onset_time ? formatTime(r.onset_time) : 'none'),
    chartHolder,
    h('h4', {}, 'Top movers'),
    r.top_movers.length
      ? h('ol', {class: 'movers', id: 'top-movers'}, r.top_movers.map((m) => {
        const button = h('button', {type: 'button', class: 'mover', dataset: {key: m.key, label: m.label}},
          h('strong', {}, `${m.key} = ${m.label}`), ` ${formatNumber(m.baseline_value)} → ${formatNumber(m.anomaly_value)} (${ratio(m.change_ratio)})`);
        button.addEventListener('click', () => drawMover(m, button));
        return h('li', {}, button);
      }))
      : h('p', {class: 'hint', id: 'top-movers'}, 'No label value moved.'),
    moverTitle, moverHolder);
  lineChart(chartHolder, {...toColumns([r.series]), height: 260, bands, markers, xRange: [bands[0].from, bands[1].to]});
  chartHolder.dataset.ready = 'true';
}

/** OpenMetrics exemplar lines of the metric's Prometheus families, each a link to its trace. */
export function exemplarsOf(text, metricName, max = 20) {
  const prefix = metricName.replace(/[^A-Za-z0-9_:]/g, '_').replace(/_+/g, '_');
  const found = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix) || !line.includes(' # {')) continue;
    const [sample, exemplar] = line.split(' # ', 2);
    const traceId = /trace_id="([0-9a-f]{32})"/.exec(exemplar);
    if (!traceId) continue;
    const spanId = /span_id="([0-9a-f]{16})"/.exec(exemplar);
    const value = exemplar.slice(exemplar.indexOf('}') + 1).trim().split(' ')[0];
    found.push({sample, traceId: traceId[1], spanId: spanId ? spanId[1] : '', value});
    if (found.length >= max) break;
  }
  return found;
}

async function exemplarsView(ctx, state, holder) {
  let text;
  try { text = await ctx.api.openMetrics(); } catch { return; }  // needs metrics:read like the rest
  if (!ctx.current()) return;
  const found = exemplarsOf(text, state.metric);
  if (!found.length) return;
  holder.append(h('h4', {}, 'Exemplars (latest, from /metrics)'),
    h('ul', {class: 'exemplars', id: 'exemplars'}, found.map((e) => h('li', {},
      link(`/ui/traces/${e.traceId}${e.spanId ? `?span=${e.spanId}` : ''}`, `trace ${e.traceId}`),
      ` value ${e.value} · `, h('code', {}, e.sample)))));
}

export async function renderMetrics(ctx) {
  const state = readState(ctx.params);
  const chartHolder = h('div', {class: 'chart', id: 'metric-chart'});
  const info = h('div', {});
  const charHolder = h('section', {class: 'panel', id: 'characterize'});
  const exemplarHolder = h('div', {});
  ctx.main.append(metricForm(ctx, state),
    h('section', {class: 'panel'}, info, chartHolder,
      h('p', {class: 'hint'}, 'Drag across the chart to characterize that window against the one before it.'),
      exemplarHolder),
    charHolder);
  if (!state.metric) {
    info.append(h('p', {class: 'hint'}, 'Pick a metric.'));
    charHolder.hidden = true;
    return;
  }
  charHolder.hidden = !state.anomalyFrom;
  const result = await ctx.api.queryMetrics(metricQuery(state));
  if (!ctx.current()) return;
  const columns = toColumns(result.results);
  info.append(h('h3', {}, state.metric, state.aggregation ? ` (${state.aggregation})` : ''), legendList(columns));
  if (!columns.series.length) {
    chartHolder.append(h('p', {class: 'hint'}, 'No data for this metric in the range.'));
  } else {
    performance.mark('metrics:fetched');
    lineChart(chartHolder, {...columns, xRange: windowOf(state.range), onSelect: (from, to) => {
      state.anomalyFrom = isoSeconds(from);
      state.anomalyTo = isoSeconds(to);
      history.pushState(null, '', writeState(state));
      charHolder.hidden = false;
      characterizeView(ctx, state, charHolder).catch(ctx.fail);
    }});
    performance.measure('metrics:draw', 'metrics:fetched');
    chartHolder.dataset.ready = String(columns.series.length);
  }
  exemplarsView(ctx, state, exemplarHolder);
  if (state.anomalyFrom) await characterizeView(ctx, state, charHolder);
}
