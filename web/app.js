// The shoal dashboard: a single page with hash routes, no framework, nothing fetched
// but the API itself. Every view is live: it lists what it shows, then watches from the
// list's resourceVersion, and lists again when the watch answers 410 Gone or drops.
//
//   route                      watches
//   #/                         clusters, releases, components, (the chosen release's
//                              pipeline and task runs); a cluster's events on hover
//   #/releases                 releases
//   #/release/NAME             the release, its pipeline runs and task runs, approvals
//   #/run/NS/NAME              the pipeline run, its task runs
//   #/components               components
//   #/component/NAME           the component
//
// Every request carries `X-Shoal-Client: dashboard` (for the audit log) and, once the
// user signed in, the bearer token; a 401 shows the sign-in form. Times are read on the
// fleet's clock (/sim/clock when the server simulates one).
//
// Renders are coalesced with requestAnimationFrame: a burst of watch events costs one
// render. The fleet map draws one <i> per cluster and, once drawn, only changes classes.
'use strict';

const API = '/apis/shoal.io/v1alpha1';
const RELEASE_NS = 'shoal-system';

// ---- the API ---------------------------------------------------------------------

function qs(params) {
  const p = Object.entries(params || {}).filter(([, v]) => v !== undefined && v !== '');
  return p.length ? '?' + p.map(([k, v]) => encodeURIComponent(k) + '=' + encodeURIComponent(v)).join('&') : '';
}

// Who is asking, for the server's audit log: fetch may not set User-Agent, so every
// request names the dashboard in a header of its own.
const CLIENT_HEADER = { 'X-Shoal-Client': 'dashboard' };

// The bearer token of a server started with --token-file. It lives in sessionStorage:
// it survives a reload but not the tab. Without one, the first 401 shows a sign-in form,
// and every request that met a 401 waits for the form, then tries again.
const auth = {
  KEY: 'shoal.token',
  token: sessionStorage.getItem('shoal.token') || '',
  waiters: [],

  headers(extra) {
    const h = Object.assign({}, CLIENT_HEADER, extra);
    if (this.token) h.Authorization = 'Bearer ' + this.token;
    return h;
  },

  // Resolves once the user gave a token the server accepts.
  signIn() {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.show(this.token ? 'The server refused the token. Enter it again.' : '');
    });
  },

  show(error) {
    let form = document.getElementById('signin');
    if (!form) {
      form = document.createElement('form');
      form.id = 'signin';
      form.className = 'card signin';
      form.innerHTML = `<h2>Sign in</h2>
        <p class="muted">This server needs a bearer token (the one in its <code>--token-file</code>).</p>
        <label>Token <input id="token" type="password" autocomplete="current-password" size="32"></label>
        <button class="primary" id="signin-submit">Sign in</button>
        <p id="signin-error" class="error"></p>`;
      form.addEventListener('submit', (e) => { e.preventDefault(); this.submit(); });
      document.body.appendChild(form);
      const el = document.getElementById('conn');
      el.className = 'conn down';
      el.textContent = 'signed out';
    }
    if (error !== undefined) document.getElementById('signin-error').textContent = error;
    document.getElementById('token').focus();
  },

  async submit() {
    const input = document.getElementById('token');
    const token = input.value.trim();
    if (!token) return;
    const button = document.getElementById('signin-submit');
    button.disabled = true;
    try {
      const r = await fetch(API, { headers: Object.assign({}, CLIENT_HEADER, { Authorization: 'Bearer ' + token }) });
      if (r.status === 401) {
        document.getElementById('signin-error').textContent = 'The server refused this token (401 Unauthorized).';
        input.select();
        return;
      }
      this.token = token;
      sessionStorage.setItem(this.KEY, token);
      document.getElementById('signin').remove();
      const waiters = this.waiters;
      this.waiters = [];
      for (const w of waiters) w();
    } catch (e) {
      document.getElementById('signin-error').textContent = 'The server did not answer: ' + e.message;
    } finally {
      button.disabled = false;
    }
  },
};

// fetch with the dashboard's headers; a 401 waits for a sign-in, then tries again.
async function request(path, init) {
  for (;;) {
    const opts = Object.assign({}, init);
    opts.headers = auth.headers(init && init.headers);
    const r = await fetch(path, opts);
    if (r.status !== 401) return r;
    await auth.signIn();
    if (init && init.signal && init.signal.aborted) return r;
  }
}

// The field manager the dashboard's writes are recorded under (metadata.managedFields).
const FIELD_MANAGER = 'shoal-dashboard';

async function api(method, path, body, contentType) {
  const init = { method, headers: {} };
  if (method !== 'GET' && method !== 'DELETE') {
    path += (path.includes('?') ? '&' : '?') + 'fieldManager=' + FIELD_MANAGER;
  }
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = contentType || 'application/json';
  }
  const r = await request(path, init);
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((json && json.message) || r.status + ' ' + r.statusText);
  return json;
}

// Kubernetes times, which may carry nanoseconds (the simulator's clock does): Date.parse
// wants at most milliseconds.
function parseTime(s) {
  return s ? Date.parse(String(s).replace(/(\.\d{3})\d+/, '$1')) : NaN;
}

// The fleet's clock. A server with a simulated clock (--time-scale, /sim/clock) stamps
// everything in virtual time, which runs `scale` times as fast as the browser's and is
// nowhere near it; bake timers and ages must count on it. Without /sim/clock (404) the
// fleet runs on real time and the browser's clock is the one.
const fleetClock = {
  simulated: false,
  virtualAt: 0, // virtual ms at `realAt`
  realAt: 0, // Date.now() when `virtualAt` was read
  scale: 1,
  inflight: false,

  now() {
    return this.simulated ? this.virtualAt + (Date.now() - this.realAt) * this.scale : Date.now();
  },

  async refresh() {
    if (this.inflight) return;
    this.inflight = true;
    try {
      const t0 = Date.now();
      const r = await request('/sim/clock');
      if (r.status === 404) { this.simulated = false; return; }
      if (!r.ok) return;
      const j = await r.json();
      const v = parseTime(j.now);
      if (Number.isNaN(v)) return;
      // The server read its clock somewhere during the round trip: take the middle.
      this.realAt = (t0 + Date.now()) / 2;
      this.virtualAt = v;
      this.scale = typeof j.scale === 'number' ? j.scale : 1;
      this.simulated = true;
    } catch (e) {
      console.warn('fleet clock', e);
    } finally {
      this.inflight = false;
    }
  },
};
// The scale can change under us (`shoal clock`, PUT /sim/clock): read it again now and then.
const CLOCK_REFRESH_MS = 5000;
fleetClock.refresh();
setInterval(() => fleetClock.refresh(), CLOCK_REFRESH_MS);

const keyOf = (o) => (o.metadata.namespace ? o.metadata.namespace + '/' : '') + o.metadata.name;

// Connection state shown in the header: live while every watch of the page is open.
const conn = {
  down: new Set(),
  set(id, ok) {
    if (ok) this.down.delete(id); else this.down.add(id);
    if (document.getElementById('signin')) return;
    const el = document.getElementById('conn');
    el.className = 'conn ' + (this.down.size ? 'down' : 'live');
    el.textContent = this.down.size ? 'reconnecting…' : 'live';
  },
};
let watchIds = 0;

// A live collection: `items` (key → object) kept in step with the server; `onChange`
// runs (coalesced to one call per frame) after the first list and after every event.
class Collection {
  constructor(path, params, onChange) {
    this.path = path;
    this.params = params || {};
    this.items = new Map();
    this.synced = false;
    this.onChange = onChange;
    this.abort = new AbortController();
    this.id = ++watchIds;
    this.scheduled = false;
    this.run();
  }

  stop() {
    this.abort.abort();
    conn.set(this.id, true);
  }

  changed() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      if (!this.abort.signal.aborted) this.onChange(this);
    });
  }

  async run() {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      try {
        // List.
        const r = await request(this.path + qs(this.params), { signal });
        if (!r.ok) throw new Error('list ' + this.path + ': ' + r.status);
        const list = await r.json();
        this.items = new Map(list.items.map((o) => [keyOf(o), o]));
        this.synced = true;
        conn.set(this.id, true);
        this.changed();
        // Watch from the list's revision until the server says it is too old.
        let rv = list.metadata.resourceVersion;
        while (!signal.aborted) {
          rv = await this.watch(rv, signal);
          if (rv === null) break; // 410: list again
        }
      } catch (e) {
        if (signal.aborted) return;
        conn.set(this.id, false);
        console.warn('watch', this.path, e);
        await new Promise((res) => setTimeout(res, 1000));
      }
    }
  }

  // One watch request; returns the revision to resume from, or null to re-list.
  async watch(rv, signal) {
    const params = Object.assign({}, this.params, {
      watch: '1', resourceVersion: rv, allowWatchBookmarks: 'true',
    });
    const r = await request(this.path + qs(params), { signal });
    if (r.status === 410) return null;
    if (!r.ok) throw new Error('watch ' + this.path + ': ' + r.status);
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return rv; // the server closed the stream: watch again from rv
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const ev = JSON.parse(line);
        if (ev.type === 'ERROR') {
          if (ev.object && ev.object.code === 410) return null;
          throw new Error('watch error: ' + JSON.stringify(ev.object));
        }
        const o = ev.object;
        rv = o.metadata.resourceVersion || rv;
        if (ev.type === 'BOOKMARK') continue;
        if (ev.type === 'DELETED') this.items.delete(keyOf(o));
        else this.items.set(keyOf(o), o);
        this.changed();
      }
    }
  }
}

