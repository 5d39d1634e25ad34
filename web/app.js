// The shoal dashboard: a single page with hash routes, no framework, nothing fetched
// but the API itself. Every view is live: it lists what it shows, then watches from the
// list's resourceVersion, and lists again when the watch answers 410 Gone or drops.
//
//   route                      watches
//   #/                         clusters, releases, (the chosen release's pipeline runs)
//   #/releases                 releases
//   #/release/NAME             the release, its pipeline runs, approvals
//   #/run/NS/NAME              the pipeline run
//   #/components               components
//   #/component/NAME           the component
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

async function api(method, path, body, contentType) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = contentType || 'application/json';
  }
  const r = await fetch(path, init);
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((json && json.message) || r.status + ' ' + r.statusText);
  return json;
}

const keyOf = (o) => (o.metadata.namespace ? o.metadata.namespace + '/' : '') + o.metadata.name;

// Connection state shown in the header: live while every watch of the page is open.
const conn = {
  down: new Set(),
  set(id, ok) {
    if (ok) this.down.delete(id); else this.down.add(id);
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
        const r = await fetch(this.path + qs(this.params), { signal });
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
    const r = await fetch(this.path + qs(params), { signal });
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

function health(cluster) {
  const c = condition(cluster, 'Ready');
  if (!c) return 'unknown';
  return c.status === 'True' ? 'ready' : c.status === 'False' ? 'notready' : 'unknown';
}

// A cluster's state in a release, from the release's pipeline runs (by cluster:
// {change, rollback}) and its plan.
function releaseState(runs, planned, cluster, ended) {
  if (planned && !planned.has(cluster)) return 'out';
  const r = runs.get(cluster);
  if (!r || !r.change) return ended ? 'notstarted' : 'waiting';
  if (r.rollback) {
    const s = runState(r.rollback);
    return s === 'succeeded' ? 'rolledback' : s === 'failed' ? 'failed' : 'rollingback';
  }
  return runState(r.change);
}

// The phases after which nothing more happens to a release.
const ENDED = ['Succeeded', 'Failed', 'RolledBack'];
const RELEASE_STATES = ['waiting', 'running', 'succeeded', 'failed', 'rollingback', 'rolledback', 'notstarted'];

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

const STATE_LABEL = {
  ready: 'Ready', notready: 'Not ready', unknown: 'No Ready condition', waiting: 'Waiting',
  running: 'Running', succeeded: 'Succeeded', failed: 'Failed', rollingback: 'Rolling back',
  rolledback: 'Rolled back', out: 'Not in release', notstarted: 'Never started',
};

function legend(counts, order) {
  return order.filter((s) => counts[s]).map((s) =>
    `<span class="s-${s}" data-state="${s}">${STATE_LABEL[s]} <b>${counts[s]}</b></span>`).join('');
}

const plural = (n, word) => n + ' ' + word + (n === 1 ? '' : 's');

function when(t) {
  return t ? new Date(t).toLocaleTimeString() : '';
}

function duration(a, b) {
  if (!a) return '';
  const ms = (b ? new Date(b) : new Date()) - new Date(a);
  const s = Math.round(ms / 1000);
  return s < 60 ? s + 's' : s < 3600 ? Math.floor(s / 60) + 'm' + (s % 60) + 's' : (s / 3600).toFixed(1) + 'h';
}

// ---- pages -------------------------------------------------------------------------

const main = document.getElementById('main');
let page = null; // { collections: [...] } of the page on screen

// Exposed for tests and the benchmark: when the fleet map first drew every cluster.
window.shoalUi = { fleetDrawnAt: null, fleetTiles: 0 };

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
  const tiles = new Map(); // name → element
  let layoutKey = '';
  let selected = null;
  let chosen = params.release || '';
  let runs = null;

  const clusters = new Collection(API + '/clusters', {}, draw);
  const releases = new Collection(API + '/releases', {}, () => {
    const names = [...releases.items.keys()].sort();
    const want = ['', ...names].join('\n');
    if (select.dataset.names !== want) {
      select.dataset.names = want;
      select.innerHTML = '<option value="">health (Ready)</option>' +
        names.map((n) => `<option value="${esc(n)}">release ${esc(n)}</option>`).join('');
      select.value = chosen;
    }
    draw();
  });
  const collections = [clusters, releases];

  function watchRuns() {
    if (runs) { runs.stop(); collections.splice(collections.indexOf(runs), 1); runs = null; }
    if (chosen) {
      runs = new Collection(API + '/namespaces/' + RELEASE_NS + '/pipelineruns',
        { labelSelector: 'shoal.io/release=' + chosen }, draw);
      collections.push(runs);
    }
  }
  select.addEventListener('change', () => {
    chosen = select.value;
    history.replaceState(null, '', chosen ? '#/?release=' + encodeURIComponent(chosen) : '#/');
    watchRuns();
    draw();
  });
  watchRuns();

  function stateOf() {
    if (!chosen) return (c) => health(c);
    const rel = releases.items.get(chosen);
    const waves = (rel && rel.status && rel.status.waves) || [];
    const planned = waves.length ? new Set(waves.flatMap((w) => w.clusters)) : null;
    const byCluster = runs ? runsByCluster(runs) : new Map();
    const ended = rel && ENDED.includes(rel.status && rel.status.phase);
    return (c) => releaseState(byCluster, planned, c.metadata.name, ended);
  }

  function draw() {
    if (!clusters.synced) return;
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
      if (selected && tiles.has(selected)) tiles.get(selected).classList.add('sel');
      document.getElementById('fleet-count').textContent = all.length.toLocaleString('en') + ' clusters';
    }
    const state = stateOf();
    const counts = {};
    for (const c of all) {
      const s = state(c);
      counts[s] = (counts[s] || 0) + 1;
      const el = tiles.get(c.metadata.name);
      const cls = 's-' + s + (selected === c.metadata.name ? ' sel' : '');
      if (el && el.className !== cls) el.className = cls;
    }
    document.getElementById('legend').innerHTML = legend(counts, chosen
      ? ['waiting', 'running', 'succeeded', 'failed', 'rollingback', 'rolledback', 'notstarted', 'out']
      : ['ready', 'notready', 'unknown']);
    if (selected) showDetail(selected);
    if (window.shoalUi.fleetDrawnAt === null && all.length) {
      // After the frame that paints the tiles.
      requestAnimationFrame(() => setTimeout(() => {
        window.shoalUi.fleetTiles = tiles.size;
        window.shoalUi.fleetDrawnAt = performance.now();
      }, 0));
    }
  }

  function showDetail(name) {
    const c = clusters.items.get(name);
    const el = document.getElementById('detail');
    if (!c) { el.innerHTML = '<p class="muted">Hover over a cluster.</p>'; return; }
    const l = labels(c);
    const ready = condition(c, 'Ready');
    const rows = [
      ['env', l.env], ['region', l.region], ['zone', l.zone], ['business', l.business],
      ['tier', l.tier], ['nodes', c.status && c.status.nodeCount],
      ['Kubernetes', c.status && c.status.kubernetesVersion],
      ['Ready', ready ? ready.status + (ready.reason ? ' (' + ready.reason + ')' : '') : 'unknown'],
    ];
    if (chosen) {
      const s = stateOf()(c);
      rows.push(['release ' + chosen, STATE_LABEL[s]]);
      const r = runs && runsByCluster(runs).get(name);
      if (r && r.change) rows.push(['run', `<a href="#/run/${RELEASE_NS}/${esc(r.change.metadata.name)}">${esc(r.change.metadata.name)}</a>`]);
    }
    el.innerHTML = `<h2 style="margin-top:0" id="detail-name">${esc(name)}</h2><dl>` +
      rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${k === 'run' ? v : esc(v === undefined ? '—' : v)}</dd>`).join('') + '</dl>';
  }

  map.addEventListener('mouseover', (e) => {
    if (e.target.dataset && e.target.dataset.n && !selected) showDetail(e.target.dataset.n);
  });
  map.addEventListener('click', (e) => {
    const n = e.target.dataset && e.target.dataset.n;
    if (!n) return;
    if (selected && tiles.has(selected)) tiles.get(selected).classList.remove('sel');
    selected = selected === n ? null : n;
    if (selected) tiles.get(selected).classList.add('sel');
    showDetail(n);
  });

  return { collections };
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
    const counts = s.clusters || {};
    const byCluster = runsByCluster(runs);
    const waves = s.waves || [];
    const planned = new Set(waves.flatMap((w) => w.clusters));
    const [done, total] = (s.progress || '0/' + planned.size).split('/').map(Number);
    const waveNo = s.currentWave ? Number(s.currentWave.split('/')[0]) : 0;
    const approved = (k) => [...approvals.items.values()].some((a) =>
      a.spec.release === name && a.spec.wave === k && a.spec.decision === 'Approve');
    const gate = s.phase === 'WaitingForApproval' && waveNo && !approved(waveNo) ? waveNo : 0;
    const terminal = ENDED.includes(s.phase);
    const comps = (spec.components || []).map((c) => esc(c.name) + ' → <b>' + esc(c.version) + '</b>').join(', ');

    let html = `<h1>Release ${esc(name)} <span class="phase ${esc(s.phase)}" id="phase">${esc(s.phase || 'Pending')}</span></h1>
      <div class="card">
        <div>${comps}${spec.paused ? ' · <b>paused</b>' : ''}${spec.abort ? ' · <b>aborting</b>' : ''}${spec.rollback ? ' · <b>rolling back</b>' : ''}</div>
        <div class="facts">
          <div><b id="wave">${esc(s.currentWave || '—')}</b><span>wave</span></div>
          <div><b id="progress">${esc(s.progress || '—')}</b><span>clusters done</span></div>
          <div><b>${counts.running || 0}</b><span>running</span></div>
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
    if (s.failures && s.failures.length) {
      html += '<div class="card"><h2 style="margin-top:0">Failures</h2><table id="failures"><tr><th>Cluster</th><th>Step</th><th>Message</th></tr>' +
        s.failures.map((f) => `<tr><td class="nowrap">${esc(f.cluster)}</td><td class="nowrap">${esc(f.step)}</td><td>${esc(f.message)}</td></tr>`).join('') + '</table></div>';
    }
    html += '<div class="card"><h2 style="margin-top:0">Waves</h2><div class="legend" id="release-legend"></div>';
    const all = {};
    waves.forEach((w, i) => {
      const cs = {};
      let tiles = '';
      for (const c of w.clusters) {
        const st = releaseState(byCluster, null, c, terminal);
        cs[st] = (cs[st] || 0) + 1;
        all[st] = (all[st] || 0) + 1;
        const run = byCluster.get(c);
        const title = c + ': ' + STATE_LABEL[st];
        tiles += run && run.change
          ? `<a href="#/run/${RELEASE_NS}/${esc((run.rollback || run.change).metadata.name)}"><i class="s-${st}" title="${esc(title)}"></i></a>`
          : `<i class="s-${st}" title="${esc(title)}"></i>`;
      }
      html += `<div class="wave" data-wave="${i + 1}"><div class="head"><b>Wave ${i + 1}${i + 1 === waveNo ? ' ◀' : ''}</b>
        <span class="muted">${plural(w.clusters.length, 'cluster')}${w.approval ? ' · approval gate' + (approved(i + 1) ? ' (approved)' : '') : ''}${w.reason ? ' · ' + esc(w.reason) : ''}</span>
        <span class="legend">${legend(cs, RELEASE_STATES)}</span></div>
        <div class="tiles">${tiles}</div></div>`;
    });
    if (!waves.length) html += '<p class="muted">Not planned yet.</p>';
    html += '</div>';
    main.innerHTML = html;
    document.getElementById('release-legend').innerHTML =
      legend(all, RELEASE_STATES);

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
      document.getElementById('approver').oninput = (e) => { approver = e.target.value; };
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
  const approvals = new Collection(API + '/approvals', {}, render);
  return { collections: [release, runs, approvals] };
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

function runPage(ns, name) {
  main.innerHTML = `<p class="muted">Loading run ${esc(name)}…</p>`;
  const run = new Collection(API + '/namespaces/' + encodeURIComponent(ns) + '/pipelineruns',
    { fieldSelector: 'metadata.name=' + name }, () => {
      const r = run.items.get(ns + '/' + name);
      if (!r) { main.innerHTML = `<h1>Run ${esc(name)}</h1><p class="muted">No such run.</p>`; return; }
      const s = r.status || {};
      const specTasks = (s.pipelineSpec && s.pipelineSpec.tasks) || [];
      const byName = new Map((s.tasks || []).map((t) => [t.name, t]));
      const order = dependencyOrder(specTasks, s.tasks || []);
      const deps = new Map(specTasks.map((t) => [t.name, t.runAfter || []]));
      const t0 = s.startTime ? new Date(s.startTime).getTime() : null;
      const ends = (s.tasks || []).map((t) => t.completionTime || t.startTime).filter(Boolean).map((t) => new Date(t).getTime());
      const t1 = Math.max(t0 || 0, ...ends, s.completionTime ? new Date(s.completionTime).getTime() : 0);
      const span = t0 && t1 > t0 ? t1 - t0 : 1;
      const l = labels(r);
      const st = runState(r);
      main.innerHTML = `<h1>Run ${esc(name)} <span class="phase ${st === 'succeeded' ? 'Succeeded' : st === 'failed' ? 'Failed' : 'Progressing'}">${STATE_LABEL[st]}</span></h1>
        <div class="card">
          ${l['shoal.io/release'] ? `release <a href="#/release/${encodeURIComponent(l['shoal.io/release'])}">${esc(l['shoal.io/release'])}</a> · cluster ${esc(l['shoal.io/cluster'])} · ${esc(l['shoal.io/release-action'])} · ` : ''}
          started ${esc(when(s.startTime))}${s.completionTime ? ', finished ' + esc(when(s.completionTime)) + ' (' + duration(s.startTime, s.completionTime) + ')' : ''}
          ${s.progress ? ' · ' + esc(s.progress) : ''}
        </div>
        <div class="card"><table id="tasks"><tr><th>Task</th><th>After</th><th>State</th><th>Started</th><th>Took</th><th style="width:30%">Timeline</th><th>Message</th></tr>` +
        order.map((n) => {
          const t = byName.get(n) || { state: 'Pending' };
          const cls = TASK_STATE[t.state] || 'unknown';
          const a = t.startTime && t0 ? (new Date(t.startTime).getTime() - t0) / span * 100 : 0;
          const b = t.startTime && t0 ? ((t.completionTime ? new Date(t.completionTime).getTime() : t1) - t0) / span * 100 : 0;
          return `<tr data-task="${esc(n)}"><td>${esc(n)}</td><td class="muted">${esc((deps.get(n) || []).join(', '))}</td>
            <td><span class="legend"><span class="s-${cls}">${esc(t.state)}</span></span></td>
            <td class="nowrap">${esc(when(t.startTime))}</td><td class="nowrap">${t.startTime ? duration(t.startTime, t.completionTime) : ''}</td>
            <td><div class="gantt">${t.startTime ? `<div class="s-${cls}" style="left:${a.toFixed(2)}%;width:${Math.max(b - a, 0.5).toFixed(2)}%"></div>` : ''}</div></td>
            <td class="muted">${esc(t.message)}</td></tr>`;
        }).join('') + '</table></div>';
    });
  return { collections: [run] };
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
  if (page) for (const c of page.collections) c.stop();
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
