// Keeps a page current without reloading it: fetches the page's JSON API every few seconds and
// re-renders the [data-live] sections. The markup mirrors templates/macros.html; a browser test
// checks that both render the same text. Everything goes through textContent (no innerHTML).
(() => {
  "use strict";
  const cfg = JSON.parse(document.getElementById("ui-config").textContent);
  const CHART_REFRESH_MS = 60000;

  // ---- formatting (same output as gateway/web/templating.py) -------------------------------
  const whenFormat = new Intl.DateTimeFormat("sv-SE", {
    timeZone: cfg.tz, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  });
  const fmt = {
    age(seconds) {
      if (seconds === null || seconds === undefined) return "—";
      const s = Math.floor(Math.max(0, seconds));
      if (s < 60) return `${s} s`;
      if (s < 3600) return `${Math.floor(s / 60)} min`;
      if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
      return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
    },
    bytes(n) {
      if (n === null || n === undefined) return "—";
      let v = n;
      for (const unit of ["B", "KiB", "MiB", "GiB"]) {
        if (v < 1024 || unit === "GiB") return unit === "B" ? `${Math.floor(v)} B` : `${v.toFixed(1)} ${unit}`;
        v /= 1024;
      }
      return "—";
    },
    num(v, decimals) { return v === null || v === undefined ? "—" : v.toFixed(decimals); },
    value(v, metric) { return fmt.num(v, cfg.decimals[metric] ?? 2); },
    when(ts) { return ts === null || ts === undefined ? "—" : whenFormat.format(new Date(ts * 1000)); },
    onoff(v) { return v === null || v === undefined ? "—" : (v ? "ON" : "OFF"); },
  };

  // ---- DOM helpers ----------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v; else el.setAttribute(k, v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false || c === "") continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }
  const muted = (text) => h("small", { class: "muted" }, text);
  const badge = (cls, text) => h("span", { class: `badge ${cls}` }, text);
  const empty = (text) => [h("p", { class: "muted" }, text)];

  // rows: [{attrs, cells: [[label, ...content]]}]
  function table(cls, headers, rows) {
    return h("table", { class: cls },
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.map((r) => h("tr", r.attrs || {},
        r.cells.map(([label, ...content]) => h("td", { "data-label": label }, content))))));
  }

  function resetForm(zoneUid) {
    return h("form", { method: "post", action: `/zones/${zoneUid}/safety/reset`, class: "inline reset" },
      h("input", { type: "hidden", name: "csrf_token", value: cfg.csrf }),
      h("input", { type: "hidden", name: "next", value: cfg.path }),
      h("button", cfg.admin ? { type: "submit", class: "danger" }
        : { type: "submit", class: "danger", disabled: "", title: "Needs the admin login" }, "Reset safety lock"));
  }

  // ---- sections ---------------------------------------------------------------------------
  function targetCell(r) {
    if (!r.target) return "—";
    const range = `${fmt.value(r.target.low, r.metric)}–${fmt.value(r.target.high, r.metric)}`;
    if (r.state === "low" || r.state === "high") return [range, " ", badge("crit", r.state === "low" ? "too low" : "too high")];
    if (r.state === "ok") return [range, " ", badge("ok", "in range")];
    return range;
  }

  function zoneCard(z, now) {
    const n = z.alerts.active;
    const w = z.water;
    return h("article", { class: `card zone${z.locked ? " locked" : ""}`, "data-zone": z.uid },
      h("header", { class: "card-head" },
        h("h2", {}, h("a", { href: `/zones/${z.uid}` }, z.name), " ", muted(z.uid)),
        z.locked ? badge("crit", "LOCKED") : null,
        n ? badge("warn", `${n} active alert${n !== 1 ? "s" : ""}`) : null),
      w ? [
        h("p", { class: "water" }, "Water: ", h("strong", {}, w.phase),
          w.phase_started_at ? ` · for ${fmt.age(now - w.phase_started_at)}` : null,
          w.changing ? " · solution being replaced"
            : (w.solution_started_at ? ` · solution ${fmt.age(now - w.solution_started_at)} old` : null)),
        w.last_error ? h("p", { class: "error" }, `Last error: ${w.last_error}`) : null,
      ] : h("p", { class: "water muted" }, "Water cycle: no data"),
      z.pumps.length ? h("table", { class: "pumps" },
        h("thead", {}, h("tr", {}, ["Pump", "Wanted / relay", "Measured"].map((t) => h("th", {}, t)))),
        h("tbody", {}, z.pumps.map((p) => h("tr", {
          class: `${p.desired_on !== p.relay_on ? "mismatch" : ""}${p.locked ? " locked" : ""}`, "data-channel": p.channel,
        },
        h("td", {}, p.channel, " ", muted(`${p.role} · ${p.fail_safe_mode}`),
          p.locked ? [" ", badge("crit", (p.lock_codes || []).join(", ") || "locked")] : null),
        h("td", {}, `${fmt.onoff(p.desired_on)} / ${fmt.onoff(p.relay_on)}`),
        h("td", {}, h("span", { class: "m" }, `${fmt.num(p.current_a, 2)} A`), " ",
          p.flow_l_min === null || p.flow_l_min === undefined ? null : h("span", { class: "m" }, `${fmt.num(p.flow_l_min, 1)} L/min`)))))) : null,
      z.readings.length ? h("table", { class: "readings" },
        h("thead", {}, h("tr", {}, ["Reading", "Value", "Target", "Age"].map((t) => h("th", {}, t)))),
        h("tbody", {}, z.readings.map((r) =>
        h("tr", { class: `st-${r.state}${r.stale ? " stale" : ""}`, "data-metric": r.metric, "data-state": r.state },
          h("th", { scope: "row" }, r.label, " ", muted(r.node_uid)),
          h("td", { class: "value" }, `${fmt.value(r.value, r.metric)} ${r.unit}`),
          h("td", { class: "target" }, targetCell(r)),
          h("td", { class: "age" }, `${fmt.age(r.age_s)} ago`, r.stale ? [" ", badge("warn", "stale")] : null)))))
        : h("p", { class: "muted" }, "No readings yet."),
      z.locked ? [h("p", { class: "lock-codes" }, `Locked by: ${z.lock_codes.join(", ")}`), resetForm(z.uid)] : null);
  }

  function alertsTable(alerts, now, el) {
    if (!alerts.length) return empty(el.dataset.empty || "No alerts.");
    return [table("alerts cards", ["Severity", "Alert", "Zone", "Raised", "Last seen", "Count", "Status"], alerts.map((a) => ({
      attrs: { class: `sev-${a.severity}`, "data-code": a.code },
      cells: [
        ["Severity", badge(a.severity === "critical" ? "crit" : "warn", a.severity)],
        ["Alert", a.type, " ", h("code", {}, a.code), a.scope ? [" ", muted(a.scope)] : null],
        ["Zone", a.zone_uid || "—"],
        ["Raised", fmt.when(a.created_at)],
        ["Last seen", `${fmt.age(now - a.last_seen_at)} ago`],
        ["Count", a.count],
        ["Status", a.status, a.resolved_by ? [" ", muted(`by ${a.resolved_by}`)] : null],
      ],
    })))];
  }

  const renderers = {
    zones(value, data) {
      const zones = [].concat(value || []);
      return zones.length ? zones.map((z) => zoneCard(z, data.now)) : empty("No zones configured.");
    },
    alerts(value, data, el) { return alertsTable(value || [], data.now, el); },
    locks(value) {
      if (!value || !value.length) return empty("No zone is locked.");
      return [h("ul", { class: "locks" }, value.map((l) => h("li", { class: "card locked", "data-zone": l.zone_uid },
        h("strong", {}, l.name), " ", muted(l.zone_uid), " ",
        h("span", { class: "lock-codes" }, l.lock_codes.join(", ")), resetForm(l.zone_uid))))];
    },
    gateway(g) {
      const row = (k, ...v) => [h("dt", {}, k), h("dd", {}, v)];
      return [h("dl", { class: "kv" },
        row("Gateway", g.id, " ", muted(`${g.greenhouse_uid} · ${g.mode}`)),
        row("Uptime", fmt.age(g.uptime_s)),
        row("Disk", `${fmt.bytes(g.disk.used_bytes)} of ${fmt.bytes(g.disk.total_bytes)} used (${fmt.num(g.disk.used_pct, 1)} %)`),
        row("Database", fmt.bytes(g.db_size_bytes)),
        row("MQTT clients", g.broker.client_count),
        row("Nodes online", `${g.nodes.online} of ${g.nodes.total}`),
        row("Safety loop", g.safety.watchdog_tripped ? badge("crit", "relay watchdog tripped") : "running"))];
    },
    sync(s) {
      const storage = s.storage_level && s.storage_level !== "ok"
        ? h("p", { class: "error" }, `Local storage: ${s.storage_level}`) : null;
      if (!s.available) return [storage, h("p", { class: "muted" }, "No upstream is configured: data stays on this gateway.")].filter(Boolean);
      if (!s.streams.length) return [storage, h("p", { class: "muted" }, "No sync streams.")].filter(Boolean);
      const up = s.upstream;
      return [
        storage,
        up && up.unreachable ? h("p", { class: "error" },
          `Central system unreachable${up.down_since ? ` since ${fmt.when(up.down_since)}` : ""}.`) : null,
        table("sync cards", ["Stream", "State", "Backlog", "Lag", "Last success", "Error"], s.streams.map((st) => ({
          cells: [
            ["Stream", st.stream], ["State", st.state], ["Backlog", `${st.backlog_rows} rows`],
            ["Lag", fmt.age(st.lag_s)], ["Last success", fmt.when(st.last_success_at)], ["Error", st.last_error || "—"],
          ],
        }))),
      ].filter(Boolean);
    },
    nodes(nodes) {
      if (!nodes.length) return empty("No node has said hello yet.");
      return [table("nodes cards", ["Node", "Zone", "Type", "State", "Online", "Firmware", "Last seen", "Signal", "Messages"], nodes.map((n) => ({
        attrs: { class: n.online ? "online" : "offline", "data-node": n.uid },
        cells: [
          ["Node", n.uid, " ", muted(n.hardware_id)],
          ["Zone", n.zone_uid || "—"],
          ["Type", n.node_type || "—"],
          ["State", n.lifecycle_state],
          ["Online", badge(n.online ? "ok" : "crit", n.online ? "online" : "offline")],
          ["Firmware", n.firmware_version || "—"],
          ["Last seen", n.last_seen_age_s === null || n.last_seen_age_s === undefined ? "never" : `${fmt.age(n.last_seen_age_s)} ago`],
          ["Signal", n.rssi === null || n.rssi === undefined ? "—" : `${n.rssi} dBm`],
          n.sequence
            ? ["Messages", `${n.sequence.gaps} missing, ${n.sequence.duplicates} resent `, muted(`boot ${n.sequence.boot} #${n.sequence.seq}`)]
            : ["Messages", "—"],
        ],
      })))];
    },
    commands(commands) {
      if (!commands.length) return empty("No commands yet.");
      return [table("commands cards", ["Created", "Command", "Target", "Source", "Status"], commands.map((c) => ({
        attrs: { class: `st-${c.status.toLowerCase()}` },
        cells: [
          ["Created", fmt.when(c.created_at)],
          ["Command", c.cmd, " ", muted(c.cmd_id)],
          ["Target", `${c.node_uid || "gateway"} / ${c.channel}`],
          ["Source", c.source],
          ["Status", c.status, c.error_code ? [" ", h("code", {}, c.error_code)] : null],
        ],
      })))];
    },
    events(events, data, el) {
      if (!events.length) return empty(el.dataset.empty || "No events yet.");
      return [table("events cards", ["When", "What happened"], events.map((e) => ({
        attrs: { "data-type": e.type },
        cells: [["When", fmt.when(e.created_at)], ["What", e.text]],
      })))];
    },
  };

  // ---- refresh loops ------------------------------------------------------------------------
  const statusLine = document.getElementById("refreshed");
  const clock = new Intl.DateTimeFormat("sv-SE", {
    timeZone: cfg.tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });

  function pick(data, path) {
    return path.split(".").reduce((o, k) => (o === null || o === undefined ? o : o[k]), data);
  }

  async function refresh() {
    const resp = await fetch(cfg.api, { headers: { Accept: "application/json" }, cache: "no-store", credentials: "same-origin" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const data = await resp.json();
    for (const el of document.querySelectorAll("[data-live]")) {
      const render = renderers[el.dataset.live];
      if (render) el.replaceChildren(...render(pick(data, el.dataset.path), data, el));
    }
    updateWaterButtons(data);
    document.body.dataset.refreshed = String((Number(document.body.dataset.refreshed) || 0) + 1);
  }

  // The water-change buttons follow the machine's phase: only the action valid now is enabled (admins only).
  function updateWaterButtons(data) {
    const phase = data && data.zone && data.zone.water ? data.zone.water.phase : null;
    const locked = Boolean(data && data.zone && data.zone.locked);
    for (const btn of document.querySelectorAll("button[data-valid-in]")) {
      const blocked = locked && btn.dataset.waterAction === "start";  // the drain would be refused at once
      btn.disabled = !cfg.admin || blocked || !btn.dataset.validIn.split(",").includes(phase);
    }
  }

  // Draining a tank or starting a pump by hand asks first, saying what will happen ({field} = the form's value).
  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
    const text = form.dataset.confirm.replace(/\{(\w+)\}/g, (_, name) => (form.elements[name] ? form.elements[name].value : "?"));
    if (!window.confirm(text)) ev.preventDefault();
  });

  async function refreshCharts() {
    for (const fig of document.querySelectorAll("[data-chart]")) {
      const resp = await fetch(fig.dataset.chart, { cache: "no-store", credentials: "same-origin" });
      if (!resp.ok) continue;
      const doc = new DOMParser().parseFromString(await resp.text(), "image/svg+xml");
      const box = fig.querySelector(".chart-box");
      if (doc.documentElement.nodeName === "svg" && box) box.replaceChildren(document.importNode(doc.documentElement, true));
    }
  }

  async function refreshAndReport() {
    try {
      await refresh();
      statusLine.textContent = `Updated ${clock.format(new Date())}`;
      statusLine.classList.remove("error");
    } catch (err) {
      statusLine.textContent = `Update failed (${err.message}); retrying`;
      statusLine.classList.add("error");
    }
  }

  function every(task, everyMs) {
    const run = async () => {
      if (!document.hidden) await task().catch(() => {});
      setTimeout(run, everyMs);
    };
    setTimeout(run, everyMs);
  }

  if (cfg.api) {
    every(refreshAndReport, cfg.refreshMs);
    // Back on the tab after a while: show the current state at once instead of at the next tick.
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshAndReport(); });
  }
  if (document.querySelector("[data-chart]")) every(refreshCharts, CHART_REFRESH_MS);
})();