// ---- small helpers -----------------------------------------------------------------

const esc = (s) => String(s === undefined || s === null ? '' : s)
  .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function condition(o, type) {
  return ((o.status && o.status.conditions) || []).find((c) => c.type === type);
}

const labels = (o) => o.metadata.labels || {};

// Health is the Ready condition: True, False, or Unknown (which a missing one is too).
function health(cluster) {
  const c = condition(cluster, 'Ready');
  if (!c) return 'unknown';
  return c.status === 'True' ? 'ready' : c.status === 'False' ? 'notready' : 'unknown';
}

// A cluster's state in a release, from the release's pipeline runs (by cluster:
// {change, rollback}) and its plan; `progress` (cluster → what its run is doing, from the
// TaskRuns) tells a bake from the rest of running.
function releaseState(runs, planned, cluster, ended, progress) {
  if (planned && !planned.has(cluster)) return 'out';
  const r = runs.get(cluster);
  if (!r || !r.change) return ended ? 'notstarted' : 'waiting';
  if (r.rollback) {
    const s = runState(r.rollback);
    return s === 'succeeded' ? 'rolledback' : s === 'failed' ? 'failed' : 'rollingback';
  }
  const s = runState(r.change);
  if (s === 'running' && progress) {
    const p = progress.get(cluster);
    if (p && p.stage === 'baking') return 'baking';
  }
  return s;
}

// The phases after which nothing more happens to a release.
const ENDED = ['Succeeded', 'Failed', 'RolledBack'];
const RELEASE_STATES = ['waiting', 'running', 'baking', 'succeeded', 'failed', 'rollingback', 'rolledback', 'notstarted'];

function runState(run) {
  const c = condition(run, 'Succeeded');
  if (!c || c.status === 'Unknown') return 'running';
  return c.status === 'True' ? 'succeeded' : 'failed';
}

function runsByCluster(collection) {
  const out = new Map();
  for (const r of collection.items.values()) {
    const l = labels(r);
    const c = l['shoal.io/cluster'];
    if (!c) continue;
    const e = out.get(c) || {};
    if (l['shoal.io/release-action'] === 'rollback') e.rollback = r; else e.change = r;
    out.set(c, e);
  }
  return out;
}

// The step a release run is on: precheck, or `COMPONENT-step-K`, which is batch K of the
// N `COMPONENT-step-*` tasks of the run's pipeline. Null when no task is active.
function activeStep(run) {
  const s = run.status || {};
  const tasks = s.tasks || [];
  const t = tasks.find((x) => x.state === 'Running' || x.state === 'Retrying');
  if (!t) return null;
  const m = /^(.+)-step-(\d+)$/.exec(t.name);
  if (!m) return { task: t.name, label: t.name, attempts: t.attempts };
  const component = m[1];
  const k = Number(m[2]);
  const specNames = ((s.pipelineSpec && s.pipelineSpec.tasks) || []).map((x) => x.name);
  const names = specNames.length ? specNames : tasks.map((x) => x.name);
  const re = new RegExp('^' + component.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '-step-\\d+$');
  const n = new Set(names.filter((x) => re.test(x))).size || k;
  return { task: t.name, component, k, n, label: `${component} batch ${k} of ${n}`, attempts: t.attempts };
}

// The newest attempt's TaskRun of every pipeline task: `run/task` → TaskRun.
function taskRunIndex(collection) {
  const out = new Map();
  if (!collection) return out;
  for (const tr of collection.items.values()) {
    const l = labels(tr);
    const spec = tr.spec || {};
    const run = l['shoal.io/pipelineRun'] || (spec.pipelineRunRef && spec.pipelineRunRef.name);
    const task = l['shoal.io/pipelineTask'] || spec.pipelineTask;
    if (!run || !task) continue;
    const key = run + '/' + task;
    const prev = out.get(key);
    if (!prev || (spec.attempt || 0) >= ((prev.spec && prev.spec.attempt) || 0)) out.set(key, tr);
  }
  return out;
}

// What each cluster's change run is doing now: cluster → {step, stage, message, until}.
function releaseProgress(byCluster, taskRuns) {
  const index = taskRunIndex(taskRuns);
  const out = new Map();
  for (const [cluster, r] of byCluster) {
    const run = r.rollback && runState(r.rollback) === 'running' ? r.rollback : r.change;
    if (!run || runState(run) !== 'running') continue;
    const step = activeStep(run);
    const tr = step && index.get(run.metadata.name + '/' + step.task);
    const p = (tr && tr.status && tr.status.progress) || {};
    out.set(cluster, {
      run, step, stage: p.stage, message: p.message || (tr && tr.status && tr.status.message),
      until: p.until ? parseTime(p.until) : NaN,
      rollback: run === r.rollback,
    });
  }
  return out;
}

const STATE_LABEL = {
  ready: 'Ready', notready: 'Not ready', unknown: 'Unknown', waiting: 'Waiting',
  running: 'Running', baking: 'Baking', succeeded: 'Succeeded', failed: 'Failed', rollingback: 'Rolling back',
  rolledback: 'Rolled back', out: 'Not in release', notstarted: 'Never started',
};

function legend(counts, order) {
  return order.filter((s) => counts[s]).map((s) =>
    `<span class="s-${s}" data-state="${s}">${STATE_LABEL[s]} <b>${counts[s].toLocaleString('en')}</b></span>`).join('');
}

const plural = (n, word) => n + ' ' + word + (n === 1 ? '' : /(s|ch)$/.test(word) ? 'es' : 's');

function when(t) {
  const ms = parseTime(t);
  return Number.isNaN(ms) ? '' : new Date(ms).toLocaleTimeString();
}

// A span of milliseconds, short: 42s, 3m05s, 1.5h, 2.0d.
function span(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's';
  if (s < 86400) return (s / 3600).toFixed(1) + 'h';
  return (s / 86400).toFixed(1) + 'd';
}

// From `a` to `b`, or to now on the fleet's clock while `b` is not there yet.
function duration(a, b) {
  const from = parseTime(a);
  if (Number.isNaN(from)) return '';
  const to = b ? parseTime(b) : fleetClock.now();
  return span(to - from);
}

// "4m12s left" of a bake ending at `until` (ms on the fleet clock).
function countdown(until) {
  const left = until - fleetClock.now();
  return left > 0 ? span(left) + ' left' : 'ending';
}

// A <span> that the page's ticker keeps counting down.
function countdownSpan(until) {
  return `<span class="countdown" data-until="${until}">${esc(countdown(until))}</span>`;
}

// Time since `since` (ms on the fleet clock), which the page's ticker keeps counting.
function elapsedSpan(since) {
  return `<span class="elapsed" data-since="${since}">${esc(span(fleetClock.now() - since))}</span>`;
}

function tickCountdowns() {
  for (const el of document.querySelectorAll('.countdown[data-until]')) {
    const text = countdown(Number(el.dataset.until));
    if (el.textContent !== text) el.textContent = text;
  }
  for (const el of document.querySelectorAll('.elapsed[data-since]')) {
    const text = span(fleetClock.now() - Number(el.dataset.since));
    if (el.textContent !== text) el.textContent = text;
  }
}

// Versions newest first: numeric parts compared as numbers ("1.10.0" after "1.9.2").
function versionCmp(a, b) {
  const pa = String(a).replace(/^v/, '').split(/[.+-]/);
  const pb = String(b).replace(/^v/, '').split(/[.+-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i], y = pb[i];
    if (x === undefined) return 1;
    if (y === undefined) return -1;
    const nx = /^\d+$/.test(x), ny = /^\d+$/.test(y);
    if (nx && ny && Number(x) !== Number(y)) return Number(y) - Number(x);
    if (nx !== ny) return nx ? -1 : 1;
    if (!nx && x !== y) return y.localeCompare(x);
  }
  return 0;
}

