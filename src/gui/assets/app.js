// clonet's web GUI: the live topology of one lab as SVG, driven through
// the lab's control protocol relayed over a WebSocket (see src/gui/mod.rs).
// Build-free: one ES module, no dependencies.
//
// Everything drawn carries data attributes (data-node, data-kind,
// data-state, data-lan, data-link, data-up, data-port) so that tests and
// users' own scripts can find it.

const SVG = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);

// ---- the access token ----------------------------------------------------
//
// clonet prints the page's URL with the token in its fragment (#token=…),
// which the browser never sends anywhere. The page keeps it in this tab's
// sessionStorage (its origin is this server's port alone), takes it out of
// the address bar, and sends it only to this server: in a header, or as a
// WebSocket subprotocol. Never in a cookie, which the browser would send to
// every server on 127.0.0.1, whatever its port.
const TOKEN_KEY = 'clonet-token';

function takeToken() {
  const given = new URLSearchParams(location.hash.slice(1)).get('token');
  // Only what clonet makes (128 bits in hex) fits in a subprotocol's name.
  if (given && /^[0-9a-f]{32}$/.test(given)) {
    sessionStorage.setItem(TOKEN_KEY, given);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

const token = takeToken();

// A WebSocket to `path` on this server, carrying the token.
function openSocket(path) {
  return new WebSocket(`ws://${location.host}${path}`, ['clonet', `clonet-token.${token}`]);
}

// ---- the connection: requests by id, events pushed by the lab ----------

let ws = null;
let nextId = 1;
const pending = new Map();

function connect() {
  if (!token) {
    setStatus('no access token: open the URL clonet printed (it ends in #token=…)');
    return;
  }
  ws = openSocket('/ws');
  ws.onopen = async () => {
    setStatus('live');
    try {
      await request({ watch: true });
      await refresh();
    } catch (e) {
      toast(e.message);
    }
  };
  ws.onmessage = (m) => {
    const v = JSON.parse(m.data);
    if ('event' in v) {
      onEvent(v);
      return;
    }
    const p = pending.get(v.id);
    if (!p) return;
    pending.delete(v.id);
    if (v.error) p.reject(new Error(v.error));
    else p.resolve(v.ok);
  };
  ws.onclose = () => {
    setStatus('disconnected: the lab may have ended');
    for (const p of pending.values()) p.reject(new Error('disconnected'));
    pending.clear();
    setTimeout(connect, 2000);
  };
}

function request(body) {
  const id = nextId++;
  ws.send(JSON.stringify({ id, ...body }));
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

const command = (c) => request({ command: c });

// Runs a command and reports a refusal instead of throwing.
async function act(c) {
  try {
    return await command(c);
  } catch (e) {
    toast(e.message);
    return null;
  }
}

// ---- state -------------------------------------------------------------

let topo = null;
const pos = new Map(); // vertex id -> {x, y, vx, vy, pinned}
let selected = null; // {type: 'node' | 'lan' | 'link' | 'port', name}
let linkMode = false;
let linkFrom = null;
const rates = new Map(); // edge key -> recent bits/s
let lastCounters = null;
let renders = 0;

function setStatus(s) {
  $('status').textContent = s;
  document.body.dataset.status = s.split(':')[0];
}

function toast(msg) {
  const t = $('toast');
  t.textContent = msg;
  t.classList.add('show');
  clearTimeout(t.timer);
  t.timer = setTimeout(() => t.classList.remove('show'), 4000);
}

async function refresh() {
  const t = await command({ op: 'topology' });
  topo = t;
  $('lab-name').textContent = `clonet: ${t.lab}`;
  document.title = `clonet: ${t.lab}`;
  // What the lab says about itself (lab_info, Kathará's LAB_* lines),
  // as text: it comes from lab files that may be anyone's.
  const about = t.about || {};
  const said = ['description', 'version', 'author', 'email', 'web'].filter((k) => about[k]).map((k) => about[k]);
  $('lab-about').textContent = said.join(' · ');
  $('lab-about').title = Object.entries(about).map(([k, v]) => `${k}: ${v}`).join('\n');
  render();
}

let refreshQueued = false;
function onEvent(e) {
  if (e.event === 'counters') {
    onCounters(e.ports);
    return;
  }
  if (e.event === 'node_dead') toast(`node ${e.node} died${e.why ? ': ' + e.why : ''}`);
  // Any change: fetch the topology again (once for a burst of events).
  if (!refreshQueued) {
    refreshQueued = true;
    setTimeout(() => {
      refreshQueued = false;
      refresh().catch((err) => toast(err.message));
    }, 50);
  }
}

// ---- the graph: vertices (nodes, LANs) and edges (links, LAN ports) ----

function vertexId(kind, name) {
  return `${kind}:${name}`;
}

function graph() {
  const vertices = [];
  const edges = [];
  if (!topo) return { vertices, edges };
  for (const name of topo.order) {
    const n = topo.nodes[name];
    const state = n.died ? 'dead' : n.running ? 'running' : 'stopped';
    vertices.push({ id: vertexId('node', name), type: 'node', name, kind: n.kind, state, model: n });
  }
  for (const name of Object.keys(topo.lans)) {
    vertices.push({ id: vertexId('lan', name), type: 'lan', name });
  }
  for (const l of Object.values(topo.links)) {
    edges.push({
      key: l.name, type: 'link', name: l.name, up: l.up, impair: l.impair,
      a: vertexId('node', l.a.node), b: vertexId('node', l.b.node),
    });
  }
  for (const u of Object.values(topo.uplinks || {})) {
    edges.push({
      key: u.name, type: 'link', name: u.name, up: u.up, impair: u.impair,
      a: vertexId('lan', u.a), b: vertexId('lan', u.b),
    });
  }
  for (const lan of Object.values(topo.lans)) {
    for (const m of lan.members) {
      const port = `${m.node}:${m.iface}`;
      const iface = topo.nodes[m.node]?.ifaces.find((i) => i.name === m.iface);
      edges.push({
        key: port, type: 'port', name: port, lan: lan.name, up: true, impair: iface?.impair,
        a: vertexId('node', m.node), b: vertexId('lan', lan.name),
      });
    }
  }
  return { vertices, edges };
}

// "10 ms ±2 ms, 1% loss, 10 Mbit/s" from one direction's parameters.
function describeDirection(p) {
  if (!p) return '';
  const ms = (d) => (d ? d.secs * 1000 + d.nanos / 1e6 : 0);
  const parts = [];
  if (ms(p.delay)) parts.push(`${+ms(p.delay).toFixed(2)} ms` + (ms(p.jitter) ? ` ±${+ms(p.jitter).toFixed(2)}` : ''));
  const loss = p.loss && (p.loss.random?.p ?? (p.loss.gilbert ? 'GE' : 0));
  if (loss) parts.push(typeof loss === 'number' ? `${+(loss * 100).toFixed(2)}% loss` : 'Gilbert loss');
  if (p.duplicate) parts.push(`${+(p.duplicate * 100).toFixed(2)}% dup`);
  if (p.corrupt) parts.push(`${+(p.corrupt * 100).toFixed(2)}% corrupt`);
  if (p.rate) parts.push(rateText(p.rate));
  return parts.join(', ');
}

function impairLabel(imp) {
  if (!imp) return '';
  const ab = describeDirection(imp.a_to_b);
  const ba = describeDirection(imp.b_to_a);
  if (ab === ba) return ab;
  return [ab && `→ ${ab}`, ba && `← ${ba}`].filter(Boolean).join(' | ');
}

function rateText(bits) {
  if (bits >= 1e9) return `${+(bits / 1e9).toFixed(2)} Gbit/s`;
  if (bits >= 1e6) return `${+(bits / 1e6).toFixed(2)} Mbit/s`;
  if (bits >= 1e3) return `${+(bits / 1e3).toFixed(1)} kbit/s`;
  return `${Math.round(bits)} bit/s`;
}

// ---- drawing -----------------------------------------------------------

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function placeNew(vertices) {
  const svg = $('net').getBoundingClientRect();
  const cx = svg.width / 2 || 400;
  const cy = svg.height / 2 || 300;
  vertices.forEach((v, i) => {
    if (pos.has(v.id)) return;
    const angle = (2 * Math.PI * i) / Math.max(vertices.length, 1);
    pos.set(v.id, { x: cx + 150 * Math.cos(angle) + Math.random(), y: cy + 150 * Math.sin(angle) + Math.random(), vx: 0, vy: 0, pinned: false });
  });
  for (const id of [...pos.keys()]) if (!vertices.some((v) => v.id === id)) pos.delete(id);
}

function shapeFor(v, g) {
  if (v.type === 'lan') {
    el('rect', { class: 'shape', x: -26, y: -12, width: 52, height: 24, rx: 4 }, g);
    return;
  }
  if (v.kind === 'ns') el('circle', { class: 'shape', r: 20 }, g);
  else if (v.kind === 'uml') el('rect', { class: 'shape', x: -19, y: -19, width: 38, height: 38, rx: 8 }, g);
  else if (v.kind === 'nat') el('polygon', { class: 'shape', points: '0,-22 22,0 0,22 -22,0' }, g);
  else if (v.kind === 'host') el('polygon', { class: 'shape', points: '0,-22 20,-6 20,18 -20,18 -20,-6' }, g);
  else if (v.kind === 'plug') el('polygon', { class: 'shape', points: '-22,-16 22,-16 13,18 -13,18' }, g);
  else if (v.kind === 'vxlan') el('ellipse', { class: 'shape', rx: 24, ry: 14 }, g);
  else el('polygon', { class: 'shape', points: '-20,0 -10,-18 10,-18 20,0 10,18 -10,18' }, g);
  el('path', { class: 'cross', d: 'M-12,-12 L12,12 M12,-12 L-12,12' }, g);
}

function render() {
  const { vertices, edges } = graph();
  placeNew(vertices);
  const vg = $('vertices');
  const eg = $('edges');
  vg.replaceChildren();
  eg.replaceChildren();
  for (const e of edges) {
    const g = el('g', { class: 'edge', 'data-up': String(e.up) }, eg);
    if (e.type === 'link') g.dataset.link = e.name;
    else {
      g.dataset.port = e.name;
      g.dataset.lan = e.lan;
    }
    if (!e.up) g.classList.add('down');
    const label = impairLabel(e.impair);
    if (label) g.classList.add('impaired');
    if (selected && selected.type === e.type && selected.name === e.name) g.classList.add('selected');
    el('line', { class: 'wire' }, g);
    el('line', { class: 'hit' }, g);
    const t = el('text', { class: 'label' }, g);
    t.textContent = label + (e.up ? '' : (label ? ' · ' : '') + 'down');
    el('polyline', { class: 'spark' }, g);
    g.addEventListener('click', (ev) => {
      ev.stopPropagation();
      select({ type: e.type, name: e.name, edge: e });
    });
    e.g = g;
  }
  for (const v of vertices) {
    const g = el('g', { class: `vertex ${v.type}` }, vg);
    if (v.type === 'node') {
      g.dataset.node = v.name;
      g.dataset.kind = v.kind;
      g.dataset.state = v.state;
    } else {
      g.dataset.lan = v.name;
    }
    if (selected && selected.type === v.type && selected.name === v.name) g.classList.add('selected');
    if (linkFrom && linkFrom.id === v.id) g.classList.add('pending');
    shapeFor(v, g);
    const t = el('text', { y: v.type === 'lan' ? 4 : 34 }, g);
    t.textContent = v.name;
    g.addEventListener('pointerdown', (ev) => startDrag(ev, v));
    g.addEventListener('click', (ev) => {
      ev.stopPropagation();
      clickVertex(v);
    });
    v.g = g;
  }
  current = { vertices, edges };
  renders += 1;
  document.body.dataset.renders = String(renders);
  draw();
  if (selected) showPanel();
}

let current = { vertices: [], edges: [] };

function draw() {
  for (const v of current.vertices) {
    const p = pos.get(v.id);
    v.g.setAttribute('transform', `translate(${p.x.toFixed(1)},${p.y.toFixed(1)})`);
  }
  for (const e of current.edges) {
    const a = pos.get(e.a);
    const b = pos.get(e.b);
    if (!a || !b) continue;
    for (const line of e.g.querySelectorAll('line')) {
      line.setAttribute('x1', a.x);
      line.setAttribute('y1', a.y);
      line.setAttribute('x2', b.x);
      line.setAttribute('y2', b.y);
    }
    const mx = (a.x + b.x) / 2;
    const my = (a.y + b.y) / 2;
    const label = e.g.querySelector('text');
    label.setAttribute('x', mx);
    label.setAttribute('y', my - 6);
    const history = rates.get(e.key) || [];
    const peak = Math.max(1, ...history);
    const points = history.map((r, i) => `${(mx - 30 + i * 2).toFixed(1)},${(my + 18 - (r / peak) * 14).toFixed(1)}`);
    e.g.querySelector('.spark').setAttribute('points', points.join(' '));
  }
}

// ---- force-directed layout ---------------------------------------------

function step() {
  const vs = current.vertices;
  const rect = $('net').getBoundingClientRect();
  const cx = rect.width / 2;
  const cy = rect.height / 2;
  let moving = 0;
  for (let i = 0; i < vs.length; i++) {
    const p = pos.get(vs[i].id);
    // A weak pull to the centre, and inverse-square repulsion.
    let fx = (cx - p.x) * 0.01;
    let fy = (cy - p.y) * 0.01;
    for (let j = 0; j < vs.length; j++) {
      if (i === j) continue;
      const q = pos.get(vs[j].id);
      const dx = p.x - q.x;
      const dy = p.y - q.y;
      const d = Math.max(Math.hypot(dx, dy), 10);
      fx += (dx / d) * (10000 / (d * d));
      fy += (dy / d) * (10000 / (d * d));
    }
    p.fx = fx;
    p.fy = fy;
  }
  for (const e of current.edges) {
    const a = pos.get(e.a);
    const b = pos.get(e.b);
    if (!a || !b) continue;
    const dx = b.x - a.x;
    const dy = b.y - a.y;
    const d = Math.max(Math.hypot(dx, dy), 1);
    // Springs of rest length 140 along edges.
    const f = (d - 140) * 0.05;
    a.fx += (dx / d) * f;
    a.fy += (dy / d) * f;
    b.fx -= (dx / d) * f;
    b.fy -= (dy / d) * f;
  }
  for (const v of vs) {
    const p = pos.get(v.id);
    if (p.pinned) continue;
    p.vx = (p.vx + p.fx) * 0.8;
    p.vy = (p.vy + p.fy) * 0.8;
    p.x = Math.min(Math.max(p.x + p.vx, 30), rect.width - 30);
    p.y = Math.min(Math.max(p.y + p.vy, 30), rect.height - 40);
    moving += Math.abs(p.vx) + Math.abs(p.vy);
  }
  draw();
  requestAnimationFrame(step);
  return moving;
}

let dragging = null;
function startDrag(ev, v) {
  const p = pos.get(v.id);
  dragging = { p, dx: ev.clientX - p.x, dy: ev.clientY - p.y, moved: false };
  p.pinned = true;
  ev.target.setPointerCapture?.(ev.pointerId);
}
window.addEventListener('pointermove', (ev) => {
  if (!dragging) return;
  dragging.p.x = ev.clientX - dragging.dx;
  dragging.p.y = ev.clientY - dragging.dy;
  dragging.moved = true;
});
window.addEventListener('pointerup', () => {
  dragging = null; // a dragged vertex stays where it was put
});

// ---- selection, actions, the side panel --------------------------------

function clickVertex(v) {
  if (linkMode) {
    if (!linkFrom) {
      linkFrom = v;
      render();
      return;
    }
    const from = linkFrom;
    linkFrom = null;
    setLinkMode(false);
    if (from.id !== v.id) linkVertices(from, v);
    else render();
    return;
  }
  select({ type: v.type, name: v.name, vertex: v });
}

async function linkVertices(a, b) {
  if (a.type === 'node' && b.type === 'node') {
    await act({ op: 'add_link', a: a.name, b: b.name, ip_a: null, ip_b: null, options: {} });
  } else if (a.type === 'lan' && b.type === 'lan') {
    await act({ op: 'link_lans', a: a.name, b: b.name, vlan: null });
  } else {
    const [node, lan] = a.type === 'node' ? [a, b] : [b, a];
    await act({ op: 'join_lan', node: node.name, lan: lan.name, ip: null, options: {} });
  }
}

function setLinkMode(on) {
  linkMode = on;
  linkFrom = null;
  $('link-mode').classList.toggle('active', on);
  document.body.dataset.linkMode = String(on);
}

function select(s) {
  selected = s;
  render();
}

function button(id, text, onclick, parent) {
  const b = document.createElement('button');
  b.id = id;
  b.textContent = text;
  b.addEventListener('click', onclick);
  parent.appendChild(b);
  return b;
}

function field(label, id, value, parent) {
  const l = document.createElement('label');
  l.textContent = `${label} `;
  const i = document.createElement('input');
  i.id = id;
  i.value = value;
  l.appendChild(i);
  parent.appendChild(l);
  return i;
}

function showPanel() {
  const panel = $('panel');
  panel.replaceChildren();
  const h = document.createElement('h3');
  panel.appendChild(h);
  const row = document.createElement('div');
  row.className = 'row';
  if (!selected || !topo) return;
  const s = selected;
  if (s.type === 'node') {
    const n = topo.nodes[s.name];
    if (!n) return;
    h.textContent = `${s.name} (${n.kind}, ${n.died ? 'dead' : n.running ? 'running' : 'stopped'})`;
    const list = document.createElement('ul');
    for (const i of n.ifaces) {
      const li = document.createElement('li');
      li.textContent = `${i.name} ${i.addrs.join(' ')} → ${i.attachment.link || i.attachment.lan}`;
      list.appendChild(li);
    }
    panel.appendChild(list);
    panel.appendChild(row);
    button('console-open', 'console', () => openConsole(s.name), row);
    if (n.running) button('stop-node', 'stop', () => act({ op: 'stop_node', node: s.name }), row);
    else button('start-node', 'start', () => act({ op: 'start_node', node: s.name }), row);
    button('delete', 'delete', async () => {
      selected = null;
      await act({ op: 'delete_node', node: s.name });
    }, row);
    return;
  }
  if (s.type === 'lan') {
    const lan = topo.lans[s.name];
    if (!lan) return;
    h.textContent = `LAN ${s.name} (${lan.members.length} ports)`;
    panel.appendChild(row);
    button('capture', 'capture 10 s', () => capture(s.name), row);
    button('delete', 'delete', async () => {
      selected = null;
      await act({ op: 'delete_lan', name: s.name });
    }, row);
    return;
  }
  const e = current.edges.find((x) => x.type === s.type && x.name === s.name);
  if (!e) return;
  h.textContent = s.type === 'link' ? `link ${s.name} (${e.up ? 'up' : 'down'})` : `port ${s.name} on LAN ${e.lan}`;
  panel.appendChild(row);
  if (s.type === 'link') {
    if (e.up) button('down', 'set down', () => act({ op: 'set_link_up', link: s.name, up: false }), row);
    else button('up', 'set up', () => act({ op: 'set_link_up', link: s.name, up: true }), row);
  }
  button('capture', 'capture 10 s', () => capture(s.name), row);
  button('delete', 'delete', async () => {
    selected = null;
    if (s.type === 'link') await act({ op: 'delete_link', link: s.name });
    else await act({ op: 'unlink', a: s.name.split(':')[0], b: e.lan });
  }, row);
  impairForm(s.name, e.impair, panel);
  const r = rates.get(e.key);
  if (r && r.length) {
    const p = document.createElement('p');
    p.textContent = `now ${rateText(r[r.length - 1])}`;
    panel.appendChild(p);
  }
}

// Impairments, the same both ways (scripts can set each direction).
function impairForm(target, imp, panel) {
  const p = imp?.a_to_b || {};
  const ms = (d) => (d ? d.secs * 1000 + d.nanos / 1e6 : 0);
  const h = document.createElement('h4');
  h.textContent = 'impairments (both directions)';
  panel.appendChild(h);
  const delay = field('delay ms', 'impair-delay', ms(p.delay), panel);
  const jitter = field('jitter ms', 'impair-jitter', ms(p.jitter), panel);
  const loss = field('loss %', 'impair-loss', p.loss?.random ? p.loss.random.p * 100 : 0, panel);
  const rate = field('rate Mbit/s (0: none)', 'impair-rate', p.rate ? p.rate / 1e6 : 0, panel);
  const row = document.createElement('div');
  row.className = 'row';
  panel.appendChild(row);
  button('impair-apply', 'apply', () => {
    const dur = (msText) => {
      const v = Number(msText) || 0;
      return { secs: Math.floor(v / 1000), nanos: Math.round((v % 1000) * 1e6) };
    };
    const lossP = (Number(loss.value) || 0) / 100;
    const direction = {
      delay: dur(delay.value),
      jitter: dur(jitter.value),
      loss: lossP ? { random: { p: lossP, correlation: 0 } } : 'none',
      rate: Number(rate.value) ? Math.round(Number(rate.value) * 1e6) : null,
    };
    act({ op: 'set_impairment', link: target, impair: { a_to_b: direction, b_to_a: direction } });
  }, row);
}

// A 10-second pcap of `target`, fetched with the token in a header (a link
// could carry it only in its URL), then saved from memory.
async function capture(target) {
  toast(`capturing ${target} for 10 s`);
  try {
    const r = await fetch(`/capture?target=${encodeURIComponent(target)}&seconds=10`, {
      headers: { 'X-Clonet-Token': token },
    });
    if (!r.ok) throw new Error((await r.text()).trim());
    const pcap = await r.blob();
    const url = URL.createObjectURL(pcap);
    const a = document.createElement('a');
    a.href = url;
    a.download = `${target}.pcap`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    document.body.dataset.captured = `${target}:${pcap.size}`;
    toast(`saved ${target}.pcap`);
  } catch (e) {
    toast(`capture of ${target}: ${e.message}`);
  }
}

// ---- counters: throughput sparklines -----------------------------------

function onCounters(ports) {
  const now = performance.now();
  const bytes = new Map();
  for (const p of ports) {
    // A link's traffic is what its ends sent; a LAN port's, both ways.
    const isPort = topo && topo.lans && Object.values(topo.lans).some((l) => l.members.some((m) => m.node === p.node && m.iface === p.iface));
    const key = isPort ? `${p.node}:${p.iface}` : p.segment;
    const add = isPort ? p.counters.rx_bytes + p.counters.tx_bytes : p.counters.rx_bytes;
    bytes.set(key, (bytes.get(key) || 0) + add);
  }
  if (lastCounters) {
    const dt = (now - lastCounters.time) / 1000;
    for (const [key, b] of bytes) {
      const before = lastCounters.bytes.get(key);
      if (before === undefined || dt <= 0) continue;
      const history = rates.get(key) || [];
      history.push(Math.max(0, ((b - before) * 8) / dt));
      if (history.length > 30) history.shift();
      rates.set(key, history);
    }
  }
  lastCounters = { time: now, bytes };
}

// ---- a node's console ----------------------------------------------------

let consoleWs = null;
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r/g;

function openConsole(node) {
  if (consoleWs) consoleWs.close();
  $('console').hidden = false;
  $('console-title').textContent = `console of ${node}`;
  const out = $('console-out');
  out.textContent = '';
  consoleWs = openSocket(`/console?node=${encodeURIComponent(node)}`);
  consoleWs.onmessage = (m) => {
    out.textContent += m.data.replace(ANSI, '');
    out.scrollTop = out.scrollHeight;
  };
  consoleWs.onclose = () => {
    out.textContent += '\n[console closed]\n';
  };
  $('console-in').focus();
}

$('console-in').addEventListener('keydown', (ev) => {
  if (ev.key !== 'Enter' || !consoleWs) return;
  consoleWs.send(`${ev.target.value}\n`);
  ev.target.value = '';
});
$('console-close').addEventListener('click', () => {
  if (consoleWs) consoleWs.close();
  consoleWs = null;
  $('console').hidden = true;
});

// ---- the toolbar ---------------------------------------------------------

function freeName(prefix) {
  for (let i = 1; ; i++) {
    const n = `${prefix}${i}`;
    if (!topo || (!topo.nodes[n] && !topo.lans[n] && !topo.links[n])) return n;
  }
}

$('add-node').addEventListener('click', () => {
  const kind = $('new-kind').value;
  act({ op: 'add_node', name: freeName(kind === 'ns' ? 'n' : kind), kind });
});
$('add-lan').addEventListener('click', () => act({ op: 'add_lan', name: freeName('lan') }));
$('link-mode').addEventListener('click', () => {
  setLinkMode(!linkMode);
  render();
});
$('net').addEventListener('click', () => {
  if (linkMode) return;
  selected = null;
  $('panel').innerHTML = '<p class="hint">Click a node, LAN or link. Drag to move.</p>';
  render();
});
window.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape') {
    setLinkMode(false);
    render();
  }
});

connect();
requestAnimationFrame(step);
