/* aistack console: draws each page from the admin API. No framework, no build step.
 * Every change sends the session's CSRF token; every failure is shown, never swallowed. */
(() => {
  "use strict";

  const meta = (n) => (document.querySelector(`meta[name="aistack-${n}"]`) || {}).content || "";
  const CSRF = meta("csrf");
  const ROLE = meta("role");
  const PAGE = meta("page");
  const ADMIN = ROLE === "admin";
  const READ_ONLY_NOTE = "Read-only access: ask an admin to change this.";

  // -- DOM helpers ---------------------------------------------------------------------

  function add(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      el.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return el;
  }

  // Replace an element's children; null, undefined and false are left out.
  function fill(el, ...kids) {
    el.replaceChildren();
    return add(el, kids);
  }

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k === "value") el.value = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    return add(el, kids);
  }

  const SVGNS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) el.setAttribute(k, v);
    }
    return add(el, kids);
  }

  let uid = 0;
  const nextId = (p) => `${p}-${++uid}`;

  function field(label, control, hint) {
    const id = control.id || nextId("f");
    control.id = id;
    return h("div", { class: "field" }, h("label", { for: id }, label), control,
      hint ? h("span", { class: "muted small" }, hint) : null);
  }

  function select(options, value, attrs) {
    const el = h("select", attrs || {});
    for (const o of options) {
      const [v, t] = Array.isArray(o) ? o : [o, o];
      el.append(h("option", { value: v, selected: v === value }, t));
    }
    return el;
  }

  function table(headers, rows, opts = {}) {
    const head = h("tr", {}, headers.map((c) =>
      h("th", { scope: "col", class: c.num ? "num" : c.narrow ? "hide-narrow" : null }, c.label || c)));
    const body = h("tbody", {}, rows);
    return h("div", { class: "table-wrap" },
      h("table", {}, opts.caption ? h("caption", { class: "muted small" }, opts.caption) : null,
        h("thead", {}, head), body));
  }

  function td(v, cls) { return h("td", { class: cls || null }, v); }
  function num(v) { return td(v, "num"); }

  function badge(state, text) {
    return h("span", { class: `badge state-${String(state).replace(/[^a-z-]/gi, "")}` }, text || state);
  }

  // A ledger row whose answer ended before its last chunk (client gone, backend broke,
  // server cut): its tokens are what was streamed until then, estimated.
  function partialBadge() {
    return h("span", { class: "badge state-partial", title: "ended early: booked with the tokens streamed until then (estimated)" }, "partial");
  }

  function empty(title, ...body) {
    return h("div", { class: "empty" }, h("h3", {}, title), body.map((b) => h("p", {}, b)));
  }

  // -- formatting ----------------------------------------------------------------------

  function fmtBytes(n) {
    if (!n) return "0 B";
    const u = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return `${n.toFixed(n >= 100 || i === 0 ? 0 : 1)} ${u[i]}`;
  }
  const fmtNum = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const fmtMs = (n) => (n === null || n === undefined ? "–"
    : n >= 10000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n)} ms`);
  function fmtMoney(n) {
    if (n === null || n === undefined) return "unknown";
    if (n === 0) return "$0";
    return n < 0.01 ? `$${n.toFixed(5)}` : `$${n.toFixed(2)}`;
  }
  function fmtTime(t) {
    if (t === null || t === undefined || t === "") return "–";
    const d = typeof t === "number" ? new Date(t) : new Date(t);
    if (isNaN(d)) return String(t);
    return d.toLocaleString("en-GB", { dateStyle: "short", timeStyle: "medium" });
  }
  function ago(t) {
    if (!t) return "never";
    const ms = Date.now() - (typeof t === "number" ? t : new Date(t).getTime());
    if (ms < 60e3) return "just now";
    if (ms < 3600e3) return `${Math.round(ms / 60e3)} min ago`;
    if (ms < 86400e3) return `${Math.round(ms / 3600e3)} h ago`;
    return `${Math.round(ms / 86400e3)} d ago`;
  }

  // -- the admin API ---------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  function messageOf(data, text, status) {
    if (data && data.error) return typeof data.error === "string" ? data.error : data.error.message;
    return (text && text.length < 300 ? text : "") || `the gateway answered HTTP ${status}`;
  }

  async function request(path, { method = "GET", body, headers = {} } = {}) {
    const opts = { method, credentials: "same-origin", headers: { ...headers } };
    if (method !== "GET" && method !== "HEAD") opts.headers["X-Aistack-CSRF"] = CSRF;
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(`cannot reach the gateway (${e.message})`, 0);
    }
    if (r.status === 401) {
      location.href = `/ui/login?next=${encodeURIComponent(location.pathname)}`;
      throw new ApiError("signed out: sign in again", 401);
    }
    return r;
  }

  async function failure(r) {
    const text = await r.text();
    let data = null;
    try { data = JSON.parse(text); } catch (e) { data = null; }
    return new ApiError(messageOf(data, text, r.status), r.status);
  }

  async function api(path, opts) {
    const r = await request(path, opts);
    if (!r.ok) throw await failure(r);
    const text = await r.text();
    return text ? JSON.parse(text) : null;
  }

  // Lines of an NDJSON response as they arrive.
  async function* ndjson(r) {
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line) yield JSON.parse(line);
      }
    }
    if (buf.trim()) yield JSON.parse(buf);
  }

  // -- errors: shown where they happened, with what to do ---------------------------------

  const errorsBox = () => document.getElementById("errors");

  function showError(err, where) {
    const box = where || errorsBox();
    const msg = err instanceof Error ? err.message : String(err);
    const el = h("div", { class: "error" }, h("strong", {}, "Error: "), msg, " ",
      h("button", { type: "button", class: "secondary", onclick: () => el.remove() }, "Dismiss"));
    box.append(el);
    if (!(err instanceof ApiError)) console.error(err);
    return el;
  }

  function clearErrors(where) { (where || errorsBox()).replaceChildren(); }

  async function guarded(fn, where) {
    try {
      return await fn();
    } catch (e) {
      showError(e, where);
      return undefined;
    }
  }

  async function copy(text, button) {
    try {
      if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text);
      else {
        const ta = h("textarea", { class: "offscreen" }, text);
        document.body.append(ta);
        ta.select();
        document.execCommand("copy");
        ta.remove();
      }
      const was = button.textContent;
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = was; }, 1500);
    } catch (e) {
      showError(new Error(`copying failed (${e.message}): select the text and copy it`));
    }
  }

  function copyBlock(title, text, id) {
    const pre = h("pre", { class: "snippet", id, tabindex: "0", "aria-label": title }, text);
    const btn = h("button", { type: "button", class: "secondary", "aria-label": `Copy ${title}` }, "Copy");
    btn.addEventListener("click", () => copy(pre.textContent, btn));
    return h("div", { class: "card" }, h("div", { class: "row" }, h("h3", { class: "grow" }, title), btn), pre);
  }

  // -- charts: inline SVG ------------------------------------------------------------------

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function legend(series) {
    return h("ul", { class: "legend" }, series.map((sr, i) =>
      h("li", {}, h("span", { class: `sw sw-${i % 8}`, "aria-hidden": "true" }), sr.name)));
  }

  function dataTable(labels, series, fmt, caption) {
    return h("details", {}, h("summary", {}, "Show as a table"),
      table([{ label: "" }, ...series.map((sr) => ({ label: sr.name, num: true }))],
        labels.map((l, i) => h("tr", {}, td(l), series.map((sr) => num(fmt(sr.values[i] || 0))))),
        { caption }));
  }

  // Stacked bars, one per label.
  function barChart({ labels, series, fmt = fmtNum, title }) {
    const W = 720, H = 240, L = 56, B = 28, T = 10, R = 8;
    const totals = labels.map((_, i) => series.reduce((a, sr) => a + (sr.values[i] || 0), 0));
    const max = niceMax(Math.max(0, ...totals));
    const bw = (W - L - R) / Math.max(1, labels.length);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const svgEl = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": `${title}: ${labels.length} days, highest ${fmt(Math.max(0, ...totals))}` });
    for (let g = 0; g <= 4; g++) {
      const v = (max * g) / 4;
      svgEl.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }),
        s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    const every = Math.ceil(labels.length / 10);
    labels.forEach((lab, i) => {
      let acc = 0;
      series.forEach((sr, k) => {
        const v = sr.values[i] || 0;
        if (v > 0) {
          const rect = s("rect", { x: L + i * bw + bw * 0.15, width: Math.max(1, bw * 0.7),
            y: y(acc + v), height: Math.max(0.5, y(acc) - y(acc + v)), class: `sw-${k % 8}` },
          s("title", {}, `${lab} · ${sr.name}: ${fmt(v)}`));
          svgEl.append(rect);
        }
        acc += v;
      });
      if (i % every === 0) {
        svgEl.append(s("text", { x: L + i * bw + bw / 2, y: H - 8, "text-anchor": "middle" },
          lab.length === 10 ? lab.slice(5) : lab));
      }
    });
    return h("figure", { class: "card" }, h("figcaption", {}, h("strong", {}, title)),
      legend(series), svgEl, dataTable(labels, series, fmt, title));
  }

  function lineChart({ labels, series, fmt = fmtNum, title }) {
    const W = 720, H = 200, L = 56, B = 28, T = 10, R = 8;
    const all = series.flatMap((sr) => sr.values.filter((v) => v !== null && v !== undefined));
    const max = niceMax(Math.max(0, ...all));
    const step = (W - L - R) / Math.max(1, labels.length - 1);
    const x = (i) => (labels.length === 1 ? (L + W - R) / 2 : L + i * step);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const svgEl = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title });
    for (let g = 0; g <= 4; g++) {
      const v = (max * g) / 4;
      svgEl.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }),
        s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    series.forEach((sr, k) => {
      let d = "";
      sr.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        d += `${d ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        svgEl.append(s("circle", { cx: x(i), cy: y(v), r: 3, class: `sw-${k % 8}` },
          s("title", {}, `${labels[i]} · ${sr.name}: ${fmt(v)}`)));
      });
      svgEl.append(s("path", { d, class: `line line-${k % 4}` }));
    });
    const every = Math.ceil(labels.length / 10);
    labels.forEach((lab, i) => {
      if (i % every === 0) {
        svgEl.append(s("text", { x: x(i), y: H - 8, "text-anchor": "middle" },
          lab.length === 10 ? lab.slice(5) : lab));
      }
    });
    return h("figure", { class: "card" }, h("figcaption", {}, h("strong", {}, title)),
      legend(series), svgEl, dataTable(labels, series, fmt, title));
  }

  function sparkline(values, label) {
    const W = 120, H = 28;
    const max = Math.max(1, ...values);
    const step = W / Math.max(1, values.length - 1);
    const d = values.map((v, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)},${(H - 2 - (H - 4) * v / max).toFixed(1)}`).join("");
    return s("svg", { viewBox: `0 0 ${W} ${H}`, class: "spark", role: "img", "aria-label": label },
      s("path", { d, class: "line line-0" }));
  }

  // -- pages ---------------------------------------------------------------------------

  const pages = {};
  let timer = null;
  function every(ms, fn) {
    clearInterval(timer);
    timer = setInterval(() => { if (!document.hidden) fn(); }, ms);
  }

  // Overview: live (polls every 5 s).
  const rateHistory = {};
  pages.overview = async (root) => {
    const live = h("p", { class: "muted small" }, "Updates every 5 seconds.");
    const body = h("div");
    fill(root, live, body);
    const draw = async () => {
      let o;
      try {
        o = await api("/admin/api/overview");
      } catch (e) {
        fill(live, h("span", { class: "bad-text" }, `Last update failed: ${e.message}. Retrying…`));
        return;
      }
      live.textContent = `Updated ${new Date().toLocaleTimeString("en-GB")} · updates every 5 seconds.`;
      const t = o.today || {};
      const perMin = o.requests_5m / (o.window_s / 60);
      const stats = h("div", { class: "stats" },
        stat("Gateway", badge(o.status, o.status), o.ready ? "ready" : `not ready: ${o.reason}`),
        stat("Requests / min", perMin.toFixed(1), "last 5 minutes", "stat-rate"),
        stat("Errors", fmtNum(o.errors_5m), "last 5 minutes"),
        stat("Requests today", fmtNum(t.requests || 0), `${fmtNum(t.errors || 0)} errors (UTC day)`),
        stat("Spend today", fmtMoney(t.cost || 0), t.cost_unknown ? `${t.cost_unknown} unpriced` : "known costs"),
        stat("Tokens today", fmtNum((t.tokens_in || 0) + (t.tokens_out || 0)), "in + out"));
      const parts = [stats];
      if (!o.ledger) parts.push(h("p", { class: "note" }, "The usage ledger is off (ledger.enabled: false): no request counts or spend."));
      if (!o.backends.length) {
        parts.push(empty("No backends", "Add one to aistack.yaml under backends: (an Ollama box, an OpenAI-compatible server, or the embedded local model) and restart.",
          "See docs/configuration.md."));
      } else {
        parts.push(h("h2", {}, "Backends"));
        parts.push(h("div", { class: "cards", id: "backends" }, o.backends.map(backendCard)));
      }
      const waiting = (o.queues || []).filter((q) => q.waiting);
      if (waiting.length) {
        parts.push(h("p", { class: "note", id: "queues" }, "Waiting for a deployment: ",
          waiting.map((q) => `${q.model}: ${q.waiting} (longest ${q.longest_wait_s.toFixed(1)} s)`).join(" · ")));
      }
      parts.push(h("h2", {}, "Deployments"));
      if (!o.deployments.length) {
        parts.push(empty("No models discovered yet", "Each backend is asked what it serves; declare models under the backend's models: or pull one on the Models page."));
      } else {
        parts.push(table(
          ["Model", "Backend", { label: "Upstream name", narrow: true }, "State", { label: "In flight", num: true },
            { label: "TTFT", num: true }, { label: "Requests", num: true }, { label: "Errors", num: true }, { label: "Last error", narrow: true }],
          o.deployments.map((d) => h("tr", {}, td(d.model), td(d.backend), td(d.upstream_model, "hide-narrow"),
            td(badge(d.state)), num(`${d.in_flight}${d.max_in_flight ? ` / ${d.max_in_flight}` : ""}`),
            num(fmtMs(d.ttft_ms)), num(fmtNum(d.requests)), num(fmtNum(d.errors)),
            td(d.last_error || "", "hide-narrow")))));
      }
      fill(body, ...parts);
    };
    await draw();
    every(5000, draw);
  };

  function stat(label, value, sub, id) {
    return h("div", { class: "stat", id: id || null }, h("div", { class: "label" }, label),
      h("div", { class: "value" }, value), sub ? h("div", { class: "muted small" }, sub) : null);
  }

  function backendCard(b) {
    const hist = (rateHistory[b.name] = rateHistory[b.name] || []);
    hist.push(b.requests_5m);
    if (hist.length > 60) hist.shift();
    const loaded = b.loaded.length
      ? h("ul", {}, b.loaded.map((m) => h("li", {}, h("span", { class: "mono" }, m.name), " ",
        h("span", { class: "muted small" }, `${fmtBytes(m.size)}${m.size_vram ? ` · VRAM ${fmtBytes(m.size_vram)}` : ""}${m.running ? ` · ${m.running} running` : ""}${m.expires_at ? ` · until ${fmtTime(m.expires_at * 1000)}` : ""}`))))
      : h("p", { class: "muted small" }, b.loaded_error ? `Loaded models unknown: ${b.loaded_error}` : "No model loaded.");
    return h("section", { class: "card backend", "data-backend": b.name, "aria-label": `Backend ${b.name}` },
      h("div", { class: "row" }, h("h3", { class: "grow" }, b.name, " ", h("span", { class: "muted small" }, b.kind)),
        badge(b.state, b.state)),
      h("dl", { class: "kv" },
        h("dt", {}, "Probe latency"), h("dd", {}, fmtMs(b.latency_ms)),
        h("dt", {}, "Requests"), h("dd", {}, `${fmtNum(b.requests_5m)} in 5 min · ${fmtNum(b.requests_today)} today`),
        h("dt", {}, "Errors"), h("dd", { class: b.errors_5m ? "bad-text" : null }, `${fmtNum(b.errors_5m)} in 5 min · ${fmtNum(b.errors_today)} today`),
        h("dt", {}, "Spend today"), h("dd", {}, fmtMoney(b.spend_today)),
        h("dt", {}, "VRAM in use"), h("dd", {}, b.vram_bytes ? fmtBytes(b.vram_bytes) : "–")),
      b.error ? h("p", { class: "bad-text small" }, `Last error: ${b.error}`) : null,
      h("h3", {}, "Loaded"), loaded,
      hist.length > 1 ? h("div", { class: "muted small" }, "Requests in 5 min, this session: ",
        sparkline(hist, `request history of ${b.name}`)) : null);
  }

  // Models: inventory, pull with progress, delete, sync.
  pages.models = async (root) => {
    const invBox = h("div", {}, h("p", { class: "muted" }, "Asking every backend…"));
    const pullBox = h("div");
    const syncBox = h("div");
    fill(root, 
      ADMIN ? null : h("p", { class: "note" }, READ_ONLY_NOTE),
      h("h2", {}, "Pull a model"), pullBox,
      h("h2", {}, "Inventory"), invBox,
      h("h2", {}, "Sync with the config"), syncBox);
    let inv;
    const load = async () => {
      try {
        inv = await api("/admin/api/models");
      } catch (e) {
        fill(invBox);
        showError(e, invBox);
        return;
      }
      drawInventory(invBox, inv, load);
      // The pull form stays as it is across reloads: its progress is on it.
      if (!pullBox.firstChild) drawPull(pullBox, inv, load);
    };
    await load();
    drawSync(syncBox, load);
  };

  function drawInventory(box, inv, reload) {
    const parts = [];
    const down = inv.backends.filter((b) => !b.reachable);
    for (const b of down) parts.push(h("p", { class: "error" }, `Backend ${b.name} did not answer: ${b.error}`));
    if (!inv.models.length) {
      parts.push(empty("No models anywhere yet", "Pull one above (Ollama backends), or declare models under a backend in aistack.yaml and run the sync below."));
      fill(box, ...parts);
      return;
    }
    const rows = [];
    for (const m of inv.models) {
      for (const inst of m.instances) {
        const b = inv.backends.find((x) => x.name === inst.backend) || {};
        const del = h("button", { type: "button", class: "danger", disabled: !ADMIN || !b.manages_models || !inst.present,
          title: !ADMIN ? READ_ONLY_NOTE : !b.manages_models ? "this backend does not manage models" : null,
          "aria-label": `Delete ${inst.name} from ${inst.backend}` }, "Delete");
        del.addEventListener("click", () => deleteModel(inst, del, reload));
        const verb = inst.loaded ? "unload" : "load";
        const mem = h("button", { type: "button", disabled: !ADMIN || !b.loads_models || !inst.present,
          title: !ADMIN ? READ_ONLY_NOTE : !b.loads_models ? "this backend does not load models on request" : null,
          "aria-label": `${inst.loaded ? "Unload" : "Load"} ${inst.name} ${inst.loaded ? "from" : "on"} ${inst.backend}` },
          inst.loaded ? "Unload" : "Load");
        mem.addEventListener("click", () => loadModel(verb, inst, mem, reload));
        rows.push(h("tr", {}, td(h("span", { class: "mono" }, m.name)), td(inst.backend),
          td(inst.present ? badge("ok", "present") : badge("extra", "missing")),
          num(inst.size ? fmtBytes(inst.size) : "–"), td(inst.family || "–", "hide-narrow"),
          td(inst.parameter_size || "–", "hide-narrow"), td(inst.quantization || "–", "hide-narrow"),
          td(inst.loaded ? `yes${inst.loaded.size_vram ? ` · VRAM ${fmtBytes(inst.loaded.size_vram)}` : ""}` : "no"),
          td(m.aliases.join(", ") || "–", "hide-narrow"), td(h("div", { class: "row" }, mem, del))));
      }
    }
    parts.push(table(["Model", "Backend", "State", { label: "Size", num: true }, { label: "Family", narrow: true },
      { label: "Params", narrow: true }, { label: "Quant", narrow: true }, "Loaded", { label: "Aliases", narrow: true }, "Actions"], rows));
    fill(box, ...parts);
  }

  // Load / Unload go through the gateway, which never unloads a model serving a request.
  async function loadModel(verb, inst, button, reload) {
    button.disabled = true;
    const was = button.textContent;
    button.textContent = verb === "load" ? "Loading…" : "Unloading…";
    try {
      const r = await request(`/admin/api/models/${verb}`, { method: "POST", body: { model: inst.name, backend: inst.backend } });
      if (!r.ok) throw await failure(r);
      await reload();
    } catch (e) {
      button.disabled = false;
      button.textContent = was;
      showError(e);
    }
  }

  async function deleteModel(inst, button, reload) {
    if (!confirm(`Delete ${inst.name} from ${inst.backend}? Its files are removed there.`)) return;
    button.disabled = true;
    try {
      const r = await request("/api/delete", { method: "DELETE", body: { model: inst.name },
        headers: { "X-Aistack-Backend": inst.backend } });
      if (!r.ok) throw await failure(r);
      await reload();
    } catch (e) {
      button.disabled = false;
      showError(e);
    }
  }

  function drawPull(box, inv, reload) {
    const managed = inv.backends.filter((b) => b.manages_models);
    if (!managed.length) {
      fill(box, empty("No backend here can pull",
        "Pulling works on Ollama backends. Add one (kind: ollama) to aistack.yaml."));
      return;
    }
    const model = h("input", { type: "text", placeholder: "e.g. qwen3:4b", required: true, autocomplete: "off" });
    const backend = select(managed.map((b) => b.name), managed[0].name);
    const go = h("button", { type: "submit", disabled: !ADMIN, title: ADMIN ? null : READ_ONLY_NOTE }, "Pull");
    const status = h("div", { id: "pull-status", "aria-live": "polite" });
    const form = h("form", { class: "card", id: "pull-form" },
      h("div", { class: "row" }, h("div", { class: "grow" }, field("Model to pull", model)), field("Onto backend", backend), go),
      status);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      go.disabled = true;
      await pull(model.value.trim(), backend.value, status);
      go.disabled = !ADMIN;
      await reload();
    });
    fill(box, form);
  }

  async function pull(model, backend, status) {
    const bar = h("span");
    const text = h("div", { class: "small" }, `Starting the pull of ${model} on ${backend}…`);
    const layers = {};
    fill(status, text, h("div", { class: "progress", role: "progressbar", "aria-label": `Pull of ${model}`,
      "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }, bar));
    const pb = status.querySelector(".progress");
    try {
      const r = await request("/api/pull", { method: "POST", body: { model, stream: true },
        headers: { "X-Aistack-Backend": backend } });
      if (!r.ok) throw await failure(r);
      let last = null;
      for await (const p of ndjson(r)) {
        if (p.error) throw new Error(p.error);
        last = p;
        if (p.digest && p.total) layers[p.digest] = [p.completed || 0, p.total];
        const tot = Object.values(layers).reduce((a, [, t]) => a + t, 0);
        const got = Object.values(layers).reduce((a, [c]) => a + c, 0);
        const pct = tot ? Math.floor((100 * got) / tot) : p.status === "success" ? 100 : 0;
        bar.style.width = `${pct}%`;
        pb.setAttribute("aria-valuenow", String(pct));
        text.textContent = tot ? `${p.status} · ${fmtBytes(got)} of ${fmtBytes(tot)} (${pct}%)` : p.status;
      }
      if (!last || last.status !== "success") throw new Error("the pull ended without success");
      bar.style.width = "100%";
      pb.setAttribute("aria-valuenow", "100");
      fill(text, h("span", { class: "ok-text" }, `Pulled ${model} on ${backend}.`));
    } catch (e) {
      fill(text, h("span", { class: "bad-text" }, `Pull failed: ${e.message}`));
      showError(new Error(`pull of ${model} on ${backend}: ${e.message}`));
    }
  }

  function drawSync(box, reload) {
    const prune = h("input", { type: "checkbox", id: "sync-prune" });
    const planBtn = h("button", { type: "button", class: "secondary" }, "Show the plan");
    const runBtn = h("button", { type: "button", disabled: true, title: ADMIN ? null : READ_ONLY_NOTE }, "Run sync");
    const out = h("div", { id: "sync-out", "aria-live": "polite" });
    fill(box, h("div", { class: "card" },
      h("p", { class: "muted" }, "Each Ollama backend's models: list in aistack.yaml is what it should have. The plan shows what a sync would pull (and, with prune, delete); nothing changes until you run it."),
      h("div", { class: "row" }, h("label", { for: "sync-prune", class: "inline" }, prune, " Prune: delete models a backend has but does not declare"),
        planBtn, runBtn), out));
    let plan = null;
    planBtn.addEventListener("click", async () => {
      planBtn.disabled = true;
      fill(out, h("p", { class: "muted" }, "Planning…"));
      try {
        plan = await api(`/admin/api/sync${prune.checked ? "?prune=1" : ""}`);
        fill(out, planView(plan));
        runBtn.disabled = !ADMIN || !plan.steps.some((s2) => s2.action === "pull" || s2.action === "prune");
      } catch (e) {
        fill(out);
        showError(e, out);
      }
      planBtn.disabled = false;
    });
    runBtn.addEventListener("click", async () => {
      if (prune.checked && !confirm("Run the sync with prune? Models not declared are deleted.")) return;
      runBtn.disabled = true;
      const log = h("ul", { class: "small" });
      fill(out, h("h3", {}, "Running"), log);
      try {
        const r = await request("/admin/api/sync", { method: "POST", body: { prune: prune.checked } });
        if (!r.ok) throw await failure(r);
        const lines = {};
        for await (const ev of ndjson(r)) {
          const key = `${ev.backend}/${ev.model}`;
          if (ev.event === "plan") continue;
          if (ev.event === "done") {
            out.append(ev.ok ? h("p", { class: "ok-text" }, "Sync finished: every step worked.")
              : h("p", { class: "error" }, `Sync finished with problems${ev.error ? `: ${ev.error}` : ""}.`));
            if (ev.steps) out.append(planView(ev));
            continue;
          }
          if (!lines[key]) { lines[key] = h("li"); log.append(lines[key]); }
          const p = ev.progress || {};
          lines[key].textContent = ev.event === "progress"
            ? `${ev.action} ${key}: ${p.status}${p.total ? ` ${Math.floor(100 * (p.completed || 0) / p.total)}%` : ""}`
            : ev.event === "retrying" ? `${ev.action} ${key}: retrying after ${ev.retry_error}`
              : ev.event === "finished" ? `${ev.action} ${key}: ${ev.ok ? "done" : `failed: ${ev.error}`}`
                : `${ev.action} ${key}: started`;
        }
      } catch (e) {
        showError(e, out);
      }
      await reload();
    });
  }

  function planView(plan) {
    const parts = [];
    for (const [b, why] of Object.entries(plan.problems || {})) parts.push(h("p", { class: "error" }, `${b}: ${why}`));
    for (const [b, why] of Object.entries(plan.skipped || {})) parts.push(h("p", { class: "muted small" }, `${b}: skipped, ${why}`));
    if (!plan.steps.length) {
      parts.push(empty("Nothing to sync", "No Ollama backend declares models. Add models: [...] to a backend in aistack.yaml."));
    } else {
      parts.push(table(["Backend", "Model", "Action", "Result"], plan.steps.map((st) => h("tr", {},
        td(st.backend), td(h("span", { class: "mono" }, st.model)), td(badge(st.action === "keep" ? "ok" : st.action === "extra" ? "extra" : "busy", st.action)),
        td(st.ok === null || st.ok === undefined ? "–" : st.ok ? badge("ok", "done") : badge("failed", `failed: ${st.error}`))))));
    }
    return h("div", { id: "sync-plan" }, parts);
  }

  // Playground: one or two models, one prompt, streamed.
  pages.playground = async (root) => {
    let models = [];
    try {
      models = (await api("/admin/api/overview")).models.filter((m) => !m.alias_of && !(m.capabilities || []).includes("image"));
    } catch (e) {
      showError(e);
    }
    if (!models.length) {
      fill(root, empty("No models to chat with", "No backend lists a model yet. See the Overview page for backend state, or pull a model on the Models page."));
      return;
    }
    const names = models.map((m) => m.name);
    const caps = Object.fromEntries(models.map((m) => [m.name, m.capabilities || []]));
    const compare = h("input", { type: "checkbox", id: "compare" });
    const maxTokens = h("input", { type: "number", min: "1", max: "32768", value: "256", id: "max-tokens" });
    const prompt = h("textarea", { id: "prompt", placeholder: "Ask something…", rows: "3" });
    const image = h("input", { type: "file", accept: "image/*", id: "image" });
    const imgNote = h("span", { class: "muted small", id: "image-note" });
    const send = h("button", { type: "submit", id: "send" }, "Send");
    const stop = h("button", { type: "button", class: "secondary", disabled: true }, "Stop");
    const clear = h("button", { type: "button", class: "secondary" }, "Clear");
    const panesBox = h("div", { class: "panes" });
    const panes = [makePane(0, names, names[0]), makePane(1, names, names[1] || names[0])];
    panesBox.append(panes[0].el);
    let attached = null;
    image.addEventListener("change", () => {
      const f = image.files[0];
      attached = null;
      imgNote.textContent = "";
      if (!f) return;
      const rd = new FileReader();
      rd.onload = () => { attached = rd.result; checkVision(); };
      rd.onerror = () => showError(new Error(`cannot read ${f.name}`));
      rd.readAsDataURL(f);
    });
    function checkVision() {
      if (!attached) return;
      const blind = activePanes().filter((p) => !(caps[p.model.value] || []).includes("vision"));
      imgNote.textContent = blind.length
        ? `Attached. ${blind.map((p) => p.model.value).join(", ")} does not list vision: it may refuse the image.`
        : "Attached.";
    }
    const activePanes = () => (compare.checked ? panes : [panes[0]]);
    compare.addEventListener("change", () => {
      panesBox.classList.toggle("two", compare.checked);
      if (compare.checked) panesBox.append(panes[1].el); else panes[1].el.remove();
      checkVision();
    });
    panes.forEach((p) => p.model.addEventListener("change", checkVision));
    let controllers = [];
    const form = h("form", { class: "card", id: "chat-form" },
      field("Prompt", prompt),
      h("div", { class: "row" }, field("Image (vision models)", image), imgNote),
      h("div", { class: "row" }, field("Max tokens", maxTokens),
        h("label", { for: "compare" }, compare, " Compare two models side by side"),
        h("span", { class: "grow" }), clear, stop, send));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const text = prompt.value.trim();
      if (!text && !attached) { showError(new Error("type a prompt first")); return; }
      send.disabled = true;
      stop.disabled = false;
      const img = attached;
      controllers = activePanes().map(() => new AbortController());
      await Promise.all(activePanes().map((p, i) => p.ask(text, img, Number(maxTokens.value) || 256, controllers[i].signal)));
      prompt.value = "";
      image.value = "";
      attached = null;
      imgNote.textContent = "";
      send.disabled = false;
      stop.disabled = true;
      prompt.focus();
    });
    prompt.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) form.requestSubmit();
    });
    stop.addEventListener("click", () => controllers.forEach((c) => c.abort()));
    clear.addEventListener("click", () => panes.forEach((p) => p.clear()));
    fill(root, h("p", { class: "muted" },
      "Requests from here are recorded as app ", h("code", {}, "console"), " (Usage and Requests). Ctrl+Enter sends."),
    form, panesBox);
  };

  function makePane(i, names, initial) {
    const model = select(names, initial, { id: `model-${i}` });
    const msgs = h("div", { class: "messages", "aria-live": "polite", id: `messages-${i}` });
    const meter = h("div", { class: "meter", id: `meter-${i}` }, h("span", {}, "TTFT –"), h("span", {}, "– tokens/s"));
    const el = h("section", { class: "pane", "aria-label": `Chat ${i + 1}` }, field(`Model ${i + 1}`, model), msgs, meter);
    let history = [];
    const pane = {
      el, model,
      clear() { history = []; fill(msgs); fill(meter, h("span", {}, "TTFT –"), h("span", {}, "– tokens/s")); },
      async ask(text, img, maxTokens, signal) {
        const content = img ? [{ type: "text", text }, { type: "image_url", image_url: { url: img } }] : text;
        history.push({ role: "user", content });
        msgs.append(h("div", { class: "msg user" }, h("span", { class: "who" }, "You"), text, img ? h("img", { src: img, alt: "attached image" }) : null));
        const out = h("span", { class: "answer" });
        const bubble = h("div", { class: "msg assistant" }, h("span", { class: "who" }, model.value), out);
        msgs.append(bubble);
        const t0 = performance.now();
        let tFirst = null, chunks = 0, usage = null, answer = "";
        fill(meter, h("span", {}, "waiting for the first token…"));
        try {
          const r = await request("/v1/chat/completions", { method: "POST", body: {
            model: model.value, messages: history, stream: true, max_tokens: maxTokens,
            stream_options: { include_usage: true } } });
          if (!r.ok) throw await failure(r);
          const reader = r.body.getReader();
          const dec = new TextDecoder();
          let buf = "";
          const onAbort = () => reader.cancel();
          signal.addEventListener("abort", onAbort);
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += dec.decode(value, { stream: true });
            let k;
            while ((k = buf.indexOf("\n\n")) >= 0) {
              const evText = buf.slice(0, k);
              buf = buf.slice(k + 2);
              for (const line of evText.split("\n")) {
                if (!line.startsWith("data:")) continue;
                const data = line.slice(5).trim();
                if (data === "[DONE]") continue;
                const obj = JSON.parse(data);
                if (obj.error) throw new Error(obj.error.message || String(obj.error));
                if (obj.usage) usage = obj.usage;
                const delta = obj.choices && obj.choices[0] && obj.choices[0].delta;
                const piece = delta && (delta.content || delta.reasoning_content || "");
                if (piece) {
                  if (tFirst === null) tFirst = performance.now();
                  chunks++;
                  answer += piece;
                  out.textContent = answer;
                  msgs.scrollTop = msgs.scrollHeight;
                }
              }
            }
          }
          signal.removeEventListener("abort", onAbort);
          if (signal.aborted) out.append(h("em", { class: "muted" }, " (stopped)"));
          history.push({ role: "assistant", content: answer });
          const tEnd = performance.now();
          const toks = usage ? usage.completion_tokens : chunks;
          const gen = tFirst !== null ? (tEnd - tFirst) / 1000 : 0;
          const rate = gen > 0 && toks > 1 ? (toks - 1) / gen : null;
          fill(meter, 
            h("span", { class: "ttft" }, `TTFT ${tFirst !== null ? fmtMs(tFirst - t0) : "–"}`),
            h("span", { class: "tps" }, `${rate !== null ? rate.toFixed(1) : "–"} tokens/s`),
            h("span", {}, `${fmtNum(toks)} tokens out${usage ? `, ${fmtNum(usage.prompt_tokens)} in` : ""}`),
            h("span", {}, `total ${fmtMs(tEnd - t0)}`));
          if (!answer) out.append(h("em", { class: "muted" }, "(empty answer)"));
        } catch (e) {
          history.pop();
          bubble.classList.add("failed");
          fill(out, h("span", { class: "bad-text" }, `Failed: ${e.message}`));
          fill(meter, h("span", {}, "failed"));
          showError(new Error(`${model.value}: ${e.message}`));
        }
      },
    };
    return pane;
  }

  // Keys: create (shown once), revoke, last use.
  pages.keys = async (root) => {
    const listBox = h("div", {}, h("p", { class: "muted" }, "Loading keys…"));
    const showAll = h("input", { type: "checkbox", id: "show-revoked" });
    const created = h("div", { id: "created-key", "aria-live": "polite" });
    let me = {};
    try { me = await api("/admin/api/me"); } catch (e) { showError(e); }
    const load = async () => {
      try {
        const data = await api(`/admin/api/keys${showAll.checked ? "?all=1" : ""}`);
        drawKeys(listBox, data.keys, load);
      } catch (e) {
        fill(listBox);
        showError(e, listBox);
      }
    };
    showAll.addEventListener("change", load);
    fill(root, 
      ADMIN ? null : h("p", { class: "note" }, READ_ONLY_NOTE),
      me.auth_mode === "open" ? h("p", { class: "note" }, "This gateway is open to callers on its own machine: requests need no key. Creating the first key turns keys on, and requests without one get 401 from then on.") : null,
      h("h2", {}, "New key"), keyForm(created, load), created,
      h("div", { class: "row" }, h("h2", { class: "grow" }, "Keys"),
        h("label", { for: "show-revoked" }, showAll, " Show revoked and expired")),
      listBox);
    await load();
  };

  function keyForm(created, reload) {
    const name = h("input", { type: "text", required: true, pattern: "[A-Za-z0-9_.@\\-]{1,64}", placeholder: "paperless", autocomplete: "off" });
    const models = h("input", { type: "text", placeholder: "gpt-oss:*, qwen3:4b (empty: every model)" });
    const rpm = h("input", { type: "number", min: "1", placeholder: "none" });
    const tpm = h("input", { type: "number", min: "1", placeholder: "none" });
    const conc = h("input", { type: "number", min: "1", placeholder: "none" });
    const ipm = h("input", { type: "number", min: "1", placeholder: "none" });
    const budget = h("input", { type: "number", min: "0", step: "0.01", placeholder: "none" });
    const period = select([["day", "per day"], ["week", "per week"], ["month", "per month"]], "month");
    const expires = h("input", { type: "text", placeholder: "90d or 2027-01-31 (empty: never)" });
    const fleet = h("input", { type: "checkbox", id: "scope-models" });
    const monitor = h("input", { type: "checkbox", id: "scope-metrics" });
    const go = h("button", { type: "submit", disabled: !ADMIN, title: ADMIN ? null : READ_ONLY_NOTE }, "Create key");
    const form = h("form", { class: "card", id: "key-form" },
      h("div", { class: "row" }, h("div", { class: "grow" }, field("App name", name, "letters, digits . - _ @")),
        h("div", { class: "grow" }, field("Models allowed", models, "globs, comma-separated"))),
      h("div", { class: "row" }, field("Requests / min", rpm), field("Tokens / min", tpm), field("Concurrent", conc),
        field("Images / min", ipm), field("Budget (USD)", budget), field("Budget period", period),
        h("div", { class: "grow" }, field("Expires", expires))),
      h("div", { class: "row" },
        h("label", { for: "scope-models" }, fleet, " May pull and delete models (scope models: Open WebUI's model management)"),
        h("label", { for: "scope-metrics" }, monitor, " May read metrics (scope metrics: Prometheus)")),
      h("div", { class: "row" }, go));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { name: name.value.trim() };
      if (models.value.trim()) body.models = models.value.split(",").map((m) => m.trim()).filter(Boolean);
      for (const [k, el] of [["rpm", rpm], ["tpm", tpm], ["concurrent", conc], ["images_per_minute", ipm]]) if (el.value) body[k] = Number(el.value);
      if (budget.value) body.budget = `${budget.value}/${period.value}`;
      if (expires.value.trim()) body.expires = expires.value.trim();
      const scopes = [[fleet, "models"], [monitor, "metrics"]].filter(([el]) => el.checked).map(([, n]) => n);
      if (scopes.length) body.scopes = scopes;
      go.disabled = true;
      try {
        const k = await api("/admin/api/keys", { method: "POST", body });
        showKeyOnce(created, k);
        form.reset();
        await reload();
      } catch (e) {
        showError(e);
      }
      go.disabled = !ADMIN;
    });
    return form;
  }

  function showKeyOnce(box, k) {
    const btn = h("button", { type: "button" }, "Copy key");
    const keyEl = h("div", { class: "keybox mono", id: "new-key", tabindex: "0" }, k.key);
    btn.addEventListener("click", () => copy(k.key, btn));
    const done = h("button", { type: "button", class: "secondary" }, "I have stored it");
    done.addEventListener("click", () => fill(box));
    const base = `${location.origin}/v1`;
    fill(box, h("div", { class: "card", role: "status" },
      h("h3", {}, `Key for ${k.name} created`),
      h("p", {}, h("strong", {}, "Copy it now: it is shown only this once."), " aistack keeps only its hash."),
      keyEl, h("div", { class: "row" }, btn, done),
      h("details", {}, h("summary", {}, "Try it"),
        h("pre", { class: "snippet" }, `curl ${base}/chat/completions \\\n  -H "Authorization: Bearer ${k.key}" \\\n  -d '{"model": "MODEL", "messages": [{"role": "user", "content": "hi"}]}'`))));
    btn.focus();
  }

  function drawKeys(box, keys, reload) {
    if (!keys.length) {
      fill(box, empty("No keys yet", "Give each app its own key above: its requests are then counted per app, and you can limit it or revoke it alone.",
        "On the command line: aistack keys create --name APP."));
      return;
    }
    fill(box, table(["Name", { label: "Key", narrow: true }, "State", { label: "Models", narrow: true }, { label: "Limits", narrow: true },
      "Budget", { label: "Created", narrow: true }, "Last used", { label: "Expires", narrow: true }, "Actions"],
    keys.map((k) => {
      const rev = h("button", { type: "button", class: "danger", disabled: !ADMIN || k.state === "revoked",
        title: ADMIN ? null : READ_ONLY_NOTE, "aria-label": `Revoke ${k.name} (${k.id})` }, "Revoke");
      rev.addEventListener("click", async () => {
        if (!confirm(`Revoke the key ${k.name} (${k.hint})? Apps using it get 401 at once.`)) return;
        rev.disabled = true;
        try {
          await api(`/admin/api/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
          await reload();
        } catch (e) {
          rev.disabled = false;
          showError(e);
        }
      });
      const limits = [k.rpm && `${k.rpm} rpm`, k.tpm && `${k.tpm} tpm`, k.concurrent && `${k.concurrent} at once`,
        k.images_per_minute && `${k.images_per_minute} images/min`].filter(Boolean).join(", ") || "none";
      const budget = k.budget !== null ? `${fmtMoney(k.spent || 0)} of ${fmtMoney(k.budget)} / ${k.budget_period}` : "none";
      return h("tr", { "data-key": k.name }, td(h("strong", {}, k.name), null), td(h("span", { class: "mono small" }, k.hint), "hide-narrow"),
        td(badge(k.state)), td([k.models.join(", ") || "all", ...(k.scopes || []).map((n) => ` + ${n}`)].join(""), "hide-narrow"), td(limits, "hide-narrow limits"), td(budget),
        td(fmtTime(k.created_at), "hide-narrow"), td(h("span", { title: fmtTime(k.last_used_at) }, ago(k.last_used_at)), "last-used"),
        td(k.expires_at ? fmtTime(k.expires_at) : "never", "hide-narrow"), td(rev));
    })));
  }

  // Usage: charts per day by app, model or backend; latency; CSV.
  pages.usage = async (root) => {
    const since = select([["7d", "last 7 days"], ["30d", "last 30 days"], ["90d", "last 90 days"]], "7d", { id: "usage-since" });
    const metric = select([["requests", "Requests"], ["tokens", "Tokens"], ["cost", "Spend (USD)"]], "requests", { id: "usage-metric" });
    const group = select([["key", "App"], ["model", "Model"], ["backend", "Backend"]], "key", { id: "usage-group" });
    const out = h("div", { id: "usage-out" });
    const csv = h("a", { class: "button secondary", id: "csv", download: "" }, "Export CSV");
    fill(root, h("div", { class: "row card" }, field("Period", since), field("Show", metric), field("Per", group),
      h("span", { class: "grow" }), csv), out);
    const draw = async () => {
      const g = group.value;
      csv.href = `/admin/api/usage?by=day,${g}&since=${since.value}&format=csv`;
      fill(out, h("p", { class: "muted" }, "Loading…"));
      let rep, lat;
      try {
        [rep, lat] = await Promise.all([api(`/admin/api/usage?by=day,${g}&since=${since.value}`),
          api(`/admin/api/latency?since=${since.value}`)]);
      } catch (e) {
        fill(out);
        showError(e, out);
        return;
      }
      const t = rep.total;
      const parts = [h("div", { class: "stats" },
        stat("Requests", fmtNum(t.requests), `${fmtNum(t.errors)} errors`),
        stat("Tokens", fmtNum(t.tokens_in + t.tokens_out), `${fmtNum(t.tokens_in)} in · ${fmtNum(t.tokens_out)} out`),
        stat("Spend", fmtMoney(t.cost), t.cost_unknown ? `${t.cost_unknown} requests unpriced` : "all priced"),
        stat("Average duration", fmtMs(t.avg_duration_ms)))];
      if (!rep.rows.length) {
        parts.push(empty("No requests in this period", "Point an app at the gateway (Connect an app) or try the Playground; usage appears here within a second."));
        fill(out, ...parts);
        return;
      }
      const days = dayRange(rep.since, rep.rows);
      const label = (r) => (g === "key" ? r.app || (r.key ? r.key : "(no key)") : r[g] || "(none)");
      const value = (r) => (metric.value === "tokens" ? r.tokens_in + r.tokens_out : metric.value === "cost" ? r.cost : r.requests);
      const totals = {};
      for (const r of rep.rows) totals[label(r)] = (totals[label(r)] || 0) + value(r);
      let names = Object.keys(totals).sort((a, b) => totals[b] - totals[a]);
      const top = names.slice(0, 7);
      const series = top.map((n) => ({ name: n, values: days.map(() => 0) }));
      const other = { name: "other", values: days.map(() => 0) };
      for (const r of rep.rows) {
        const i = days.indexOf(r.day);
        if (i < 0) continue;
        const sr = series.find((x) => x.name === label(r)) || other;
        sr.values[i] += value(r);
      }
      if (names.length > 7) series.push(other);
      const fmt = metric.value === "cost" ? fmtMoney : fmtNum;
      const mname = { requests: "Requests", tokens: "Tokens", cost: "Spend" }[metric.value];
      const gname = { key: "app", model: "model", backend: "backend" }[g];
      parts.push(barChart({ labels: days, series, fmt, title: `${mname} per day by ${gname}` }));
      parts.push(h("h2", {}, `Totals by ${gname}`));
      const sums = {};
      for (const r of rep.rows) {
        const n = label(r);
        const a = (sums[n] = sums[n] || { requests: 0, errors: 0, tin: 0, tout: 0, cost: 0, dur: 0 });
        a.requests += r.requests; a.errors += r.errors; a.tin += r.tokens_in; a.tout += r.tokens_out; a.cost += r.cost;
        a.dur += r.avg_duration_ms * r.requests;
      }
      names = Object.keys(sums).sort((a, b) => sums[b].requests - sums[a].requests);
      parts.push(table([gname[0].toUpperCase() + gname.slice(1), { label: "Requests", num: true }, { label: "Errors", num: true },
        { label: "Tokens in", num: true }, { label: "Tokens out", num: true }, { label: "Spend", num: true }, { label: "Avg duration", num: true }],
      names.map((n) => { const a = sums[n]; return h("tr", {}, td(n), num(fmtNum(a.requests)), num(fmtNum(a.errors)), num(fmtNum(a.tin)),
        num(fmtNum(a.tout)), num(fmtMoney(a.cost)), num(fmtMs(a.requests ? a.dur / a.requests : null))); })));
      parts.push(h("h2", {}, "Latency"));
      if (!lat.samples) {
        parts.push(empty("No answered requests to measure", "Latency percentiles come from successful model requests in the ledger."));
      } else {
        parts.push(lineChart({ labels: lat.days.map((d) => d.day),
          series: [{ name: "p50 duration", values: lat.days.map((d) => d.duration_ms.p50) },
            { name: "p95 duration", values: lat.days.map((d) => d.duration_ms.p95) },
            { name: "p50 time to first token", values: lat.days.map((d) => d.ttft_ms.p50) }],
          fmt: fmtMs, title: "Latency per day (ms)" }));
        parts.push(table(["Model", { label: "Requests", num: true }, { label: "p50", num: true }, { label: "p90", num: true },
          { label: "p99", num: true }, { label: "TTFT p50", num: true }, { label: "TTFT p99", num: true }],
        lat.models.map((m) => h("tr", {}, td(m.model), num(fmtNum(m.duration_ms.count)), num(fmtMs(m.duration_ms.p50)),
          num(fmtMs(m.duration_ms.p90)), num(fmtMs(m.duration_ms.p99)), num(fmtMs(m.ttft_ms.p50)), num(fmtMs(m.ttft_ms.p99)))),
        { caption: `from the newest ${fmtNum(lat.samples)} answered requests` }));
      }
      fill(out, ...parts);
    };
    for (const c of [since, metric, group]) c.addEventListener("change", draw);
    await draw();
  };

  function dayRange(sinceIso, rows) {
    const start = new Date(sinceIso);
    const days = [];
    const d = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate()));
    const end = Date.now();
    while (d.getTime() <= end && days.length < 400) {
      days.push(d.toISOString().slice(0, 10));
      d.setUTCDate(d.getUTCDate() + 1);
    }
    for (const r of rows) if (r.day && !days.includes(r.day)) days.push(r.day);
    return days.sort();
  }

  // Requests: the log with filters and a detail view.
  pages.requests = async (root) => {
    const app = select([["", "any app"]], "", { id: "f-app" });
    const model = select([["", "any model"]], "", { id: "f-model" });
    const backend = select([["", "any backend"]], "", { id: "f-backend" });
    const errorsOnly = h("input", { type: "checkbox", id: "f-errors" });
    const refresh = h("button", { type: "button", class: "secondary" }, "Refresh");
    const list = h("div", { id: "request-list" });
    const more = h("button", { type: "button", class: "secondary", hidden: true }, "Older requests");
    const detail = h("section", { id: "request-detail", "aria-live": "polite", tabindex: "-1" });
    fill(root, h("div", { class: "row card" }, field("App", app), field("Model", model), field("Backend", backend),
      h("label", { for: "f-errors" }, errorsOnly, " Errors only"), h("span", { class: "grow" }), refresh),
    list, more, detail);
    try {
      const [byKey, byModel, byBackend] = await Promise.all(["key", "model", "backend"].map((g) => api(`/admin/api/usage?by=${g}&since=30d`)));
      for (const n of [...new Set(byKey.rows.map((r) => r.app).filter(Boolean))].sort()) app.append(h("option", { value: n }, n));
      for (const r of byModel.rows) if (r.model) model.append(h("option", { value: r.model }, r.model));
      for (const r of byBackend.rows) if (r.backend) backend.append(h("option", { value: r.backend }, r.backend));
    } catch (e) {
      showError(e);
    }
    let rows = [];
    const load = async (older) => {
      const q = new URLSearchParams({ limit: "50" });
      if (app.value) q.set("app", app.value);
      if (model.value) q.set("model", model.value);
      if (backend.value) q.set("backend", backend.value);
      if (errorsOnly.checked) q.set("errors", "1");
      if (older && rows.length) q.set("before", String(rows[rows.length - 1].ts));
      try {
        const got = (await api(`/admin/api/requests?${q}`)).requests;
        rows = older ? rows.concat(got) : got;
        more.hidden = got.length < 50;
      } catch (e) {
        showError(e, list);
        return;
      }
      if (!rows.length) {
        fill(list, empty("No requests match", app.value || model.value || backend.value || errorsOnly.checked
          ? "Loosen the filters above." : "Nothing has called a model yet: try the Playground, or point an app at the gateway (Connect an app)."));
        return;
      }
      fill(list, table(["Time", "App", "Model", { label: "Backend", narrow: true }, "Status", { label: "Tokens in/out", num: true },
        { label: "TTFT", num: true }, { label: "Duration", num: true }, { label: "Cost", num: true }],
      rows.map((r) => {
        const tr = h("tr", { class: "clickable", tabindex: "0", "data-request": r.request_id,
          "aria-label": `${fmtTime(r.ts)} ${r.app || "no app"} ${r.model} status ${r.status}: show details` },
        td(fmtTime(r.ts)), td(r.app || "–"), td(r.model || "–"), td(r.backend || "–", "hide-narrow"),
        td(badge(r.status < 400 && !r.error ? "ok" : "error", r.error ? `${r.status} ${r.error}` : String(r.status))),
        td([`${fmtNum(r.tokens_in)} / ${fmtNum(r.tokens_out)}`, r.partial ? [" ", partialBadge()] : null], "num"),
        num(fmtMs(r.ttft_ms)), num(fmtMs(r.duration_ms)),
        num(r.cost === null ? "unknown" : fmtMoney(r.cost)));
        const open = () => {
          list.querySelectorAll("tr.selected").forEach((x) => x.classList.remove("selected"));
          tr.classList.add("selected");
          showRequest(detail, r);
        };
        tr.addEventListener("click", open);
        tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); open(); } });
        return tr;
      }), { caption: "Newest first. Select a row for its details." }));
    };
    for (const c of [app, model, backend, errorsOnly]) c.addEventListener("change", () => load(false));
    refresh.addEventListener("click", () => load(false));
    more.addEventListener("click", () => load(true));
    await load(false);
  };

  async function showRequest(box, r) {
    const fields = [["Time", fmtTime(r.ts)], ["Request id", r.request_id || "–"], ["App", r.app || "–"], ["Key id", r.key_id || "–"],
      ["End user", r.end_user || "–"], ["Dialect / route", `${r.dialect} / ${r.route}`], ["Model asked", r.model],
      ["Backend", r.backend || "none reached"], ["Upstream model", r.upstream_model || "–"], ["Streamed", r.stream ? "yes" : "no"],
      ["Status", String(r.status)], ["Error", r.error || "none"], ["Tokens in / out", `${fmtNum(r.tokens_in)} / ${fmtNum(r.tokens_out)}${r.tokens_estimated ? " (estimated)" : ""}`],
      ["Answer", r.partial ? "partial: it ended before its last chunk, booked with what was streamed until then" : "whole"],
      ["Time to first token", fmtMs(r.ttft_ms)], ["Duration", fmtMs(r.duration_ms)],
      ["Cost", `${r.cost === null ? "unknown" : fmtMoney(r.cost)} (${r.cost_source || "no tokens"})`], ["Attempts", String(r.attempts)]];
    const content = h("div", {}, h("p", { class: "muted" }, "Loading the content…"));
    fill(box, h("div", { class: "card" }, h("h2", {}, "Request details"),
      h("dl", { class: "kv" }, fields.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("h3", {}, "Prompt and answer"), content));
    box.focus();
    try {
      const c = await api(`/admin/api/content?request_id=${encodeURIComponent(r.request_id)}`);
      if (!c.capture || !c.content) {
        fill(content, h("p", { class: "note", id: "content-off" }, c.hint));
        return;
      }
      fill(content, ...c.content.messages.map((m) => h("div", { class: `msg ${m.role === "assistant" ? "assistant" : "user"}` },
        h("span", { class: "who" }, m.role), m.content, m.images ? h("em", { class: "muted" }, ` (${m.images} image(s) not kept)`) : null)),
      h("div", { class: "msg assistant" }, h("span", { class: "who" }, "answer"), c.content.answer));
    } catch (e) {
      fill(content);
      showError(e, content);
    }
  }

  // Vectors: collections per app, their sizes, a text search box that embeds and queries.
  pages.vectors = async (root) => {
    let data;
    try {
      data = await api("/admin/api/vectors");
    } catch (e) {
      fill(root, empty("No vector store", "It is off here (vectors.enabled: false), or it did not start: see the gateway's log."));
      return;
    }
    const cols = data.collections;
    const apps = new Set(cols.map((c) => c.app || "(admin)"));
    const parts = [h("div", { class: "stats" },
      stat("Engine", data.engine, data.ready ? "ready" : `not ready: ${data.why}`),
      stat("Collections", fmtNum(cols.length), `${fmtNum(apps.size)} app${apps.size === 1 ? "" : "s"}`),
      stat("Points", fmtNum(cols.reduce((a, c) => a + c.points, 0))),
      stat("Disk", fmtBytes(cols.reduce((a, c) => a + (c.disk_bytes || 0), 0))))];
    if (!cols.length) {
      parts.push(empty("No collections yet", "Point an app's Qdrant client at /qdrant on this gateway with its own key (Connect an app); its collections appear here."));
      fill(root, ...parts);
      return;
    }
    parts.push(table(["App", "Collection", { label: "Points", num: true }, { label: "Vectors", narrow: true },
      { label: "Disk", num: true }, "Last write", { label: "Shared with", narrow: true }, "Status"],
    cols.map((c) => h("tr", { "data-collection": c.name }, td(c.app || "(admin)"), td(h("strong", {}, c.collection)),
      num(fmtNum(c.points)), td(Object.entries(c.vectors).map(([n, d]) => `${n || "(unnamed)"}: ${d}`).join(", "), "hide-narrow"),
      num(c.disk_bytes === null ? "–" : fmtBytes(c.disk_bytes)), td(c.last_write ? ago(c.last_write * 1000) : "never"),
      td((c.shared_with || []).join(", ") || "–", "hide-narrow"), td(badge(c.status === "green" ? "ok" : "busy", c.status))))));
    const which = select(cols.map((c) => [c.name, c.name]), cols[0].name, { id: "vector-collection" });
    const model = h("input", { id: "vector-model", value: "", placeholder: "an embedding model, e.g. smollm2:135m", required: true });
    const text = h("input", { id: "vector-text", placeholder: "what to look for", required: true });
    const out = h("div", { id: "vector-results" });
    const form = h("form", { class: "card", id: "vector-search" }, h("h2", {}, "Search by text"),
      h("div", { class: "row" }, field("Collection", which), field("Model", model), field("Text", text),
        h("button", { type: "submit" }, "Search")), out);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      guarded(async () => {
        fill(out, h("p", { class: "muted" }, "Searching…"));
        const r = await api("/admin/api/vectors/search", { method: "POST",
          body: { collection: which.value, text: text.value, model: model.value, limit: 5 } });
        fill(out, r.points.length ? table(["Id", { label: "Score", num: true }, "Payload"],
          r.points.map((p) => h("tr", {}, td(String(p.id)), num(p.score.toFixed(4)),
            td(h("span", { class: "mono small" }, JSON.stringify(p.payload))))))
          : empty("Nothing found", "The collection has no points near that text."));
      }, out);
    });
    parts.push(form);
    fill(root, ...parts);
  };

  // Connect an app: the per-app settings with copy buttons.
  pages.connect = async (root) => {
    const app = select([], "", { id: "c-app" });
    const model = select([], "", { id: "c-model" });
    const via = select([["", "the app's usual"], ["ollama", "Ollama API"], ["openai", "OpenAI API"]], "", { id: "c-via" });
    const mk = h("button", { type: "button", disabled: !ADMIN, title: ADMIN ? null : READ_ONLY_NOTE }, "Create a key for this app");
    const out = h("div", { id: "snippet" });
    let key = null;
    let first = true;
    const draw = async () => {
      const q = new URLSearchParams();
      if (app.value) q.set("app", app.value);
      if (model.value) q.set("model", model.value);
      if (via.value) q.set("via", via.value);
      let d;
      try {
        d = await api(`/admin/api/snippets?${q}`);
      } catch (e) {
        fill(out);
        showError(e, out);
        return;
      }
      if (first) {
        first = false;
        fill(app, ...d.apps.map((a) => h("option", { value: a.id, selected: a.id === d.snippet.app }, a.title)));
        fill(model, ...(d.models.length ? d.models : [d.snippet.model]).map((m) => h("option", { value: m }, m)));
      }
      via.disabled = !d.both.includes(app.value || d.snippet.app);
      mk.hidden = !d.key_placeholder;
      const withKey = (t) => (key && d.key_placeholder ? t.split(d.key_placeholder).join(key) : t);
      const sn = d.snippet;
      const parts = [h("p", {}, `${sn.title} talks to `, h("code", {}, sn.url), ` (${sn.api}) with model `, h("code", {}, sn.model), ".")];
      if (d.key_placeholder && !key) parts.push(h("p", { class: "note" }, `Replace ${d.key_placeholder} with the app's key, or create one here.`));
      if (key) parts.push(h("p", { class: "note" }, h("strong", {}, "The key below is shown only now."), " Copy the settings before leaving this page."));
      if (sn.config) parts.push(copyBlock(sn.config_where || "the app's config", withKey(d.config), "snippet-config"));
      if (d.env) {
        parts.push(copyBlock(".env (docker compose env_file, systemd EnvironmentFile)", withKey(d.env), "snippet-env"));
        parts.push(copyBlock("Kubernetes: the container's env", withKey(d.k8s), "snippet-k8s"));
      }
      if (sn.notes.length) parts.push(h("ul", { class: "small" }, sn.notes.map((n) => h("li", {}, n))));
      fill(out, ...parts);
    };
    mk.addEventListener("click", async () => {
      mk.disabled = true;
      try {
        const k = await api("/admin/api/keys", { method: "POST", body: { name: app.value } });
        key = k.key;
        await draw();
      } catch (e) {
        showError(e);
      }
      mk.disabled = !ADMIN;
    });
    for (const c of [app, model, via]) c.addEventListener("change", () => { key = null; draw(); });
    fill(root, h("div", { class: "row card" }, field("App", app), field("Model", model), field("Speaking", via),
      h("span", { class: "grow" }), mk), out);
    await draw();
  };


  // Images: make images with ComfyUI, follow the queue, browse the gallery (docs/images.md).
  const SIZES = ["auto", "512x512", "768x768", "1024x1024", "1024x768", "768x1024", "1344x768", "768x1344"];
  const ACTIVE = ["queued", "running"];

  pages.images = async (root) => {
    let models = [];
    let presets = [];
    let keys = [];
    try {
      [models, presets] = await Promise.all([
        api("/v1/images/models").then((r) => r.data),
        api("/v1/images/presets").then((r) => r.data),
      ]);
    } catch (e) {
      if (e.status !== 404) showError(e);
    }
    if (!models.length) {
      fill(root, empty("No image models",
        "Add a comfyui backend to aistack.yaml (kind: comfyui, url: your ComfyUI, port 8188) and restart: every checkpoint ComfyUI has becomes an image model.",
        "See docs/images.md."));
      return;
    }
    try {
      keys = (await api("/admin/api/keys")).keys || [];
    } catch (e) {
      keys = null;  // no admin API for this user: no key filter
    }
    const model = select(models.map((m) => m.id), models[0].id, { id: "img-model" });
    const size = select(SIZES.map((s) => [s, s === "auto" ? "the workflow's own" : s]), "auto", { id: "img-size" });
    const prompt = h("textarea", { id: "img-prompt", rows: "3", placeholder: "A lighthouse at dusk, oil painting" });
    const negative = h("textarea", { id: "img-negative", rows: "2", placeholder: "blurry, text, watermark" });
    const n = h("input", { type: "number", id: "img-n", min: "1", max: "4", value: "1" });
    const steps = h("input", { type: "number", id: "img-steps", min: "1", max: "200", placeholder: "default" });
    const seed = h("input", { type: "number", id: "img-seed", min: "0", placeholder: "random" });
    const preset = select([["", "(none)"], ...presets.map((p) => [p.id, p.name])], "", { id: "img-preset" });
    const presetName = h("input", { id: "img-preset-name", placeholder: "Preset name", maxlength: "100" });
    const savePreset = h("button", { type: "button", class: "secondary", id: "img-save-preset", disabled: !ADMIN }, "Save as preset");
    const go = h("button", { type: "submit", id: "img-generate", disabled: !ADMIN, title: ADMIN ? null : READ_ONLY_NOTE }, "Generate");
    const negField = field("Negative prompt", negative);
    const current = h("div", { id: "img-current", "aria-live": "polite" });
    const queueBox = h("div", { id: "img-queue" });
    const galleryBox = h("div", { id: "img-gallery" });
    const keyFilter = keys
      ? select([["", "every key"], ["console", "the console"], ...keys.map((k) => [k.id, k.name])], "", { id: "img-key" })
      : null;

    const info = (id) => models.find((m) => m.id === id) || models[0];
    function fitModel() {
      const m = info(model.value);
      const takes = new Set(m.inputs || []);
      negField.hidden = !takes.has("negative_prompt");
      n.disabled = !takes.has("n");
      if (!takes.has("n")) n.value = "1";
      const d = m.defaults || {};
      steps.placeholder = d.steps !== undefined ? `default ${d.steps}` : "default";
      size.options[0].textContent = d.width && d.height ? `the workflow's own (${d.width}x${d.height})` : "the workflow's own";
    }
    model.addEventListener("change", fitModel);
    fitModel();

    function body() {
      const b = { model: model.value, prompt: prompt.value.trim(), n: Number(n.value) || 1 };
      if (size.value !== "auto") b.size = size.value;
      if (!negField.hidden && negative.value.trim()) b.negative_prompt = negative.value.trim();
      if (steps.value) b.steps = Number(steps.value);
      if (seed.value) b.seed = Number(seed.value);
      return b;
    }

    preset.addEventListener("change", () => {
      const p = presets.find((x) => x.id === preset.value);
      if (!p) return;
      if (p.model && models.some((m) => m.id === p.model)) model.value = p.model;
      fitModel();
      prompt.value = p.prompt || "";
      negative.value = p.negative_prompt || "";
      size.value = SIZES.includes(p.size) ? p.size : "auto";
      n.value = p.n || 1;
      steps.value = p.steps || "";
      seed.value = p.seed === undefined || p.seed === null ? "" : p.seed;
    });
    savePreset.addEventListener("click", () => guarded(async () => {
      const name = presetName.value.trim();
      if (!name) throw new Error("give the preset a name first");
      const p = await api("/v1/images/presets", { method: "POST", body: { name, ...body() } });
      presets.push(p);
      preset.append(h("option", { value: p.id }, p.name));
      preset.value = p.id;
      presetName.value = "";
    }));

    function progressOf(j) {
      const p = j.progress || {};
      const bar = h("progress", { max: String(p.max || 1), value: String(p.max ? p.value : 0), class: "img-progress",
        "aria-label": `progress of ${j.id}` });
      const text = j.status === "running" && p.max ? `step ${p.value} of ${p.max}`
        : j.status === "queued" ? (j.queue_position !== null && j.queue_position !== undefined ? `queued, ${j.queue_position} ahead` : "queued")
          : j.status;
      return h("span", { class: "img-status" }, bar, " ", h("span", { class: "muted small img-step" }, text));
    }

    function follow(job) {
      const box = h("div", { class: "card img-job", id: `job-${job.id}` },
        h("div", { class: "row" }, h("strong", {}, job.prompt), h("span", { class: "grow" }), badge(job.status)));
      const line = h("div", {}, progressOf(job));
      box.append(line);
      current.prepend(box);
      const es = new EventSource(`/v1/images/jobs/${encodeURIComponent(job.id)}/events`);
      const draw = (j) => {
        fill(box.querySelector(".row"), h("strong", {}, j.prompt), h("span", { class: "grow" }), badge(j.status, j.status));
        fill(line, progressOf(j));
      };
      for (const kind of ["queued", "running", "progress"]) {
        es.addEventListener(kind, (ev) => draw(JSON.parse(ev.data)));
      }
      for (const kind of ["succeeded", "failed", "cancelled"]) {
        es.addEventListener(kind, (ev) => {
          const j = JSON.parse(ev.data);
          es.close();
          draw(j);
          if (j.status === "failed") line.append(h("p", { class: "error" }, (j.error || {}).message || "failed"));
          if (j.status === "succeeded") {
            line.append(h("div", { class: "thumbs" }, j.data.map((im) => thumb(j, im))));
          }
          reload();
        });
      }
      es.onerror = () => { if (es.readyState === EventSource.CLOSED) reload(); };
    }

    const form = h("form", { class: "card", id: "img-form" },
      ADMIN ? null : h("p", { class: "note" }, READ_ONLY_NOTE),
      h("div", { class: "row" }, field("Preset", preset), field("Model", model), field("Size", size),
        field("Images", n), field("Steps", steps), field("Seed", seed)),
      field("Prompt", prompt), negField,
      h("div", { class: "row" }, presetName, savePreset, h("span", { class: "grow" }), go));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      guarded(async () => {
        const b = body();
        if (!b.prompt) throw new Error("type a prompt first");
        go.disabled = true;
        try {
          follow(await api("/v1/images/jobs", { method: "POST", body: b }));
        } finally {
          go.disabled = !ADMIN;
        }
        reload();
      });
    });
    prompt.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) form.requestSubmit();
    });

    // The full view: the image at its size, its job's metadata, download and delete.
    const dialog = h("dialog", { class: "img-dialog", id: "img-dialog" });
    function thumb(j, im) {
      const img = h("img", { src: im.url, alt: j.prompt, loading: "lazy", width: "160", height: String(Math.round(160 * im.height / (im.width || 1))) });
      return h("button", { type: "button", class: "thumb", title: j.prompt, onclick: () => open(j, im) }, img);
    }
    function open(j, im) {
      const del = h("button", { type: "button", class: "danger", id: "img-delete", disabled: !ADMIN,
        title: ADMIN ? null : READ_ONLY_NOTE }, "Delete");
      del.addEventListener("click", () => guarded(async () => {
        await api(`/v1/images/files/${encodeURIComponent(im.id)}`, { method: "DELETE" });
        dialog.close();
        reload();
      }, dialog));
      const meta = [
        ["Prompt", j.prompt], ["Negative prompt", j.negative_prompt || "–"], ["Model", j.model],
        ["Size", `${im.width}x${im.height}`], ["Seed", j.seed], ["Steps", j.steps || "default"],
        ["Backend", j.backend], ["Key", j.app || "–"], ["Made", fmtTime((j.finished_at || j.created_at) * 1000)],
        ["GPU time", `${j.gpu_seconds} s`], ["File", `${fmtBytes(im.bytes)} ${im.mime_type}`],
      ];
      fill(dialog,
        h("div", { class: "row" }, h("h2", {}, "Image"), h("span", { class: "grow" }),
          h("button", { type: "button", class: "secondary", onclick: () => dialog.close() }, "Close")),
        h("img", { src: im.url, alt: j.prompt, class: "full" }),
        h("dl", { class: "meta" }, meta.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
        h("div", { class: "row" }, h("a", { class: "button", href: `${im.url}?download=1`, download: "", id: "img-download" }, "Download"), del));
      dialog.showModal();
    }

    async function drawQueue() {
      const r = await api(`/v1/images/jobs?status=${ACTIVE.join(",")}&limit=50`);
      if (!r.data.length) {
        fill(queueBox, h("p", { class: "muted" }, "Nothing waiting or running."));
        return;
      }
      fill(queueBox, table(["Prompt", "Model", "Status", "Progress", ""],
        r.data.map((j) => {
          const cancel = h("button", { type: "button", class: "danger", disabled: !ADMIN, title: ADMIN ? null : READ_ONLY_NOTE,
            "aria-label": `Cancel ${j.prompt}` }, "Cancel");
          cancel.addEventListener("click", () => guarded(async () => {
            cancel.disabled = true;
            await api(`/v1/images/jobs/${encodeURIComponent(j.id)}`, { method: "DELETE" });
            reload();
          }));
          return h("tr", { "data-job": j.id }, td(j.prompt), td(j.model), td(badge(j.status)), td(progressOf(j)), td(cancel));
        })));
    }

    async function drawGallery() {
      const key = keyFilter && keyFilter.value ? `&key=${encodeURIComponent(keyFilter.value)}` : "";
      const r = await api(`/v1/images/jobs?status=succeeded&limit=48${key}`);
      const shots = r.data.flatMap((j) => j.data.map((im) => ({ j, im })));
      if (!shots.length) {
        fill(galleryBox, h("p", { class: "muted" }, "No images yet."));
        return;
      }
      fill(galleryBox, h("div", { class: "gallery" }, shots.map(({ j, im }) =>
        h("figure", { class: "shot", "data-image": im.id }, thumb(j, im),
          h("figcaption", { class: "small" }, h("span", {}, j.prompt), h("span", { class: "muted" }, ` · ${j.model} · seed ${j.seed}`))))));
    }

    const reload = () => guarded(async () => { await Promise.all([drawQueue(), drawGallery()]); });
    if (keyFilter) keyFilter.addEventListener("change", reload);
    fill(root,
      h("p", { class: "muted" }, "Images made here are recorded as app ", h("code", {}, "console"), ". Ctrl+Enter generates."),
      form, current,
      h("h2", {}, "Queue"), queueBox,
      h("div", { class: "row" }, h("h2", {}, "Gallery"), h("span", { class: "grow" }), keyFilter ? field("Key", keyFilter) : null),
      galleryBox, dialog);
    await reload();
    every(3000, drawQueue);
  };

  // -- start ---------------------------------------------------------------------------

  function setupMenu() {
    const btn = document.getElementById("menu");
    const nav = document.getElementById("nav");
    if (!btn || !nav) return;
    btn.addEventListener("click", () => {
      const open = nav.classList.toggle("open");
      btn.setAttribute("aria-expanded", String(open));
    });
  }

  document.addEventListener("DOMContentLoaded", async () => {
    setupMenu();
    const root = document.getElementById("page");
    const draw = pages[PAGE];
    if (!draw) return;
    try {
      await draw(root);
    } catch (e) {
      showError(e);
    }
    root.setAttribute("aria-busy", "false");
    document.body.dataset.ready = "1";
  });
})();