// A version's colour: one of VERSION_SLOTS classes (v0…), picked by a hash of the
// version so that it stays the same across renders, pages and reloads; two versions on
// screen that hash alike are moved apart, newest first.
const VERSION_SLOTS = 10;
function versionSlots(versions) {
  const out = new Map();
  const used = new Set();
  for (const v of [...versions].sort(versionCmp)) {
    let h = 0x811c9dc5;
    for (let i = 0; i < v.length; i++) h = Math.imul(h ^ v.charCodeAt(i), 0x01000193) >>> 0;
    let slot = h % VERSION_SLOTS;
    for (let i = 0; i < VERSION_SLOTS && used.has(slot); i++) slot = (slot + 1) % VERSION_SLOTS;
    used.add(slot);
    out.set(v, 'v' + slot);
  }
  return out;
}
// The two versions that are not versions.
const NOT_INSTALLED = 'v-none';
const UNRECOGNISED = 'v-unknown';
function versionClass(slots, v) {
  if (v === undefined || v === null || v === '') return NOT_INSTALLED;
  if (v === 'unknown') return UNRECOGNISED;
  return slots.get(v) || NOT_INSTALLED;
}

// The timestamp an event is about: the last time it happened.
function eventTime(e) {
  for (const t of [e.lastTimestamp, e.eventTime, e.firstTimestamp, e.metadata && e.metadata.creationTimestamp]) {
    const ms = parseTime(t);
    if (!Number.isNaN(ms)) return ms;
  }
  return NaN;
}

function ago(ms) {
  if (Number.isNaN(ms)) return '';
  const d = fleetClock.now() - ms;
  return d < 1000 ? 'just now' : span(d) + ' ago';
}

// ---- pages -------------------------------------------------------------------------

const main = document.getElementById('main');
let page = null; // { collections: [...], stop() } of the page on screen

// Exposed for tests and the benchmark: when the fleet map first drew every cluster.
window.shoalUi = { fleetDrawnAt: null, fleetTiles: 0, fleetListedAt: null };

// How long a cluster's events stay fresh in the hover card, and how long the pointer
// rests on a tile before they are fetched (a sweep across the map fetches nothing).
const EVENTS_FRESH_MS = 10000;
const EVENTS_DEBOUNCE_MS = 250;
const EVENTS_SHOWN = 8;

// The labels the card shows first, in this order; any others follow by name.
const ATTRIBUTES = ['env', 'region', 'zone', 'tier', 'business'];

