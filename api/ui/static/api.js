// The one client of otelite's public HTTP APIs (README "PostHog APIs", GET /api/whoami). The UI can do
// nothing a client with the same key cannot: every call carries the key and goes through the same auth.

const KEY_STORAGE = 'otelite.apiKey';

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

export const session = {
  get key() { return sessionStorage.getItem(KEY_STORAGE); },
  set key(value) {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  },
};

async function call(method, path, {body, params, headers, text = false} = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  const h = {Accept: 'application/json', ...(headers || {})};
  if (session.key) h.Authorization = `Bearer ${session.key}`;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const resp = await fetch(url, {method, headers: h, body: body === undefined ? undefined : JSON.stringify(body),
                                 credentials: 'omit', cache: 'no-store'});
  if (resp.status === 401) throw new Unauthorized('the API key is missing, invalid or revoked');
  const raw = await resp.text();
  if (text && resp.ok) return raw;
  let data = null;
  try { data = raw ? JSON.parse(raw) : null; } catch { data = null; }
  if (!resp.ok) {
    const detail = data && (data.detail || data.error || (data.error && data.error.message));
    throw new ApiError(resp.status, typeof detail === 'string' ? detail : `HTTP ${resp.status}`);
  }
  return data;
}

export function whoami(key) {
  const headers = key ? {Authorization: `Bearer ${key}`} : {};
  return call('GET', '/api/whoami', {headers});
}

/** The project-scoped PostHog endpoints of the project the key belongs to (from whoami). */
export class ProjectApi {
  constructor(project, authMode) {
    this.base = `/api/projects/${encodeURIComponent(project.id)}`;
    // Routes without a project in the path (GET /metrics) take it from the key, or with auth off from
    // this header (README "API keys, projects and scopes").
    this.projectHeader = authMode === 'none' ? {'X-Otelite-Project': project.key} : {};
  }

  // Tracing (posthog-tracing.md)
  querySpans(query) { return call('POST', `${this.base}/tracing/spans/query`, {body: {query}}); }
  sparkline(query) { return call('POST', `${this.base}/tracing/spans/sparkline`, {body: {query}}); }
  tracePage(traceId, offset) {
    return call('POST', `${this.base}/tracing/spans/trace/${encodeURIComponent(traceId)}`, {body: offset ? {offset} : {}});
  }
  serviceNames(dateRange, search) {
    return call('GET', `${this.base}/tracing/spans/service-names`, {params: {dateRange: JSON.stringify(dateRange), search}});
  }
  attributes(attributeType, search) {
    return call('GET', `${this.base}/tracing/spans/attributes`, {params: {attribute_type: attributeType, search, limit: 100}});
  }
  values(attributeType, key, value) {
    return call('GET', `${this.base}/tracing/spans/values`, {params: {attribute_type: attributeType, key, value, limit: 100}});
  }

  /** Every span of a trace, following the 2,000-span pages (capped so a runaway trace cannot hang the tab). */
  async trace(traceId, maxSpans = 50000) {
    const spans = [];
    let offset = 0;
    for (;;) {
      const page = await this.tracePage(traceId, offset);
      spans.push(...page.results);
      if (!page.hasMore || page.nextOffset === null || spans.length >= maxSpans) {
        return {spans, truncated: Boolean(page.hasMore)};
      }
      offset = page.nextOffset;
    }
  }

  // Metrics (posthog-metrics.md)
  metricNames(value) { return call('GET', `${this.base}/metrics/values`, {params: {value, limit: 1000}}); }
  queryMetrics(query) { return call('POST', `${this.base}/metrics/query`, {body: {query}}); }
  characterize(query) { return call('POST', `${this.base}/metrics/characterize`, {body: {query}}); }

  /** The Prometheus scrape in OpenMetrics format, the one public API that carries exemplars. */
  openMetrics() {
    return call('GET', '/metrics', {text: true, headers: {...this.projectHeader,
      Accept: 'application/openmetrics-text; version=1.0.0; charset=utf-8'}});
  }
}
