// The app shell: sign-in (once per browser session), the header, and a router over location.pathname so
// every page has a deep link (/ui/traces/<trace_id> opens that trace; the server answers every /ui/...
// path with this same page).

import {ApiError, ProjectApi, Unauthorized, session, whoami} from './api.js';
import {clear, h} from './dom.js';
import {renderMetrics} from './metrics.js';
import {renderTrace} from './trace.js';
import {renderSearch} from './traces.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let identity = null;  // the answer of GET /api/whoami
let renderSeq = 0;

const ROUTES = [
  [/^\/ui\/traces\/([^/]+)$/, (ctx, m) => renderTrace(ctx, decodeURIComponent(m[1]))],
  [/^\/ui\/traces$/, (ctx) => renderSearch(ctx)],
  [/^\/ui\/metrics$/, (ctx) => renderMetrics(ctx)],
];

export function navigate(url, {replace = false} = {}) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  route();
}

function route() {
  const path = location.pathname.replace(/\/+$/, '') || '/ui';
  if (path === '/ui') return navigate('/ui/traces' + location.search, {replace: true});
  const seq = ++renderSeq;
  const ctx = {
    api: new ProjectApi(identity.project, identity.auth),
    identity,
    params: new URLSearchParams(location.search),
    main: clear(main),
    navigate,
    // A page whose data arrives after the user moved on must not draw over the newer page.
    current: () => seq === renderSeq,
    fail: (error) => showError(error),
  };
  markNav(path);
  for (const [pattern, render] of ROUTES) {
    const m = pattern.exec(path);
    if (m) return Promise.resolve(render(ctx, m)).catch(showError);
  }
  main.append(h('section', {class: 'panel'}, h('h2', {}, 'Not found'),
                h('p', {}, 'No page at ', h('code', {}, location.pathname))));
}

function showError(error) {
  if (error instanceof Unauthorized) {
    session.key = null;
    return signIn('Your API key was refused; enter a valid one.');
  }
  const message = error instanceof ApiError ? `${error.status}: ${error.message}` : String(error && error.message || error);
  main.prepend(h('div', {class: 'error-banner', role: 'alert'}, message));
}

function markNav(path) {
  for (const a of nav.querySelectorAll('a[data-section]')) {
    a.classList.toggle('active', path.startsWith(a.getAttribute('href')));
  }
}

function renderHeader() {
  clear(nav);
  nav.append(
    h('a', {href: '/ui/traces', dataset: {nav: '', section: ''}}, 'Traces'),
    h('a', {href: '/ui/metrics', dataset: {nav: '', section: ''}}, 'Metrics'),
    h('span', {class: 'spacer'}),
    h('span', {class: 'who', title: identity.scopes.join(' ')},
      'project ', h('strong', {}, identity.project.key),
      identity.key ? [' · key ', h('code', {}, identity.key.display)] : ' · auth off'),
    identity.auth === 'required'
      ? h('button', {type: 'button', class: 'link', onclick: () => { session.key = null; location.reload(); }}, 'Sign out')
      : null,
  );
}

function signIn(message) {
  clear(nav);
  const input = h('input', {type: 'password', name: 'apikey', autocomplete: 'off', placeholder: 'otl_…',
                            required: true, size: 48, id: 'apikey'});
  const status = h('p', {class: 'hint', role: 'status'}, message || '');
  const form = h('form', {class: 'panel signin', onsubmit: async (e) => {
    e.preventDefault();
    try {
      identity = await whoami(input.value.trim());
      session.key = input.value.trim();
      start();
    } catch (error) {
      status.textContent = error instanceof Unauthorized ? 'That key was refused.' : String(error.message || error);
    }
  }},
  h('h2', {}, 'Sign in'),
  h('p', {}, 'Paste an otelite API key (', h('code', {}, 'otelite keys create'),
    '). It is kept in this tab\'s session storage only and sent with every request, like any client\'s.'),
  h('label', {for: 'apikey'}, 'API key '), input, ' ', h('button', {type: 'submit'}, 'Sign in'), status);
  clear(main).append(form);
  input.focus();
}

function start() {
  renderHeader();
  route();
}

document.addEventListener('click', (e) => {
  const a = e.target.closest && e.target.closest('a[data-nav]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', () => identity && route());

(async function boot() {
  try {
    identity = await whoami(session.key);
    start();
  } catch (error) {
    if (error instanceof Unauthorized) signIn(session.key ? 'Your API key was refused; enter a valid one.' : '');
    else clear(main).append(h('div', {class: 'error-banner', role: 'alert'}, `otelite did not answer: ${error.message}`));
  }
})();