function fleetPage(params) {
  main.innerHTML = `
    <div class="toolbar">
      <h1 style="margin:0">Fleet <span class="muted" id="fleet-count"></span></h1>
      <label>Colour by <select id="colour"><option value="">health (Ready)</option></select></label>
      <div class="legend" id="legend"></div>
    </div>
    <div class="fleet">
      <div id="map"><p class="muted">Loading clusters…</p></div>
      <div class="side"><div class="card detail" id="detail"><p class="muted">Hover over a cluster.</p></div></div>
    </div>`;
  const select = document.getElementById('colour');
  const map = document.getElementById('map');
  const detail = document.getElementById('detail');
  const tiles = new Map(); // name → element
  let layoutKey = '';
  let selected = null;
  // '' (health), 'r:RELEASE' or 'c:COMPONENT'.
  let chosen = params.component ? 'c:' + params.component : params.release ? 'r:' + params.release : '';
  let runs = null;
  let taskRuns = null;
  const mode = () => chosen.slice(0, 1);
  const chosenName = () => chosen.slice(2);

  const clusters = new Collection(API + '/clusters', {}, draw);
  const fillSelect = () => {
    const rels = [...releases.items.keys()].sort();
    const comps = [...components.items.keys()].sort();
    const want = [...comps.map((n) => 'c:' + n), ...rels.map((n) => 'r:' + n)].join('\n');
    if (select.dataset.names !== want) {
      select.dataset.names = want;
      select.innerHTML = '<option value="">health (Ready)</option>' +
        (comps.length ? '<optgroup label="version of component">' +
          comps.map((n) => `<option value="c:${esc(n)}">version of ${esc(n)}</option>`).join('') + '</optgroup>' : '') +
        (rels.length ? '<optgroup label="state in release">' +
          rels.map((n) => `<option value="r:${esc(n)}">release ${esc(n)}</option>`).join('') + '</optgroup>' : '');
      select.value = chosen;
    }
    draw();
  };
  const releases = new Collection(API + '/releases', {}, fillSelect);
  const components = new Collection(API + '/components', {}, fillSelect);
  const collections = [clusters, releases, components];

  function watchRuns() {
    for (const c of [runs, taskRuns]) if (c) { c.stop(); collections.splice(collections.indexOf(c), 1); }
    runs = taskRuns = null;
    if (mode() === 'r') {
      const sel = { labelSelector: 'shoal.io/release=' + chosenName() };
      runs = new Collection(API + '/namespaces/' + RELEASE_NS + '/pipelineruns', sel, draw);
      taskRuns = new Collection(API + '/namespaces/' + RELEASE_NS + '/taskruns', sel, draw);
      collections.push(runs, taskRuns);
    }
  }
  select.addEventListener('change', () => {
    chosen = select.value;
    const hash = mode() === 'r' ? '#/?release=' + encodeURIComponent(chosenName())
      : mode() === 'c' ? '#/?component=' + encodeURIComponent(chosenName()) : '#/';
    history.replaceState(null, '', hash);
    watchRuns();
    draw();
  });
  watchRuns();

  // The colouring of the moment: cluster → class, and the legend that explains it.
  function colouring(all) {
    if (mode() === 'r') {
      const name = chosenName();
      const rel = releases.items.get(name);
      const waves = (rel && rel.status && rel.status.waves) || [];
      const planned = waves.length ? new Set(waves.flatMap((w) => w.clusters)) : null;
      const byCluster = runs ? runsByCluster(runs) : new Map();
      const ended = rel && ENDED.includes(rel.status && rel.status.phase);
      const progress = releaseProgress(byCluster, taskRuns);
      const state = (c) => 's-' + releaseState(byCluster, planned, c.metadata.name, ended, progress);
      return {
        state,
        legend(counts) {
          return legend(Object.fromEntries(Object.entries(counts).map(([k, v]) => [k.slice(2), v])),
            [...RELEASE_STATES, 'out']);
        },
      };
    }
    if (mode() === 'c') {
      const comp = chosenName();
      const target = components.items.get(comp);
      const targetVersion = target && target.spec && target.spec.version;
      const versionOf = (c) => ((c.status && c.status.components) || {})[comp];
      const present = new Set();
      for (const c of all) {
        const v = versionOf(c);
        if (v && v !== 'unknown') present.add(v);
      }
      const slots = versionSlots(present);
      return {
        state: (c) => versionClass(slots, versionOf(c)),
        legend(counts) {
          const rows = [...present].sort(versionCmp).map((v) => [slots.get(v), v,
            v + (v === targetVersion ? ' (target)' : '')]);
          rows.push([UNRECOGNISED, 'unknown', 'unrecognised image'], [NOT_INSTALLED, '', 'not installed']);
          return rows.filter(([cls]) => counts[cls]).map(([cls, v, text]) =>
            `<span class="${cls}" data-version="${esc(v)}">${esc(text)} <b>${counts[cls].toLocaleString('en')}</b></span>`).join('');
        },
      };
    }
    return {
      state: (c) => 's-' + health(c),
      legend(counts) {
        return legend(Object.fromEntries(Object.entries(counts).map(([k, v]) => [k.slice(2), v])),
          ['ready', 'notready', 'unknown']);
      },
    };
  }

  function draw() {
    if (!clusters.synced) return;
    if (window.shoalUi.fleetListedAt === null) window.shoalUi.fleetListedAt = performance.now();
    const all = [...clusters.items.values()];
    // Group by env, then region; a change of membership redraws, anything else recolours.
    const groups = new Map();
    for (const c of all) {
      const l = labels(c);
      const env = l.env || '(no env)';
      const region = l.region || '(no region)';
      if (!groups.has(env)) groups.set(env, new Map());
      const g = groups.get(env);
      if (!g.has(region)) g.set(region, []);
      g.get(region).push(c.metadata.name);
    }
    const envs = [...groups.keys()].sort(envOrder);
    for (const g of groups.values()) for (const names of g.values()) names.sort();
    const key = envs.map((e) => e + ':' + [...groups.get(e).entries()].sort().map(([r, n]) => r + '=' + n.join(',')).join(';')).join('|');
    if (key !== layoutKey) {
      layoutKey = key;
      let html = '';
      for (const env of envs) {
        const regions = [...groups.get(env).keys()].sort();
        const n = regions.reduce((a, r) => a + groups.get(env).get(r).length, 0);
        html += `<section class="env"><h2>${esc(env)} <span class="muted">${n}</span></h2><div class="regions">`;
        for (const region of regions) {
          const names = groups.get(env).get(region);
          html += `<div class="region"><h3>${esc(region)} · ${names.length}</h3><div class="tiles">`;
          for (const name of names) html += `<i data-n="${esc(name)}"></i>`;
          html += '</div></div>';
        }
        html += '</div></section>';
      }
      map.innerHTML = html || '<p class="muted">No clusters registered.</p>';
      tiles.clear();
      for (const el of map.querySelectorAll('.tiles i')) tiles.set(el.dataset.n, el);
      document.getElementById('fleet-count').textContent = all.length.toLocaleString('en') + ' clusters';
    }
    const { state, legend: legendOf } = colouring(all);
    const counts = {};
    for (const c of all) {
      const s = state(c);
      counts[s] = (counts[s] || 0) + 1;
      const el = tiles.get(c.metadata.name);
      const cls = s + (selected === c.metadata.name ? ' sel' : '');
      if (el && el.className !== cls) el.className = cls;
    }
    document.getElementById('legend').innerHTML = legendOf(counts);
    if (card.name) showDetail(card.name);
    if (window.shoalUi.fleetDrawnAt === null && all.length) {
      // After the frame that paints the tiles.
      requestAnimationFrame(() => setTimeout(() => {
        window.shoalUi.fleetTiles = tiles.size;
        window.shoalUi.fleetDrawnAt = performance.now();
      }, 0));
    }
  }

  // ---- the hover card: the cluster's attributes and state, live; its recent events,
  // fetched when the pointer rests on it (or on a click) and kept for EVENTS_FRESH_MS.
  const card = { name: null, timer: null };
  const events = new Map(); // cluster → {at, items, error}

  async function loadEvents(name) {
    const path = '/api/v1/namespaces/default/events' + qs({
      fieldSelector: 'involvedObject.kind=Cluster,involvedObject.name=' + name,
    });
    let entry;
    try {
      const r = await request(path);
      if (r.status === 404) entry = { error: 'This server keeps no events.' };
      else if (!r.ok) entry = { error: 'events: ' + r.status + ' ' + r.statusText };
      else {
        const list = await r.json();
        const items = (list.items || []).map((e) => ({ e, t: eventTime(e) }))
          .sort((a, b) => (b.t || 0) - (a.t || 0)).slice(0, EVENTS_SHOWN);
        entry = { items, total: (list.items || []).length };
      }
    } catch (e) {
      entry = { error: 'events: ' + e.message };
    }
    entry.at = Date.now();
    events.set(name, entry);
    if (card.name === name) showEvents(name);
  }

  function wantEvents(name, now) {
    clearTimeout(card.timer);
    const e = events.get(name);
    if (e && Date.now() - e.at < EVENTS_FRESH_MS) return;
    card.timer = setTimeout(() => loadEvents(name), now ? 0 : EVENTS_DEBOUNCE_MS);
  }

  function showEvents(name) {
    const el = document.getElementById('detail-events');
    if (!el) return;
    const entry = events.get(name);
    if (!entry) { el.innerHTML = '<p class="muted">Loading events…</p>'; return; }
    if (entry.error) { el.innerHTML = `<p class="muted">${esc(entry.error)}</p>`; return; }
    if (!entry.items.length) { el.innerHTML = '<p class="muted">No events.</p>'; return; }
    el.innerHTML = '<ul class="events">' + entry.items.map(({ e, t }) =>
      `<li class="ev ${e.type === 'Warning' ? 'warning' : 'normal'}" data-reason="${esc(e.reason)}" data-t="${esc(t)}">
        <div><span class="ev-type">${esc(e.type || 'Normal')}</span> <b>${esc(e.reason)}</b>
        <span class="muted" title="${Number.isNaN(t) ? '' : esc(new Date(t).toISOString())}">${esc(ago(t))}${e.count > 1 ? ' · ×' + esc(e.count) : ''}</span></div>
        <div class="ev-msg clamp" title="${esc(e.message)}">${esc(e.message)}</div></li>`).join('') + '</ul>' +
      (entry.total > entry.items.length ? `<p class="muted">${entry.total - entry.items.length} older not shown</p>` : '');
  }

  function showDetail(name) {
    const c = clusters.items.get(name);
    if (!c) {
      card.name = null;
      detail.innerHTML = '<p class="muted">Hover over a cluster.</p>';
      return;
    }
    if (card.name !== name) {
      card.name = name;
      detail.innerHTML = '<div id="detail-body"></div><h3>Recent events</h3><div id="detail-events"></div>';
      showEvents(name);
    }
    const l = labels(c);
    const s = c.status || {};
    const ready = condition(c, 'Ready');
    const h = health(c);
    const attrs = [...ATTRIBUTES.filter((k) => l[k] !== undefined),
      ...Object.keys(l).filter((k) => !ATTRIBUTES.includes(k)).sort()];
    const rows = attrs.map((k) => [k, esc(l[k])]);
    rows.push(['endpoint', `<span class="mono">${esc(c.spec && c.spec.endpoint && c.spec.endpoint.server)}</span>`]);
    rows.push(['Kubernetes', esc(s.kubernetesVersion || '—')]);
    rows.push(['nodes', s.nodeCount === undefined ? '—'
      : esc(s.nodeCount) + (s.readyNodes !== undefined ? ` <span class="muted">(${esc(s.readyNodes)} ready)</span>` : '')]);
    if (mode() === 'r') {
      const rel = chosenName();
      const byCluster = runs ? runsByCluster(runs) : new Map();
      const relObj = releases.items.get(rel);
      const waves = (relObj && relObj.status && relObj.status.waves) || [];
      const planned = waves.length ? new Set(waves.flatMap((w) => w.clusters)) : null;
      const progress = releaseProgress(byCluster, taskRuns);
      const st = releaseState(byCluster, planned, name, relObj && ENDED.includes(relObj.status && relObj.status.phase), progress);
      rows.push(['release ' + rel, esc(STATE_LABEL[st])]);
      const p = progress.get(name);
      if (p && p.step) {
        rows.push(['step', esc(p.step.label) + (p.stage ? ' · ' + esc(p.stage) : '') +
          (p.stage === 'baking' && !Number.isNaN(p.until) ? ' · ' + countdownSpan(p.until) : '')]);
      }
      const r = byCluster.get(name);
      if (r && r.change) rows.push(['run', `<a href="#/run/${RELEASE_NS}/${esc(r.change.metadata.name)}">${esc(r.change.metadata.name)}</a>`]);
    }
    const comps = s.components || {};
    const compNames = Object.keys(comps).sort();
    const highlight = mode() === 'c' ? chosenName() : null;
    const compRows = compNames.map((n) => {
      const target = components.items.get(n);
      const tv = target && target.spec && target.spec.version;
      const v = comps[n];
      const note = tv && v !== tv ? ` <span class="muted">target ${esc(tv)}</span>` : '';
      return `<tr data-component="${esc(n)}"${n === highlight ? ' class="hl"' : ''}><td>${esc(n)}</td><td><b>${esc(v)}</b>${note}</td></tr>`;
    }).join('');
    const missing = highlight && !(highlight in comps) ? `<tr class="hl"><td>${esc(highlight)}</td><td class="muted">not installed</td></tr>` : '';
    document.getElementById('detail-body').innerHTML =
      `<h2 style="margin-top:0" id="detail-name">${esc(name)}</h2>
      <div class="ready"><span class="legend"><span class="s-${h}">${esc(ready ? 'Ready ' + ready.status : 'No Ready condition')}</span></span>
        ${ready && ready.reason ? `<b>${esc(ready.reason)}</b>` : ''}
        ${ready && ready.lastTransitionTime ? `<span class="muted">since ${esc(ago(parseTime(ready.lastTransitionTime)))}</span>` : ''}
        ${ready && ready.message ? `<div class="muted clamp" title="${esc(ready.message)}">${esc(ready.message)}</div>` : ''}</div>
      <dl>${rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join('')}</dl>
      <h3>Components</h3>
      ${compRows || missing ? `<table class="comps" id="detail-components">${compRows}${missing}</table>` : '<p class="muted">None observed.</p>'}`;
  }

  map.addEventListener('mouseover', (e) => {
    const n = e.target.dataset && e.target.dataset.n;
    if (n && !selected) { showDetail(n); wantEvents(n, false); }
  });
  map.addEventListener('click', (e) => {
    const n = e.target.dataset && e.target.dataset.n;
    if (!n) return;
    if (selected && tiles.has(selected)) tiles.get(selected).classList.remove('sel');
    selected = selected === n ? null : n;
    if (selected) tiles.get(selected).classList.add('sel');
    showDetail(n);
    wantEvents(n, true);
  });
  // The events of a card that stays open go stale: fetch them again.
  const refresh = setInterval(() => { if (selected && card.name === selected) wantEvents(selected, true); }, EVENTS_FRESH_MS);

  const ticker = setInterval(tickCountdowns, TICK_MS);
  return { collections, stop() { clearInterval(refresh); clearInterval(ticker); clearTimeout(card.timer); } };
}

// Environments in the order a release walks them; others after, by name.
const ENV_ORDER = ['dev', 'test', 'staging', 'canary', 'prod', 'production'];
function envOrder(a, b) {
  const ra = ENV_ORDER.indexOf(a), rb = ENV_ORDER.indexOf(b);
  return (ra < 0 ? 99 : ra) - (rb < 0 ? 99 : rb) || a.localeCompare(b);
}

function releasesPage() {
  main.innerHTML = '<h1>Releases</h1><div class="card"><table id="releases"></table></div>';
  const releases = new Collection(API + '/releases', {}, () => {
    const rows = [...releases.items.values()].sort((a, b) =>
      (b.metadata.creationTimestamp || '').localeCompare(a.metadata.creationTimestamp || ''));
    document.getElementById('releases').innerHTML =
      '<tr><th>Name</th><th>Components</th><th>Phase</th><th>Wave</th><th>Progress</th><th>Message</th></tr>' +
      (rows.map((r) => {
        const s = r.status || {};
        const comps = (r.spec.components || []).map((c) => c.name + '@' + c.version).join(', ');
        return `<tr><td><a href="#/release/${encodeURIComponent(r.metadata.name)}">${esc(r.metadata.name)}</a></td>
          <td>${esc(comps)}</td><td><span class="phase ${esc(s.phase)}">${esc(s.phase || 'Pending')}</span></td>
          <td>${esc(s.currentWave)}</td><td>${esc(s.progress)}</td><td class="muted">${esc(s.message)}</td></tr>`;
      }).join('') || '<tr><td colspan="6" class="muted">No releases.</td></tr>');
  });
  return { collections: [releases] };
}

// The check a failure's message names ("check NAME failed on …"), if any.
function failedCheck(checks, f) {
  const c = checks.find((x) => (f.message || '').includes('check ' + x.name + ' failed'));
  return c ? c.name : null;
}

// How many clusters the in-progress table lists; the rest are counted.
const PROGRESS_ROWS = 100;
// How often the bake timers count down (they count virtual time, which may run fast).
const TICK_MS = 250;

function releasePage(name) {
  main.innerHTML = `<p class="muted">Loading release ${esc(name)}…</p>`;
  let busy = false;
  let approver = 'dashboard'; // kept across renders
  const render = () => {
    if (!release.synced) return;
    const r = release.items.get(name);
    if (!r) { main.innerHTML = `<h1>Release ${esc(name)}</h1><p class="muted">No such release (yet).</p>`; return; }
    const s = r.status || {};
    const spec = r.spec || {};
    const strategy = spec.strategy || {};
    const checks = strategy.checks || [];
    const counts = s.clusters || {};
    const byCluster = runsByCluster(runs);
    const progress = releaseProgress(byCluster, taskRuns);
    const waves = s.waves || [];
    const planned = new Set(waves.flatMap((w) => w.clusters));
    const [done, total] = (s.progress || '0/' + planned.size).split('/').map(Number);
    const waveNo = s.currentWave ? Number(s.currentWave.split('/')[0]) : 0;
    const approved = (k) => [...approvals.items.values()].some((a) =>
      a.spec.release === name && a.spec.wave === k && a.spec.decision === 'Approve');
    const gate = s.phase === 'WaitingForApproval' && waveNo && !approved(waveNo) ? waveNo : 0;
    const terminal = ENDED.includes(s.phase);
    const comps = (spec.components || []).map((c) => esc(c.name) + ' → <b>' + esc(c.version) + '</b>').join(', ');
    const baking = [...progress.values()].filter((p) => p.stage === 'baking').length;

    let html = `<h1>Release ${esc(name)} <span class="phase ${esc(s.phase)}" id="phase">${esc(s.phase || 'Pending')}</span></h1>
      <div class="card">
        <div>${comps}${spec.paused ? ' · <b>paused</b>' : ''}${spec.abort ? ' · <b>aborting</b>' : ''}${spec.rollback ? ' · <b>rolling back</b>' : ''}
          <span class="muted">· ${esc(plural((strategy.batches || []).length || 1, 'batch'))} per cluster${strategy.bake ? ' · bake ' + esc(strategy.bake) : ''}</span></div>
        <div class="facts">
          <div><b id="wave">${esc(s.currentWave || '—')}</b><span>wave</span></div>
          <div><b id="progress">${esc(s.progress || '—')}</b><span>clusters done</span></div>
          <div><b>${counts.running || 0}</b><span>running</span></div>
          <div><b id="baking-count">${baking}</b><span>baking</span></div>
          <div><b>${counts.waiting || 0}</b><span>${terminal ? 'never started' : 'waiting'}</span></div>
          <div><b>${counts.failed || 0}</b><span>failed</span></div>
          <div><b>${(counts.rollingBack || 0) + (counts.rolledBack || 0)}</b><span>rolling/rolled back</span></div>
        </div>
        <div class="bar"><div style="width:${total ? (100 * done / total).toFixed(1) : 0}%"></div></div>
        <p id="message" class="muted">${esc(s.message || '')}</p>
        <div class="actions">
          <button id="pause" ${spec.paused || terminal ? 'disabled' : ''}>Pause</button>
          <button id="resume" ${!spec.paused || terminal ? 'disabled' : ''}>Resume</button>
          <button id="abort" class="danger" ${spec.abort || terminal ? 'disabled' : ''}>Abort</button>
          <button id="rollback" class="danger" ${spec.rollback || s.phase === 'RolledBack' ? 'disabled' : ''}>Rollback</button>
          <span id="action-error" class="error"></span>
        </div>
      </div>`;
    if (gate) {
      html += `<div class="card approval" id="approval">
        <b>Wave ${gate} waits for approval.</b> ${waves[gate - 1] ? plural(waves[gate - 1].clusters.length, 'cluster') + '.' : ''}
        <div class="actions"><label>Approved by <input id="approver" value="${esc(approver)}" size="14"></label>
        <button id="approve" class="primary">Approve wave ${gate}</button></div></div>`;
    }

    // What every cluster in flight is doing: its step (batch k of n), the stage of that
    // step, and for a bake, when it ends on the fleet's clock.
    const waveOf = new Map();
    waves.forEach((w, i) => { for (const c of w.clusters) waveOf.set(c, i + 1); });
    const active = [...progress.entries()].sort(([a], [b]) => (waveOf.get(a) || 0) - (waveOf.get(b) || 0) || a.localeCompare(b));
    if (active.length) {
      html += `<div class="card"><h2 style="margin-top:0">In progress <span class="muted">${active.length}</span></h2>
        <table id="in-progress"><tr><th>Cluster</th><th>Wave</th><th>Step</th><th>Stage</th><th>Bake</th><th>Message</th></tr>` +
        active.slice(0, PROGRESS_ROWS).map(([c, p]) => {
          const step = p.rollback ? 'rollback' : p.step ? p.step.label : 'starting';
          return `<tr data-cluster="${esc(c)}"><td class="nowrap"><a href="#/run/${RELEASE_NS}/${esc(p.run.metadata.name)}">${esc(c)}</a></td>
            <td>${esc(waveOf.get(c) || '')}</td>
            <td class="nowrap step">${esc(step)}${p.step && p.step.attempts > 1 ? ` <span class="muted">(try ${esc(p.step.attempts)})</span>` : ''}</td>
            <td class="nowrap stage">${p.stage ? `<span class="stage-${esc(p.stage)}">${esc(p.stage)}</span>` : '<span class="muted">—</span>'}</td>
            <td class="nowrap bake">${p.stage === 'baking' && !Number.isNaN(p.until) ? countdownSpan(p.until) : ''}</td>
            <td class="muted">${esc(p.message)}</td></tr>`;
        }).join('') + '</table>' +
        (active.length > PROGRESS_ROWS ? `<p class="muted">and ${active.length - PROGRESS_ROWS} more</p>` : '') +
        (fleetClock.simulated && fleetClock.scale !== 1 ? `<p class="muted">Bake timers count fleet time, which runs ${esc(fleetClock.scale)}× real time.</p>` : '') +
        '</div>';
    }

    const failures = s.failures || [];
    if (failures.length) {
      html += '<div class="card"><h2 style="margin-top:0">Failures</h2><table id="failures"><tr><th>Cluster</th><th>Step</th><th>Check</th><th>Message</th></tr>' +
        failures.map((f) => `<tr><td class="nowrap">${esc(f.cluster)}</td><td class="nowrap">${esc(f.step)}</td><td class="nowrap">${esc(failedCheck(checks, f) || 'workload health')}</td><td>${esc(f.message)}</td></tr>`).join('') + '</table></div>';
    }
    const interrupted = s.interrupted || [];
    if (interrupted.length) {
      html += '<div class="card"><h2 style="margin-top:0">Stopped part-way</h2><table id="interrupted"><tr><th>Cluster</th><th>Step</th><th>Message</th></tr>' +
        interrupted.map((f) => `<tr><td class="nowrap">${esc(f.cluster)}</td><td class="nowrap">${esc(f.step)}</td><td>${esc(f.message)}</td></tr>`).join('') + '</table></div>';
    }
    html += '<div class="card"><h2 style="margin-top:0">Waves</h2><div class="legend" id="release-legend"></div>';
    const all = {};
    waves.forEach((w, i) => {
      const cs = {};
      let tiles = '';
      for (const c of w.clusters) {
        const st = releaseState(byCluster, null, c, terminal, progress);
        cs[st] = (cs[st] || 0) + 1;
        all[st] = (all[st] || 0) + 1;
        const run = byCluster.get(c);
        const p = progress.get(c);
        const title = c + ': ' + STATE_LABEL[st] + (p && p.step ? ', ' + p.step.label : '') +
          (p && p.stage === 'baking' && !Number.isNaN(p.until) ? ', bake ' + countdown(p.until) : '');
        tiles += run && run.change
          ? `<a href="#/run/${RELEASE_NS}/${esc((run.rollback || run.change).metadata.name)}"><i class="s-${st}" data-cluster="${esc(c)}" title="${esc(title)}"></i></a>`
          : `<i class="s-${st}" data-cluster="${esc(c)}" title="${esc(title)}"></i>`;
      }
      html += `<div class="wave" data-wave="${i + 1}"><div class="head"><b>Wave ${i + 1}${i + 1 === waveNo ? ' ◀' : ''}</b>
        <span class="muted">${plural(w.clusters.length, 'cluster')}${w.approval ? ' · approval gate' + (approved(i + 1) ? ' (approved)' : '') : ''}${w.reason ? ' · ' + esc(w.reason) : ''}</span>
        <span class="legend">${legend(cs, RELEASE_STATES)}</span></div>
        <div class="tiles">${tiles}</div></div>`;
    });
    if (!waves.length) html += '<p class="muted">Not planned yet.</p>';
    html += '</div>';

    // The checks: the release's own (webhooks, metrics) and the components' workload
    // health, each with what it found.
    const attributed = new Map();
    for (const f of failures) {
      const k = failedCheck(checks, f) || '';
      if (!attributed.has(k)) attributed.set(k, []);
      attributed.get(k).push(f);
    }
    const passedAll = [...byCluster.values()].filter((x) => x.change && runState(x.change) === 'succeeded' && !x.rollback).length;
    const checking = [...progress.entries()].filter(([, p]) => p.stage === 'checking');
    // What each check read where it passed: the step results `check-NAME` of every
    // change run (`HTTP 200`, `0.01 ≤ max 0.05`).
    const readings = new Map(); // check → [{cluster, task, value, at}]
    for (const [cluster, x] of byCluster) {
      for (const t of (x.change && x.change.status && x.change.status.tasks) || []) {
        for (const res of t.results || []) {
          if (!res.name.startsWith('check-')) continue;
          const k = res.name.slice(6);
          if (!readings.has(k)) readings.set(k, []);
          readings.get(k).push({ cluster, task: t.name, value: res.value, at: parseTime(t.completionTime) || 0 });
        }
      }
    }
    const checkRow = (id, nm, kind, what, threshold, list) => {
      const last = list.length ? list[list.length - 1] : null;
      const now = checking.filter(([, p]) => id === '' || (p.message || '').includes(nm));
      const read = (readings.get(id) || []).sort((a, b) => b.at - a.at);
      const passedOn = id === '' ? passedAll : new Set(read.map((r) => r.cluster)).size;
      const passes = id === '' ? ''
        : read.length ? `${plural(read.length, 'pass')} on ${plural(passedOn, 'cluster')}` : 'not run yet';
      let result = '<span class="muted">—</span>';
      if (last) result = `<span class="error">${(last.message || '').includes(last.cluster) ? '' : esc(last.cluster) + ': '}${esc(last.message)}</span>`;
      else if (now.length) result = esc(now[0][0] + ': ' + (now[0][1].message || 'checking'));
      else if (read.length) result = `${esc(read[0].cluster)} · ${esc(read[0].task)}: <b>${esc(read[0].value)}</b>`;
      return `<tr data-check="${esc(id)}"><td class="nowrap"><b>${esc(nm)}</b></td><td>${esc(kind)}</td>
        <td class="muted what">${what}</td><td class="nowrap">${esc(threshold)}</td>
        <td class="nowrap passes">${esc(passes)}</td>
        <td class="nowrap failed-count">${list.length ? `<span class="error">${plural(list.length, 'cluster')} failed</span>` : 'no failures'}</td>
        <td class="result">${result}</td></tr>`;
    };
    html += `<div class="card"><h2 style="margin-top:0">Checks</h2>
      <p class="muted">Before each cluster's first step and after each step's bake. ${plural(passedAll, 'cluster')} passed every check${checking.length ? `; ${checking.length} checking now` : ''}.</p>
      <table id="checks"><tr><th>Check</th><th>Kind</th><th>What</th><th>Threshold</th><th>Passed</th><th>Failures</th><th>Latest result</th></tr>` +
      checks.map((c) => {
        const kind = c.webhook ? 'webhook' : c.metric ? 'metric' : '—';
        const what = c.webhook ? `POST <span class="mono">${esc(c.webhook.url)}</span>${c.webhook.timeout ? ' · timeout ' + esc(c.webhook.timeout) : ''}`
          : c.metric ? `<span class="mono">${esc(c.metric.query)}</span> on ${esc(c.metric.prometheus)}` : '';
        const m = c.metric || {};
        const threshold = c.webhook ? 'any 2xx' : m.min !== undefined && m.max !== undefined ? `${m.min} ≤ value ≤ ${m.max}`
          : m.max !== undefined ? `value ≤ ${m.max}` : m.min !== undefined ? `value ≥ ${m.min}` : '';
        return checkRow(c.name, c.name, kind, what, threshold, attributed.get(c.name) || []);
      }).join('') +
      checkRow('', 'workload health', 'component', 'each component\'s workload checks (ready pods, no crash loops)', '', attributed.get('') || []) +
      '</table></div>';

    // A render replaces the page: keep the focus and caret of the approver field.
    const focused = document.activeElement && document.activeElement.id === 'approver'
      ? [document.activeElement.selectionStart, document.activeElement.selectionEnd] : null;
    main.innerHTML = html;
    document.getElementById('release-legend').innerHTML = legend(all, RELEASE_STATES);

    const act = (id, patch, confirmText) => {
      const b = document.getElementById(id);
      b.onclick = async () => {
        if (busy || (confirmText && !confirm(confirmText))) return;
        busy = true;
        b.disabled = true;
        try {
          await api('PATCH', API + '/releases/' + encodeURIComponent(name), { spec: patch },
            'application/merge-patch+json');
        } catch (e) {
          document.getElementById('action-error').textContent = e.message;
        } finally { busy = false; }
      };
    };
    act('pause', { paused: true });
    act('resume', { paused: false });
    act('abort', { abort: true }, `Abort release ${name}? Clusters not yet started will not be changed.`);
    act('rollback', { rollback: true }, `Roll back release ${name} on every cluster it changed?`);
    if (gate) {
      const input = document.getElementById('approver');
      input.oninput = (e) => { approver = e.target.value; };
      if (focused) { input.focus(); input.setSelectionRange(focused[0], focused[1]); }
      document.getElementById('approve').onclick = async (e) => {
        e.target.disabled = true;
        const by = approver.trim() || 'dashboard';
        try {
          await api('POST', API + '/namespaces/default/approvals', {
            apiVersion: 'shoal.io/v1alpha1', kind: 'Approval',
            metadata: { name: name + '-wave-' + gate },
            spec: { release: name, wave: gate, approvedBy: by, decision: 'Approve', reason: 'approved in the dashboard' },
          });
        } catch (err) {
          document.getElementById('action-error').textContent = err.message;
          e.target.disabled = false;
        }
      };
    }
  };
  const release = new Collection(API + '/releases', { fieldSelector: 'metadata.name=' + name }, render);
  const runs = new Collection(API + '/namespaces/' + RELEASE_NS + '/pipelineruns',
    { labelSelector: 'shoal.io/release=' + name }, render);
  const taskRuns = new Collection(API + '/namespaces/' + RELEASE_NS + '/taskruns',
    { labelSelector: 'shoal.io/release=' + name }, render);
  const approvals = new Collection(API + '/approvals', {}, render);
  const ticker = setInterval(tickCountdowns, TICK_MS);
  return { collections: [release, runs, taskRuns, approvals], stop() { clearInterval(ticker); } };
}

// Tasks in dependency order: a topological order of runAfter, ties by spec order.
function dependencyOrder(specTasks, statusTasks) {
  const names = specTasks.map((t) => t.name);
  for (const t of statusTasks) if (!names.includes(t.name)) names.push(t.name);
  const after = new Map(specTasks.map((t) => [t.name, t.runAfter || []]));
  const out = [];
  const seen = new Set();
  const visit = (n, path) => {
    if (seen.has(n) || path.has(n)) return;
    path.add(n);
    for (const d of after.get(n) || []) visit(d, path);
    seen.add(n);
    out.push(n);
  };
  for (const n of names) visit(n, new Set());
  return out;
}

const TASK_STATE = {
  Pending: 'waiting', Running: 'running', Retrying: 'rollingback', Succeeded: 'succeeded',
  Failed: 'failed', Skipped: 'out', Cancelled: 'out', Interrupted: 'failed',
};

// The layout of a run's DAG: a column per dependency depth (a task sits one column right
// of its deepest runAfter), `finally` tasks in a last column of their own; within a
// column, tasks ordered by where their dependencies sit, so edges cross less.
function dagLayout(tasks, finallyTasks) {
  const after = new Map(tasks.map((t) => [t.name, (t.runAfter || []).filter((d) => d !== t.name)]));
  const depth = new Map();
  const depthOf = (n, path) => {
    if (depth.has(n)) return depth.get(n);
    if (path.has(n) || !after.has(n)) return 0; // a cycle or an unknown name: no deeper
    path.add(n);
    const d = Math.max(-1, ...after.get(n).map((x) => depthOf(x, path))) + 1;
    path.delete(n);
    depth.set(n, d);
    return d;
  };
  for (const t of tasks) depthOf(t.name, new Set());
  const cols = [];
  for (const t of tasks) {
    const d = depth.get(t.name);
    (cols[d] = cols[d] || []).push(t.name);
  }
  const row = new Map();
  cols.forEach((col, i) => {
    if (i > 0) {
      const key = (n) => {
        const ds = after.get(n).filter((x) => row.has(x));
        return ds.length ? ds.reduce((a, x) => a + row.get(x), 0) / ds.length : 0;
      };
      col.sort((a, b) => key(a) - key(b));
    }
    col.forEach((n, j) => row.set(n, j));
  });
  if (finallyTasks.length) cols.push(finallyTasks.map((t) => t.name));
  const edges = [];
  for (const t of tasks) for (const d of after.get(t.name)) if (depth.has(d)) edges.push([d, t.name]);
  return { cols: cols.filter(Boolean), edges, finallyCol: finallyTasks.length ? cols.length - 1 : -1 };
}

// One task's instances (several for a matrix) folded into one node: the most pressing
// state, the earliest start, the last completion.
function foldInstances(list) {
  if (!list || !list.length) return { state: 'Pending', n: 0 };
  const rank = ['Running', 'Retrying', 'Interrupted', 'Failed', 'Pending', 'Cancelled', 'Skipped', 'Succeeded'];
  const state = list.map((t) => t.state).sort((a, b) => rank.indexOf(a) - rank.indexOf(b))[0];
  const starts = list.map((t) => t.startTime).filter(Boolean).sort();
  const ends = list.map((t) => t.completionTime).filter(Boolean).sort();
  const finished = list.every((t) => t.completionTime);
  return {
    state, n: list.length, startTime: starts[0], completionTime: finished ? ends[ends.length - 1] : undefined,
    attempts: Math.max(...list.map((t) => t.attempts || 0)), message: list.map((t) => t.message).filter(Boolean)[0],
  };
}

const DAG = { w: 172, h: 48, colGap: 56, rowGap: 14, pad: 8, label: 18 };

// The run's tasks as an SVG graph: nodes coloured by state with their duration, edges
// from each runAfter. `live` is cluster-run detail from the TaskRuns (stage, bake).
function dagSvg(layout, instances, live) {
  const { w, h, colGap, rowGap, pad, label } = DAG;
  const pos = new Map();
  layout.cols.forEach((col, i) => col.forEach((n, j) => pos.set(n, {
    x: pad + i * (w + colGap), y: pad + label + j * (h + rowGap),
  })));
  const rows = Math.max(1, ...layout.cols.map((c) => c.length));
  const width = pad * 2 + layout.cols.length * (w + colGap) - colGap;
  const height = pad * 2 + label + rows * (h + rowGap) - rowGap;
  const fit = (s, max) => (s.length > max ? s.slice(0, max - 1) + '…' : s);
  let svg = `<svg id="dag" class="dag" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="the run's tasks and their dependencies">
    <defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" fill="#8a94a6"/></marker></defs>`;
  layout.cols.forEach((col, i) => {
    const x = pad + i * (w + colGap);
    svg += `<text class="col-label" x="${x}" y="${pad + 11}">${i === layout.finallyCol ? 'finally' : 'depth ' + i}</text>`;
  });
  for (const [from, to] of layout.edges) {
    const a = pos.get(from), b = pos.get(to);
    if (!a || !b) continue;
    const x1 = a.x + w, y1 = a.y + h / 2, x2 = b.x - 2, y2 = b.y + h / 2, mx = (x1 + x2) / 2;
    svg += `<path class="edge" data-from="${esc(from)}" data-to="${esc(to)}" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}" marker-end="url(#arrow)"/>`;
  }
  for (const [n, p] of pos) {
    const t = instances.get(n) || { state: 'Pending', n: 0 };
    const l = live && live.get(n);
    // A bake is running too, but it has a colour of its own, as on the release page.
    const cls = t.state === 'Running' && l && l.stage === 'baking' ? 'baking' : TASK_STATE[t.state] || 'unknown';
    let second = t.state + (t.startTime ? ' · ' + duration(t.startTime, t.completionTime) : '');
    if (l && l.stage && t.state === 'Running') {
      second = l.stage + (l.stage === 'baking' && !Number.isNaN(l.until) ? ' · ' : '');
    }
    const bake = l && l.stage === 'baking' && !Number.isNaN(l.until) && t.state === 'Running';
    const extra = (t.n > 1 ? ` ×${t.n}` : '') + (t.attempts > 1 ? ` · try ${t.attempts}` : '');
    svg += `<g class="node s-${cls}" data-task="${esc(n)}" transform="translate(${p.x},${p.y})">
      <title>${esc(n)}: ${esc(t.state)}${t.message ? ' — ' + esc(t.message) : ''}</title>
      <rect width="${w}" height="${h}" rx="6"/>
      <text class="name" x="10" y="19">${esc(fit(n, 21))}</text>
      <text class="info" x="10" y="37">${esc(fit(second + extra, 26))}${bake ? `<tspan class="countdown" data-until="${l.until}">${esc(countdown(l.until))}</tspan>` : ''}</text>
    </g>`;
  }
  return svg + '</svg>';
}

function runPage(ns, name) {
  main.innerHTML = `<p class="muted">Loading run ${esc(name)}…</p>`;
  const render = () => {
    const r = run.items.get(ns + '/' + name);
    if (!r) { if (run.synced) main.innerHTML = `<h1>Run ${esc(name)}</h1><p class="muted">No such run.</p>`; return; }
    const s = r.status || {};
    const pipelineSpec = s.pipelineSpec || {};
    const specTasks = pipelineSpec.tasks || [];
    const finallyTasks = pipelineSpec.finally || [];
    const statusTasks = s.tasks || [];
    const byName = new Map();
    for (const t of statusTasks) {
      if (!byName.has(t.name)) byName.set(t.name, []);
      byName.get(t.name).push(t);
    }
    const instances = new Map([...byName].map(([n, list]) => [n, foldInstances(list)]));
    // Tasks the status knows and the pinned spec does not (no spec yet): a column each.
    const known = new Set([...specTasks, ...finallyTasks].map((t) => t.name));
    const extra = [...byName.keys()].filter((n) => !known.has(n)).map((n) => ({ name: n }));
    const layout = dagLayout([...specTasks, ...extra], finallyTasks);
    const order = dependencyOrder(specTasks, statusTasks);
    for (const t of finallyTasks) if (!order.includes(t.name)) order.push(t.name);
    const deps = new Map(specTasks.map((t) => [t.name, t.runAfter || []]));
    const t0 = parseTime(s.startTime);
    const ends = statusTasks.map((t) => parseTime(t.completionTime || t.startTime)).filter((x) => !Number.isNaN(x));
    const done = parseTime(s.completionTime);
    const t1 = Math.max(Number.isNaN(t0) ? 0 : t0, ...ends, Number.isNaN(done) ? fleetClock.now() : done);
    const total = !Number.isNaN(t0) && t1 > t0 ? t1 - t0 : 1;
    const l = labels(r);
    const st = runState(r);
    // The live stage of each task from its newest TaskRun (release steps report one).
    const index = taskRunIndex(taskRuns);
    const live = new Map();
    for (const n of byName.keys()) {
      const tr = index.get(name + '/' + n);
      const p = tr && tr.status && tr.status.progress;
      if (p) live.set(n, { stage: p.stage, message: p.message, until: p.until ? parseTime(p.until) : NaN });
    }
    main.innerHTML = `<h1>Run ${esc(name)} <span class="phase ${st === 'succeeded' ? 'Succeeded' : st === 'failed' ? 'Failed' : 'Progressing'}">${STATE_LABEL[st]}</span></h1>
      <div class="card">
        ${l['shoal.io/release'] ? `release <a href="#/release/${encodeURIComponent(l['shoal.io/release'])}">${esc(l['shoal.io/release'])}</a> · cluster ${esc(l['shoal.io/cluster'])} · ${esc(l['shoal.io/release-action'])} · ` : ''}
        started ${esc(when(s.startTime))}${s.completionTime ? ', finished ' + esc(when(s.completionTime)) + ' (' + duration(s.startTime, s.completionTime) + ')' : ''}
        ${s.progress ? ' · ' + esc(s.progress) + ' tasks done' : ''}
      </div>
      <div class="card"><h2 style="margin-top:0">Tasks</h2><div class="dag-wrap">${layout.cols.length ? dagSvg(layout, instances, live) : '<p class="muted">No tasks yet.</p>'}</div></div>
      <div class="card"><table id="tasks"><tr><th>Task</th><th>After</th><th>State</th><th>Started</th><th>Took</th><th style="width:30%">Timeline</th><th>Message</th></tr>` +
      order.map((n) => {
        const t = instances.get(n) || { state: 'Pending' };
        const lv = live.get(n);
        const baking = t.state === 'Running' && lv && lv.stage === 'baking';
        const cls = baking ? 'baking' : TASK_STATE[t.state] || 'unknown';
        const ts = parseTime(t.startTime);
        const te = t.completionTime ? parseTime(t.completionTime) : t1;
        const a = !Number.isNaN(ts) && !Number.isNaN(t0) ? (ts - t0) / total * 100 : 0;
        const b = !Number.isNaN(ts) && !Number.isNaN(t0) ? (te - t0) / total * 100 : 0;
        const msg = t.state === 'Running' && lv && lv.message ? lv.message : t.message;
        return `<tr data-task="${esc(n)}"><td class="nowrap">${esc(n)}</td><td class="muted">${esc((deps.get(n) || []).join(', '))}</td>
          <td class="nowrap"><span class="legend"><span class="s-${cls}">${esc(t.state)}${baking ? ' (baking)' : ''}</span></span></td>
          <td class="nowrap">${esc(when(t.startTime))}</td><td class="nowrap">${!t.startTime ? '' : t.completionTime ? duration(t.startTime, t.completionTime) : elapsedSpan(parseTime(t.startTime))}</td>
          <td><div class="gantt">${t.startTime ? `<div class="s-${cls}" style="left:${a.toFixed(2)}%;width:${Math.max(b - a, 0.5).toFixed(2)}%"></div>` : ''}</div></td>
          <td class="muted">${esc(msg)}</td></tr>`;
      }).join('') + '</table></div>';
  };
  const run = new Collection(API + '/namespaces/' + encodeURIComponent(ns) + '/pipelineruns',
    { fieldSelector: 'metadata.name=' + name }, render);
  const taskRuns = new Collection(API + '/namespaces/' + encodeURIComponent(ns) + '/taskruns',
    { labelSelector: 'shoal.io/pipelineRun=' + name }, render);
  // Running tasks' durations and bake timers move with the clock, not only with events.
  const ticker = setInterval(tickCountdowns, TICK_MS);
  return { collections: [run, taskRuns], stop() { clearInterval(ticker); } };
}

function componentsPage() {
  main.innerHTML = '<h1>Components</h1><div class="card"><table id="components"></table></div>';
  const comps = new Collection(API + '/components', {}, () => {
    document.getElementById('components').innerHTML =
      '<tr><th>Name</th><th>Version</th><th>Summary</th><th>Drifted</th></tr>' +
      ([...comps.items.values()].map((c) => `<tr><td><a href="#/component/${encodeURIComponent(c.metadata.name)}">${esc(c.metadata.name)}</a></td>
        <td>${esc(c.spec.version)}</td><td class="muted">${esc(c.status && c.status.summary)}</td><td>${esc((c.status && c.status.drifted) || 0)}</td></tr>`).join('')
        || '<tr><td colspan="4" class="muted">No components.</td></tr>');
  });
  return { collections: [comps] };
}

function componentPage(name) {
  main.innerHTML = `<p class="muted">Loading component ${esc(name)}…</p>`;
  const comp = new Collection(API + '/components', { fieldSelector: 'metadata.name=' + name }, () => {
    const c = comp.items.get(name);
    if (!c) { main.innerHTML = `<h1>Component ${esc(name)}</h1><p class="muted">No such component.</p>`; return; }
    const s = c.status || {};
    const versions = s.versions || [];
    const max = Math.max(1, ...versions.map((v) => v.clusters));
    const rowH = 26, labelW = 110, barW = 420;
    const svg = `<svg id="versions" width="${labelW + barW + 160}" height="${versions.length * rowH + 4}" role="img" aria-label="clusters per version">` +
      versions.map((v, i) => {
        const w = Math.max(2, barW * v.clusters / max);
        const y = i * rowH + 2;
        return `<text x="${labelW - 8}" y="${y + 16}" text-anchor="end" font-size="13">${esc(v.version)}</text>
          <rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${rowH - 8}" rx="3" fill="${v.version === c.spec.version ? '#2e9d5b' : '#2f7fd8'}"/>
          <text x="${labelW + w + 6}" y="${y + 14}" font-size="12" fill="#6b7280">${v.clusters} clusters · ${v.nodes} nodes</text>`;
      }).join('') + '</svg>';
    main.innerHTML = `<h1>Component ${esc(name)}</h1>
      <div class="card">target version <b>${esc(c.spec.version)}</b> · image ${esc(c.spec.image)}
        · <a href="#/?component=${encodeURIComponent(name)}">fleet map by version</a>
        <p class="muted">${esc(s.summary || '')}</p></div>
      <div class="card"><h2 style="margin-top:0">Versions across the fleet</h2>${versions.length ? svg : '<p class="muted">Not observed yet.</p>'}
        ${s.notInstalled ? `<p class="muted">not installed on ${s.notInstalled} clusters</p>` : ''}
        ${s.unreachable ? `<p class="muted">${s.unreachable} clusters unreachable</p>` : ''}</div>
      <div class="card"><h2 style="margin-top:0">Drift <span class="muted">${esc(s.drifted || 0)}</span></h2>
        ${(s.drift || []).length ? '<table id="drift"><tr><th>Cluster</th><th>Fields changed by hand</th></tr>' +
          s.drift.map((d) => `<tr><td>${esc(d.cluster)}</td><td>${esc((d.fields || []).join(', '))}</td></tr>`).join('') + '</table>'
          : '<p class="muted">No drift.</p>'}</div>`;
  });
  return { collections: [comp] };
}

// ---- the router ----------------------------------------------------------------------

function route() {
  if (page) {
    for (const c of page.collections) c.stop();
    if (page.stop) page.stop();
  }
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  const params = Object.fromEntries(new URLSearchParams(query || ''));
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'release' && parts[1]) page = releasePage(parts[1]);
  else if (parts[0] === 'releases') page = releasesPage();
  else if (parts[0] === 'run' && parts[2]) page = runPage(parts[1], parts[2]);
  else if (parts[0] === 'components') page = componentsPage();
  else if (parts[0] === 'component' && parts[1]) page = componentPage(parts[1]);
  else page = fleetPage(params);
}

window.addEventListener('hashchange', route);
route();
