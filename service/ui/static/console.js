/* dqpulse console: vanilla JS over the /api/v1 endpoints; charts with the vendored uPlot.
 *
 * Every page is rendered here from API responses. The bearer token (when the API wants
 * one) lives in localStorage under "dqpulse.token". Charts register in
 * window.dqpulse.charts (id -> uPlot) so tests and people can inspect the plotted data;
 * window.dqpulse.ready turns true once a page has finished its first render.
 */
(function () {
  "use strict";

  const body = document.body;
  const ROOT = body.dataset.root;
  const API = body.dataset.api;
  const PAGE = body.dataset.page;
  const PARAMS = JSON.parse(body.dataset.params || "{}");
  const main = document.getElementById("main");
  const state = (window.dqpulse = { charts: {}, ready: false, pending: 0 });
  const TOKEN_KEY = "dqpulse.token";
  const ACTOR_KEY = "dqpulse.actor";
  const DIMENSIONS = ["completeness", "timeliness", "validity", "consistency", "uniqueness"];
  const KINDS = ["freshness", "volume", "completeness", "distribution", "schema", "validity",
    "uniqueness", "ml_data"];
  const RANGES = [["1h", 3600], ["6h", 21600], ["24h", 86400], ["7d", 604800], ["30d", 2592000]];

  // ---- small helpers ---------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const svgNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(svgNS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function fmtTime(epochSeconds) {
    if (epochSeconds === null || epochSeconds === undefined) return "–";
    return new Date(epochSeconds * 1000).toISOString().slice(0, 16).replace("T", " ") + "Z";
  }
  function fmtIso(iso) {
    return iso ? fmtTime(Date.parse(iso) / 1000) : "–";
  }
  function fmtNum(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const abs = Math.abs(value);
    if (digits !== undefined) return value.toFixed(digits);
    if (abs !== 0 && (abs < 0.01 || abs >= 1e6)) return value.toExponential(2);
    return Number.isInteger(value) ? String(value) : value.toFixed(abs < 1 ? 3 : 1);
  }
  /** Axis ticks: short, so that 1500000 reads 1.5M and fits the axis. */
  function fmtTick(value) {
    const abs = Math.abs(value);
    if (abs >= 1e9) return `${+(value / 1e9).toFixed(1)}G`;
    if (abs >= 1e6) return `${+(value / 1e6).toFixed(1)}M`;
    if (abs >= 1e4) return `${+(value / 1e3).toFixed(1)}k`;
    return fmtNum(value);
  }
  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }
  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 120) return `${Math.round(seconds)} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }
  function scoreClass(value) {
    if (value === null || value === undefined) return "";
    return value >= 0.98 ? "ok" : value >= 0.9 ? "warn" : "bad";
  }
  function badge(text, cls) {
    return el("span", { class: `badge ${cls || text}` }, text);
  }
  function link(path, text) {
    return el("a", { href: ROOT + path }, text);
  }
  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== null && value !== undefined && value !== "") search.set(key, value);
    }
    const text = search.toString();
    return text ? `?${text}` : "";
  }
  function showError(message) {
    const box = document.getElementById("error");
    box.textContent = message;
    box.hidden = !message;
  }

  // ---- API access ------------------------------------------------------------------------
  class AuthNeeded extends Error {}

  async function api(path, options) {
    const headers = { Accept: "application/json" };
    const token = localStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = Object.assign({ headers }, options || {});
    if (init.json !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(init.json);
      delete init.json;
    }
    state.pending += 1;
    try {
      const response = await fetch(API + path, init);
      if (response.status === 401) {
        askForToken(token ? "The saved token was refused by the API." : null);
        throw new AuthNeeded("the API needs a token");
      }
      const data = response.status === 204 ? null : await response.json();
      if (!response.ok) {
        const detail = data && data.detail ? data.detail : response.statusText;
        throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
      }
      return data;
    } finally {
      state.pending -= 1;
    }
  }

  function askForToken(reason) {
    const box = document.getElementById("auth");
    box.hidden = false;
    if (reason) document.getElementById("token-reason").textContent = reason;
    main.replaceChildren(el("p", { class: "muted" }, "Waiting for an API token."));
    document.getElementById("token-input").focus();
  }

  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value.trim());
    location.reload();
  });
  document.getElementById("token-clear").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  document.getElementById("token-button").addEventListener("click", () => {
    const box = document.getElementById("auth");
    box.hidden = !box.hidden;
    if (!box.hidden) document.getElementById("token-input").focus();
  });

  // ---- charts ----------------------------------------------------------------------------
  /** Pick a bucket size so a range plots at most ~maxPoints points (never below the window). */
  function stepFor(rangeSeconds, windowSeconds, maxPoints) {
    const raw = Math.max(windowSeconds, rangeSeconds / maxPoints);
    if (raw <= windowSeconds) return windowSeconds;
    const nice = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
    for (const step of nice) if (step >= raw) return Math.max(step, windowSeconds);
    return raw;
  }

  function markersPlugin(markers) {
    return {
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx;
          const { left, top, width, height } = u.bbox;
          ctx.save();
          for (const marker of markers) {
            const x = u.valToPos(marker.at, "x", true);
            if (x < left || x > left + width) continue;
            ctx.strokeStyle = marker.color || "rgba(196,49,75,.85)";
            ctx.lineWidth = 2 * devicePixelRatio;
            ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
            ctx.setLineDash([]);
            ctx.fillStyle = marker.color || "rgba(196,49,75,.95)";
            ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
            const textWidth = ctx.measureText(marker.label).width;
            const leftSide = x + 4 * devicePixelRatio + textWidth > left + width;
            ctx.fillText(marker.label, leftSide ? x - 4 * devicePixelRatio - textWidth : x + 4 * devicePixelRatio,
              top + 12 * devicePixelRatio);
          }
          ctx.restore();
        }],
      },
    };
  }

  /** A metric chart: value line, expected band, anomalies as red dots, score on the right. */
  function metricChart(container, id, points, options) {
    const opts = options || {};
    const xs = [], values = [], lows = [], highs = [], anomalies = [], scores = [];
    for (const p of points) {
      xs.push(p.window_start);
      values.push(p.value);
      lows.push(p.expected_low ?? null);
      highs.push(p.expected_high ?? null);
      anomalies.push(p.anomalous ? p.value : null);
      scores.push(p.score);
    }
    const width = Math.max(280, container.clientWidth || 420);
    const config = {
      width,
      height: opts.height || 200,
      legend: { show: true, live: false },
      cursor: { points: { show: false } },
      // axes in UTC, like every other time on the page
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { x: { time: true }, score: { range: [0, 1] } },
      axes: [
        { stroke: "#5f6b7a", grid: { stroke: "#eef1f5" } },
        { stroke: "#5f6b7a", grid: { stroke: "#eef1f5" }, size: 56,
          values: (u, ticks) => ticks.map((v) => fmtTick(v)) },
        { scale: "score", side: 1, stroke: "#9aa6b6", grid: { show: false }, size: 36,
          values: (u, ticks) => ticks.map((v) => v.toFixed(1)) },
      ],
      series: [
        {},
        { label: "value", stroke: "#2457c5", width: 1.5, spanGaps: false, points: { show: false } },
        { label: "expected low", stroke: "rgba(31,138,76,.55)", width: 1, dash: [4, 3], points: { show: false } },
        { label: "expected high", stroke: "rgba(31,138,76,.55)", width: 1, dash: [4, 3], points: { show: false } },
        { label: "anomalous", stroke: "#c4314b", fill: "#c4314b", width: 0, paths: () => null,
          points: { show: true, size: 7, stroke: "#c4314b", fill: "#c4314b" } },
        { label: "score", scale: "score", stroke: "rgba(184,110,0,.55)", width: 1, points: { show: false } },
      ],
      bands: [{ series: [3, 2], fill: "rgba(31,138,76,.10)" }],
      plugins: [markersPlugin(opts.markers || [])],
    };
    container.replaceChildren();
    const chart = new uPlot(config, [xs, values, lows, highs, anomalies, scores], container);
    container.dataset.points = String(xs.length);
    state.charts[id] = chart;
    return chart;
  }

  function sparkline(container, id, points) {
    const xs = points.map((p) => p.window_start);
    const ys = points.map((p) => p.value);
    const chart = new uPlot({
      width: 160, height: 36, legend: { show: false }, cursor: { show: false },
      scales: { x: { time: false } },
      axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: "#2457c5", width: 1.25, fill: "rgba(36,87,197,.10)", points: { show: false } }],
    }, [xs, ys], container);
    container.dataset.points = String(xs.length);
    state.charts[id] = chart;
    return chart;
  }

  // ---- pages -----------------------------------------------------------------------------
  async function datasetsPage() {
    const datasets = await api("/datasets");
    const sort = { key: "name", dir: 1 };
    const filter = el("input", { id: "filter", type: "search", placeholder: "name, topic or owner",
      "aria-label": "Filter datasets" });
    const owners = [...new Set(datasets.map((d) => d.owner).filter(Boolean))].sort();
    const ownerSelect = el("select", { id: "owner-filter", "aria-label": "Owner" },
      el("option", { value: "" }, "all owners"), owners.map((o) => el("option", { value: o }, o)));
    const tbody = el("tbody");
    const columns = [
      ["name", "Dataset"], ["owner", "Owner"], ["quality", "Quality per dimension"],
      [null, "Volume (last 120 windows)"], ["freshness", "Freshness / SLA"], ["open_incidents", "Open incidents"],
      ["last_window_start", "Last window"],
    ];
    const headRow = el("tr");
    for (const [key, label] of columns) {
      const th = el("th", { scope: "col" });
      if (key) {
        th.append(el("button", { class: "sort", type: "button", onclick: () => {
          sort.dir = sort.key === key ? -sort.dir : 1;
          sort.key = key;
          draw();
        } }, label));
      } else th.textContent = label;
      th.dataset.key = key || "";
      headRow.append(th);
    }
    const table = el("table", { id: "datasets" }, el("thead", {}, headRow), tbody);
    main.replaceChildren(
      el("div", { class: "head" }, el("div", {}, el("h1", {}, "Datasets"),
        el("div", { class: "muted" }, `${datasets.length} watched datasets`)),
      el("div", { class: "spacer" }),
      el("div", { class: "field" }, el("label", { for: "filter" }, "Filter"), filter),
      el("div", { class: "field" }, el("label", { for: "owner-filter" }, "Owner"), ownerSelect)),
      el("div", { class: "card table-card" }, table));

    function minQuality(d) {
      const values = DIMENSIONS.map((k) => d.quality[k]).filter((v) => v !== null && v !== undefined);
      return values.length ? Math.min(...values) : 2;
    }
    function sortValue(d, key) {
      if (key === "quality") return minQuality(d);
      if (key === "freshness") return d.seconds_since_last_record ?? -1;
      return d[key] ?? "";
    }
    const rows = new Map();
    for (const d of datasets) {
      const quality = el("div", { class: "scores" }, DIMENSIONS.map((k) => {
        const v = d.quality[k];
        return el("span", { class: `score ${scoreClass(v)}`, title: `${k} score of the newest window` },
          `${k} ${v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%"}`);
      }));
      const spark = el("div", { class: "sparkline", "data-chart": `spark-${d.name}` });
      const sla = d.freshness_sla_seconds;
      const fresh = d.seconds_since_last_record;
      const late = sla !== null && fresh !== null && fresh > sla;
      const freshness = el("span", {}, badge(fmtDuration(fresh), fresh === null ? "" : late ? "bad" : "ok"),
        el("span", { class: "muted" }, sla ? ` / ${fmtDuration(sla)}` : " / no SLA"));
      const incidentsCell = d.open_incidents
        ? link(`/incidents${query({ dataset: d.name, status: "open,acknowledged" })}`, badge(String(d.open_incidents), "open"))
        : el("span", { class: "muted" }, "0");
      rows.set(d.name, el("tr", { "data-dataset": d.name },
        el("td", {}, link(`/datasets/${encodeURIComponent(d.name)}`, d.name),
          el("div", { class: "muted mono" }, `${d.topic} · ${d.format}`)),
        el("td", {}, d.owner || "–"), el("td", {}, quality), el("td", {}, spark),
        el("td", {}, freshness), el("td", { class: "num" }, incidentsCell),
        el("td", { class: "mono" }, fmtTime(d.last_window_start))));
    }
    function draw() {
      const text = filter.value.trim().toLowerCase();
      const owner = ownerSelect.value;
      const shown = datasets.filter((d) =>
        (!owner || d.owner === owner) &&
        (!text || [d.name, d.topic, d.owner || ""].some((s) => s.toLowerCase().includes(text))));
      shown.sort((a, b) => {
        const x = sortValue(a, sort.key), y = sortValue(b, sort.key);
        return (x < y ? -1 : x > y ? 1 : 0) * sort.dir;
      });
      for (const th of headRow.children) {
        if (th.dataset.key) {
          th.setAttribute("aria-sort", th.dataset.key === sort.key
            ? (sort.dir > 0 ? "ascending" : "descending") : "none");
        }
      }
      tbody.replaceChildren(...shown.map((d) => rows.get(d.name)));
      if (!shown.length) {
        tbody.append(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No dataset matches.")));
      }
    }
    filter.addEventListener("input", draw);
    ownerSelect.addEventListener("change", draw);
    draw();
    await Promise.all(datasets.map(async (d) => {
      if (d.last_window_start === null) return;
      // the last 120 windows (2 h of 1-minute windows), at most a day
      const range = Math.min(86400, 120 * d.window_seconds);
      const series = await api(`/datasets/${encodeURIComponent(d.name)}/metrics/volume.records` +
        query({ start: d.last_window_start - range, end: d.last_window_start + d.window_seconds,
          step: stepFor(range, d.window_seconds, 120) }));
      const holder = rows.get(d.name).querySelector(".sparkline");
      sparkline(holder, `spark-${d.name}`, series.points);
    }));
  }

  function familyOf(metric) {
    return metric.split(".", 1)[0];
  }

  async function datasetPage() {
    const name = PARAMS.name;
    const path = `/datasets/${encodeURIComponent(name)}`;
    // charts wait only for the dataset and its series list; incident markers and the
    // schema timeline arrive alongside
    const incidentsLoading = api(`/incidents${query({ dataset: name, limit: 500 })}`);
    const schemaLoading = api(`${path}/schema`);
    const [dataset, seriesList] = await Promise.all([api(path), api(`${path}/metrics?counts=false`)]);
    const url = new URL(location.href);
    const rangeName = url.searchParams.get("range") || "24h";
    const range = (RANGES.find(([n]) => n === rangeName) || RANGES[2])[1];
    const end = (dataset.last_window_start ?? Date.now() / 1000) + dataset.window_seconds;
    const start = end - range;
    const step = stepFor(range, dataset.window_seconds, 600);

    const rangeButtons = el("div", { class: "seg", role: "group", "aria-label": "Time range" },
      RANGES.map(([label]) => el("button", { type: "button", "aria-pressed": String(label === rangeName),
        onclick: () => { url.searchParams.set("range", label); location.href = url.toString(); } }, label)));
    const quality = el("div", { class: "scores" }, DIMENSIONS.map((k) => {
      const v = dataset.quality[k];
      return el("span", { class: `score ${scoreClass(v)}` },
        `${k} ${v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%"}`);
    }));
    const header = el("div", { class: "head" },
      el("div", {}, el("h1", {}, dataset.name),
        el("div", { class: "muted" }, `topic ${dataset.topic} · ${dataset.format} · owner ${dataset.owner || "–"} · ` +
          `window ${fmtDuration(dataset.window_seconds)} · freshness SLA ${fmtDuration(dataset.freshness_sla_seconds)}`),
        el("div", { style: "margin-top:6px" }, quality)),
      el("div", { class: "spacer" }),
      dataset.open_incidents
        ? link(`/incidents${query({ dataset: name, status: "open,acknowledged" })}`, plural(dataset.open_incidents, "open incident"))
        : el("span", { class: "muted" }, "no open incident"),
      rangeButtons);

    const markersFor = (metric, field, incidentPage) => incidentPage.items
      .filter((i) => i.since !== null && i.since >= start && i.since <= end)
      .filter((i) => !i.metric || (i.metric === metric && (i.field || "") === field))
      .map((i) => ({ at: i.since, label: `#${i.id}` }));

    const families = new Map();
    for (const s of seriesList) {
      if (!families.has(familyOf(s.metric))) families.set(familyOf(s.metric), []);
      families.get(familyOf(s.metric)).push(s);
    }
    const metricsSection = el("section", { id: "metrics", "aria-label": "Metrics" },
      el("p", { class: "muted" }, `${seriesList.length} series from ${fmtTime(start)} to ${fmtTime(end)}, ` +
        `${fmtDuration(step)} buckets. Line: value; dashed green band: expected; red dots: anomalous; ` +
        `orange: anomaly score (right axis); dashed red lines: incidents.`));
    const loaders = [];
    const order = ["volume", "freshness", "completeness", "validity", "uniqueness", "distribution",
      "schema", "quality", "anomaly", "ml_data"];
    const familyNames = [...families.keys()].sort((a, b) =>
      ((order.indexOf(a) + 1) || 99) - ((order.indexOf(b) + 1) || 99) || a.localeCompare(b));
    for (const family of familyNames) {
      const grid = el("div", { class: "grid" });
      for (const s of families.get(family)) {
        const id = `${s.metric}${s.field ? ":" + s.field : ""}`;
        const plot = el("div", { class: "plot", "data-chart": id });
        const card = el("figure", { class: "chart", "data-series": id, style: "margin:0" },
          el("h3", {}, el("code", {}, s.metric), s.field ? el("span", { class: "muted" }, `field ${s.field}`) : null),
          plot);
        grid.append(card);
        loaders.push({ card, plot, load: async () => {
          const [data, incidentPage] = await Promise.all([
            api(`${path}/metrics/${encodeURIComponent(s.metric)}` + query({ field: s.field, start, end, step })),
            incidentsLoading]);
          metricChart(plot, id, data.points, { markers: markersFor(s.metric, s.field, incidentPage) });
          if (!data.points.length) plot.append(el("p", { class: "muted" }, "no points in this range"));
        } });
      }
      const count = families.get(family).length;
      metricsSection.append(el("details", { class: "family", "data-family": family, open: count <= 20 },
        el("summary", {}, el("h2", {}, `${family} `, el("span", { class: "muted" }, `(${count})`))), grid));
    }
    if (!seriesList.length) metricsSection.append(el("p", { class: "muted" }, "No metric computed yet."));

    const schemaCard = el("section", { class: "card", id: "schema" }, el("h2", {}, "Schema versions"),
      el("p", { class: "muted" }, "Loading…"));
    const schemaDrawn = schemaLoading.then((schema) => schemaCard.replaceChildren(el("h2", {}, "Schema versions"),
      schema.length ? schemaTimeline(schema) : el("p", { class: "muted" }, "No schema observed yet.")));
    const contract = dataset.contract || {};
    const fieldRows = Object.entries(contract.fields || {}).map(([field, rule]) => el("tr", {},
      el("td", { class: "mono" }, field), el("td", {}, rule.type || "any"),
      el("td", {}, rule.required ? "yes" : "no"),
      el("td", { class: "mono" }, Object.entries(rule).filter(([k]) => !["type", "required"].includes(k))
        .map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join("; ") || "–")));
    const contractCard = el("section", { class: "card", id: "contract" }, el("h2", {}, "Declared contract and rules"),
      el("dl", { class: "kv" },
        el("dt", {}, "event time"), el("dd", { class: "mono" }, contract.event_time || "Kafka timestamp"),
        el("dt", {}, "key"), el("dd", { class: "mono" }, contract.key || "–"),
        el("dt", {}, "label"), el("dd", { class: "mono" }, contract.label || "–"),
        el("dt", {}, "fairness"), el("dd", { class: "mono" }, contract.fairness ? JSON.stringify(contract.fairness) : "–")),
      fieldRows.length ? el("table", { style: "margin-top:10px" }, el("thead", {}, el("tr", {},
        el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "required"), el("th", {}, "rules"))),
      el("tbody", {}, fieldRows)) : el("p", { class: "muted" }, "No field rules declared."));
    main.replaceChildren(header, metricsSection,
      el("div", { class: "cols" },
        schemaCard, contractCard));
    await Promise.all([lazyLoad(loaders), schemaDrawn]);
  }

  function schemaTimeline(schema) {
    return el("ol", { class: "timeline", id: "schema-versions" }, schema.slice().reverse().map((v) => {
      const diff = v.diff || {};
      const changes = [];
      for (const f of asList(diff.added)) changes.push(el("div", { class: "diff-add mono" }, `+ ${describe(f)}`));
      for (const f of asList(diff.removed)) changes.push(el("div", { class: "diff-del mono" }, `− ${describe(f)}`));
      const types = (t) => (Array.isArray(t) ? t.join(" | ") : String(t));
      const changed = diff.type_changed && !Array.isArray(diff.type_changed) && typeof diff.type_changed === "object"
        ? Object.entries(diff.type_changed).map(([field, change]) => (change && change.from !== undefined
          ? `${field}: ${types(change.from)} → ${types(change.to)}` : `${field}: ${JSON.stringify(change)}`))
        : asList(diff.type_changed).map(describe);
      for (const text of changed) changes.push(el("div", { class: "diff-chg mono" }, `~ ${text}`));
      return el("li", { class: changes.length && v.version > 1 ? "bad" : "" },
        el("strong", {}, `v${v.version}`), " ",
        el("span", { class: "muted" }, `${fmtTime(v.first_seen)} → ${fmtTime(v.last_seen)} · ${Object.keys(v.fields).length} fields`),
        changes.length ? changes : el("div", { class: "muted" }, v.version === 1 ? "first observed schema" : "no change"));
    }));
  }

  function asList(value) {
    if (!value) return [];
    if (Array.isArray(value)) return value;
    if (typeof value === "object") return Object.entries(value).map(([k, v]) => ({ [k]: v }));
    return [value];
  }
  function describe(item) {
    if (typeof item === "string") return item;
    if (Array.isArray(item)) return item.join(": ");
    return Object.entries(item).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(" → ") : JSON.stringify(v)}`).join(", ");
  }

  /** Load charts as they come near the viewport; resolves when the first screen is drawn. */
  function lazyLoad(loaders) {
    const run = (item) => {
      if (!item.promise) {
        item.promise = item.load().catch((err) => {
          if (!(err instanceof AuthNeeded)) item.plot.replaceChildren(el("p", { class: "error" }, String(err.message)));
        });
      }
      return item.promise;
    };
    const initial = loaders.filter((item) => item.card.getBoundingClientRect().top < innerHeight);
    const observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (!entry.isIntersecting) continue;
        observer.unobserve(entry.target);
        const item = loaders.find((candidate) => candidate.card === entry.target);
        if (item) run(item);
      }
    }, { rootMargin: "300px" });
    // the rest start once the first screen is drawn, so they do not compete with it
    const firstScreen = Promise.all(initial.map(run));
    firstScreen.then(() => loaders.filter((item) => !initial.includes(item))
      .forEach((item) => observer.observe(item.card)));
    return firstScreen;
  }

  async function incidentsPage() {
    const url = new URL(location.href);
    const filters = {
      dataset: url.searchParams.get("dataset") || "",
      status: url.searchParams.get("status") ?? "open,acknowledged",
      kind: url.searchParams.get("kind") || "",
      since: url.searchParams.get("since") || "",
    };
    const cursors = [null];
    const datasets = await api("/datasets");
    const datasetSelect = el("select", { id: "f-dataset", name: "dataset" }, el("option", { value: "" }, "all datasets"),
      datasets.map((d) => el("option", { value: d.name, selected: d.name === filters.dataset }, d.name)));
    const statusSelect = el("select", { id: "f-status", name: "status" },
      [["open,acknowledged", "active (open, acknowledged)"], ["open", "open"], ["acknowledged", "acknowledged"],
        ["resolved", "resolved"], ["", "any status"]].map(([v, t]) => el("option", { value: v, selected: v === filters.status }, t)));
    const kindSelect = el("select", { id: "f-kind", name: "kind" }, el("option", { value: "" }, "any kind"),
      KINDS.map((k) => el("option", { value: k, selected: k === filters.kind }, k)));
    const sinceInput = el("input", { id: "f-since", name: "since", value: filters.since,
      placeholder: "2026-11-30T00:00:00Z" });
    const form = el("form", { class: "row card", id: "incident-filters", role: "search" },
      el("div", { class: "field" }, el("label", { for: "f-dataset" }, "Dataset"), datasetSelect),
      el("div", { class: "field" }, el("label", { for: "f-status" }, "Status"), statusSelect),
      el("div", { class: "field" }, el("label", { for: "f-kind" }, "Kind"), kindSelect),
      el("div", { class: "field" }, el("label", { for: "f-since" }, "Opened since (ISO-8601 or epoch s)"), sinceInput),
      el("div", { class: "field" }, el("label", {}, "\u00a0"), el("button", { type: "submit" }, "Apply filters")));
    const tbody = el("tbody");
    const pageInfo = el("span", { class: "muted", id: "page-info", "aria-live": "polite" });
    const prev = el("button", { type: "button", class: "secondary", id: "prev-page" }, "← Newer");
    const next = el("button", { type: "button", class: "secondary", id: "next-page" }, "Older →");
    main.replaceChildren(
      el("div", { class: "head" }, el("h1", {}, "Incidents")), form,
      el("div", { class: "card table-card" }, el("table", { id: "incidents" },
        el("thead", {}, el("tr", {}, ["#", "Severity", "Status", "Dataset", "Kind", "Metric", "First window",
          "Opened", "Summary", "Score"].map((h) => el("th", { scope: "col" }, h)))), tbody)),
      el("div", { class: "pager" }, prev, next, pageInfo));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const search = new URLSearchParams();
      for (const [key, input] of [["dataset", datasetSelect], ["status", statusSelect], ["kind", kindSelect], ["since", sinceInput]]) {
        search.set(key, input.value);
      }
      location.search = search.toString();
    });
    let page = 0;
    async function load() {
      const data = await api(`/incidents${query({ dataset: filters.dataset, status: filters.status, kind: filters.kind,
        since: filters.since, limit: 50, cursor: cursors[page] })}`);
      cursors[page + 1] = data.next_cursor;
      tbody.replaceChildren(...data.items.map((i) => el("tr", { "data-incident": String(i.id) },
        el("td", {}, link(`/incidents/${i.id}`, `#${i.id}`)), el("td", {}, badge(i.severity)),
        el("td", {}, badge(i.status)), el("td", {}, link(`/datasets/${encodeURIComponent(i.dataset)}`, i.dataset),
          i.role === "impact" && filters.dataset ? [" ", el("span", { class: "badge impact", title: `upstream break that hits ${filters.dataset}` }, "impact")] : null),
        el("td", {}, i.kind), el("td", { class: "mono" }, i.metric ? `${i.metric}${i.field ? " · " + i.field : ""}` : "–"),
        el("td", { class: "mono" }, fmtTime(i.since)), el("td", { class: "mono" }, fmtIso(i.opened_at)),
        el("td", {}, i.summary), el("td", { class: "num" }, fmtNum(i.score, 2)))));
      if (!data.items.length) tbody.append(el("tr", {}, el("td", { colspan: "10", class: "muted" }, "No incident matches these filters.")));
      prev.disabled = page === 0;
      next.disabled = !data.next_cursor;
      pageInfo.textContent = `page ${page + 1} · ${data.items.length} incidents${data.next_cursor ? " · more older" : ""}`;
    }
    prev.addEventListener("click", () => { page = Math.max(0, page - 1); load().catch(fail); });
    next.addEventListener("click", () => { page += 1; load().catch(fail); });
    await load();
  }

  async function incidentPage() {
    const id = PARAMS.id;
    const [incident, cause] = await Promise.all([api(`/incidents/${id}`), api(`/incidents/${id}/root-cause`)]);
    const [dataset, lineage] = await Promise.all([
      api(`/datasets/${encodeURIComponent(incident.dataset)}`),
      api(`/lineage${query({ dataset: incident.dataset, depth: 3 })}`),
    ]);
    const statusLine = el("p", { class: "status-line", id: "action-status", role: "status", "aria-live": "polite" });
    const comment = el("textarea", { id: "action-comment", placeholder: "optional: what you found or did" });
    const actor = el("input", { id: "action-actor", value: localStorage.getItem(ACTOR_KEY) || "", placeholder: "console" });
    const buttons = {
      acknowledge: el("button", { type: "button", id: "btn-acknowledge" }, "Acknowledge"),
      resolve: el("button", { type: "button", id: "btn-resolve", class: "secondary" }, "Resolve"),
      false_positive: el("button", { type: "button", id: "btn-false-positive", class: "secondary" }, "Mark false positive"),
      confirmed: el("button", { type: "button", id: "btn-confirmed", class: "secondary" }, "Confirm incident"),
    };
    let busy = false;
    async function act(action) {
      if (busy) return;
      busy = true;
      const who = actor.value.trim() || "console";
      localStorage.setItem(ACTOR_KEY, actor.value.trim());
      const payload = { actor: who, comment: comment.value.trim() || null };
      const order = Object.values(buttons);
      const from = order.indexOf(buttons[action]);
      statusLine.textContent = "Saving…";
      try {
        let taught = null;
        if (action === "acknowledge" || action === "resolve") {
          await api(`/incidents/${id}/${action}`, { method: "POST", json: payload });
        } else {
          taught = await api(`/incidents/${id}/feedback`, { method: "POST", json: Object.assign({ verdict: action }, payload) });
        }
        const fresh = await api(`/incidents/${id}`);
        Object.assign(incident, fresh);
        comment.value = "";
        const undone = (taught && taught.adoptions_undone) || [];
        statusLine.textContent = {
          acknowledge: "Acknowledged.", resolve: "Resolved.",
          false_positive: "Marked false positive: the detectors learn this as normal.",
          confirmed: "Confirmed: kept out of the baseline." + (undone.length
            ? ` The new level of ${undone.map((s) => s.field ? `${s.metric} (${s.field})` : s.metric).join(", ")} is no longer taken as normal: it alerts again until the old level returns.`
            : ""),
        }[action];
      } catch (err) {
        statusLine.textContent = `Failed: ${err.message}`;
      } finally {
        busy = false;
        renderState();
        // keyboard users keep their place: a button that just became disabled hands the
        // focus to the next action still possible
        if (document.activeElement === document.body || (document.activeElement && document.activeElement.disabled)) {
          const nextButton = order.slice(from + 1).concat(order.slice(0, from)).find((b) => !b.disabled);
          (nextButton || comment).focus();
        }
      }
    }
    for (const [action, button] of Object.entries(buttons)) button.addEventListener("click", () => act(action));

    const headerBadges = el("div", { class: "row", id: "incident-badges" });
    const events = el("ol", { class: "timeline", id: "incident-events" });
    function renderState() {
      headerBadges.replaceChildren(...[badge(incident.severity), badge(incident.status),
        incident.feedback ? badge(incident.feedback.replace("_", " "), incident.feedback) : null,
        incident.flapping ? badge("flapping", "warn") : null].filter(Boolean));
      buttons.acknowledge.disabled = incident.status !== "open";
      buttons.resolve.disabled = incident.status === "resolved";
      buttons.false_positive.disabled = incident.feedback === "false_positive";
      buttons.confirmed.disabled = incident.feedback === "confirmed";
      events.replaceChildren(...incident.events.map((e) => el("li", {
        class: e.action === "resolved" || e.action.includes("false") ? "ok" : e.action === "opened" ? "bad" : "" },
      el("strong", {}, e.action.replace("_", " ")), " ", el("span", { class: "muted" }, `${fmtIso(e.at)} by ${e.actor}`),
      e.comment ? el("div", {}, e.comment) : null)));
      if (!incident.events.length) events.append(el("li", { class: "muted" }, "no event"));
    }

    const alerts = el("ol", { class: "timeline", id: "incident-alerts" }, incident.alerts.map((a) => el("li", { class: "bad" },
      el("strong", { class: "mono" }, fmtTime(a.window_start)), " ",
      el("code", {}, `${a.metric}${a.field ? " · " + a.field : ""}`), " ",
      el("span", { class: "muted" }, `score ${fmtNum(a.score, 2)} · ${a.severity}`))));
    const low = incident.expected_low, high = incident.expected_high;
    const band = low !== null && high !== null ? `${fmtNum(low)} … ${fmtNum(high)}`
      : high !== null ? `≤ ${fmtNum(high)}` : low !== null ? `≥ ${fmtNum(low)}` : "–";
    const chartHolder = el("div", { class: "plot", "data-chart": "incident-metric" });
    const whatBroke = el("section", { class: "card", id: "what-broke" }, el("h2", {}, "What broke"),
      el("dl", { class: "kv" },
        el("dt", {}, "dataset"), el("dd", {}, link(`/datasets/${encodeURIComponent(incident.dataset)}`, incident.dataset),
          ` · owner ${incident.owner || dataset.owner || "–"}`),
        el("dt", {}, "kind"), el("dd", {}, incident.kinds.join(", ")),
        el("dt", {}, "series"), el("dd", { class: "mono" }, incident.metric ? `${incident.metric}${incident.field ? " · field " + incident.field : ""}` : "–"),
        el("dt", {}, "first window"), el("dd", { class: "mono" }, fmtTime(incident.since)),
        el("dt", {}, "opened"), el("dd", { class: "mono" }, fmtIso(incident.opened_at)),
        el("dt", {}, "alerts"), el("dd", {}, `${incident.alert_count} (reopened ${incident.reopen_count}×)`)),
      el("div", { class: "row", style: "margin:12px 0 6px; gap:28px" },
        el("div", {}, el("div", { class: "muted" }, "expected"), el("div", { class: "expected", id: "expected" }, band)),
        el("div", {}, el("div", { class: "muted" }, "observed"), el("div", { class: "expected", id: "observed" }, fmtNum(incident.observed))),
        el("div", {}, el("div", { class: "muted" }, "score"), el("div", { class: "expected" }, fmtNum(incident.score, 2)))),
      incident.metric ? chartHolder : null);

    const suspects = cause.suspects.map((s) => el("li", { class: s.depth === 0 ? "" : "bad" },
      el("strong", {}, link(`/datasets/${encodeURIComponent(s.dataset)}`, s.dataset)), " ",
      s.incident_id && s.incident_id !== incident.id ? link(`/incidents/${s.incident_id}`, `#${s.incident_id}`) : "(this incident)",
      ` ${s.kind} · ${s.depth === 0 ? "the dataset itself" : `${s.depth} hop${s.depth > 1 ? "s" : ""} upstream, opened ` +
        `${fmtDuration(Math.abs(s.lead_seconds))} ${s.lead_seconds >= 0 ? "earlier" : "later"}`}`,
      el("div", { class: "muted mono" }, (s.path || []).join(" → "))));
    const fields = cause.fields.map((f) => el("tr", {}, el("td", { class: "mono" }, f.metric), el("td", { class: "mono" }, f.field || "–"),
      el("td", { class: "num" }, String(f.alerts)), el("td", { class: "num" }, fmtNum(f.max_score, 2)),
      el("td", { class: "num" }, `${(f.share * 100).toFixed(0)}%`), el("td", { class: "mono" }, fmtTime(f.first_window))));
    const ae = cause.autoencoder;
    const rootCause = el("section", { class: "card", id: "root-cause" }, el("h2", {}, "Root cause"),
      el("h3", {}, "Suspects (earliest first)"),
      suspects.length ? el("ol", { class: "timeline", id: "suspects" }, suspects) : el("p", { class: "muted" }, "No suspect."),
      el("h3", {}, "Series and fields that drove it"),
      fields.length ? el("table", { id: "cause-fields" }, el("thead", {}, el("tr", {}, ["metric", "field", "alerts", "max score", "share", "first window"]
        .map((h) => el("th", {}, h)))), el("tbody", {}, fields)) : el("p", { class: "muted" }, "–"),
      ae ? el("div", { style: "margin-top:10px" }, el("h3", {}, "Dataset autoencoder"),
        el("p", {}, `score ${fmtNum(ae.score, 2)}; worst reconstructed: `, el("code", {}, (ae.top_feature || "–").replace(/\|$/, "").replace("|", " · field ")))) : null,
      // fields a newer API adds (segments, failing samples, ranked alternatives) show as-is
      Object.entries(cause).filter(([key, value]) => !["incident_id", "dataset", "suspects", "impacted",
        "fields", "autoencoder"].includes(key) && value !== null && !(Array.isArray(value) && !value.length))
        .map(([key, value]) => el("details", { class: "extra-cause" }, el("summary", {}, key.replace(/_/g, " ")),
          el("pre", { class: "mono" }, JSON.stringify(value, null, 2)))),
      el("h3", { style: "margin-top:10px" }, "Impacted downstream"),
      cause.impacted.length ? el("ul", { id: "impacted" }, cause.impacted.map((i) => el("li", {},
        link(`/datasets/${encodeURIComponent(i.dataset)}`, i.dataset), el("span", { class: "muted" }, ` (${i.depth} hop${i.depth > 1 ? "s" : ""})`))))
        : el("p", { class: "muted" }, "Nothing downstream."));

    const deliveries = incident.deliveries.map((d) => el("tr", {}, el("td", {}, d.channel), el("td", {}, d.event),
      el("td", {}, badge(d.status, d.status === "delivered" ? "ok" : d.status === "dead" ? "bad" : "warn")),
      el("td", { class: "num" }, String(d.attempts)), el("td", { class: "mono" }, fmtIso(d.delivered_at || d.next_attempt_at)),
      el("td", {}, d.last_error || "")));

    main.replaceChildren(
      el("div", { class: "head" }, el("div", {}, el("div", { class: "muted" }, link("/incidents", "Incidents"), ` / #${incident.id}`),
        el("h1", {}, incident.summary), headerBadges)),
      el("section", { class: "card", id: "actions", "aria-label": "Actions" }, el("h2", {}, "Actions"),
        el("div", { class: "row", style: "align-items:flex-start" },
          el("div", { class: "field", style: "flex:2;min-width:260px" }, el("label", { for: "action-comment" }, "Comment"), comment),
          el("div", { class: "field" }, el("label", { for: "action-actor" }, "Your name"), actor)),
        el("div", { class: "row", style: "margin-top:8px" }, Object.values(buttons)), statusLine),
      el("div", { class: "cols" }, whatBroke, rootCause),
      el("div", { class: "cols" },
        el("section", { class: "card lineage", id: "lineage" }, el("h2", {}, "Lineage around ", el("code", {}, incident.dataset)),
          lineageGraph(lineage, incident.dataset, cause)),
        el("section", { class: "card", id: "timeline" }, el("h2", {}, "Timeline"),
          el("div", { class: "cols" }, el("div", {}, el("h3", {}, "Audit trail (wall clock)"), events),
            el("div", {}, el("h3", {}, "Alerted windows (event time)"), alerts)))),
      el("section", { class: "card", id: "deliveries" }, el("h2", {}, "Notifications"),
        deliveries.length ? el("table", {}, el("thead", {}, el("tr", {}, ["channel", "event", "status", "attempts", "at", "last error"]
          .map((h) => el("th", {}, h)))), el("tbody", {}, deliveries)) : el("p", { class: "muted" }, "No notification channel matched.")));
    renderState();

    if (incident.metric && incident.since !== null) {
      const windowSeconds = dataset.window_seconds;
      const start = incident.since - 90 * windowSeconds;
      const end = Math.max(incident.since + 30 * windowSeconds, ...incident.alerts.map((a) => a.window_start + 10 * windowSeconds));
      const series = await api(`/datasets/${encodeURIComponent(incident.dataset)}/metrics/${encodeURIComponent(incident.metric)}` +
        query({ field: incident.field || "", start, end }));
      metricChart(chartHolder, "incident-metric", series.points, { height: 220,
        markers: [{ at: incident.since, label: `#${incident.id} opened` }] });
    }
  }

  /** Columns by distance: upstream on the left, the dataset in the middle, downstream right. */
  function lineageGraph(lineage, center, cause) {
    if (!lineage.edges.length) return el("p", { class: "muted" }, "No lineage declared or learned for this dataset.");
    const level = new Map([[center, 0]]);
    const walk = (dir) => {
      let frontier = [center];
      for (let depth = 1; frontier.length && depth < 10; depth++) {
        const nextFrontier = [];
        for (const node of frontier) {
          for (const e of lineage.edges) {
            const other = dir < 0 ? (e.target === node ? e.source : null) : (e.source === node ? e.target : null);
            if (other && !level.has(other)) { level.set(other, dir * depth); nextFrontier.push(other); }
          }
        }
        frontier = nextFrontier;
      }
    };
    walk(-1); walk(1);
    for (const n of lineage.nodes) if (!level.has(n)) level.set(n, 0);
    const suspects = new Set(cause.suspects.filter((s) => s.depth > 0).map((s) => s.dataset));
    const columns = new Map();
    for (const [node, l] of level) { if (!columns.has(l)) columns.set(l, []); columns.get(l).push(node); }
    const levels = [...columns.keys()].sort((a, b) => a - b);
    const colWidth = 200, rowHeight = 64, nodeW = 160, nodeH = 36;
    const maxRows = Math.max(...[...columns.values()].map((c) => c.length));
    const width = levels.length * colWidth, height = maxRows * rowHeight + 20;
    const pos = new Map();
    levels.forEach((l, ci) => {
      const nodes = columns.get(l).sort();
      nodes.forEach((n, ri) => pos.set(n, { x: ci * colWidth + 20,
        y: (height - nodes.length * rowHeight) / 2 + ri * rowHeight + 14 }));
    });
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
      "aria-label": `Lineage: ${lineage.edges.map((e) => `${e.source} to ${e.target}`).join(", ")}` });
    root.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
      markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#9aa6b6" }))));
    for (const e of lineage.edges) {
      const a = pos.get(e.source), b = pos.get(e.target);
      if (!a || !b) continue;
      const x1 = a.x + nodeW, y1 = a.y + nodeH / 2, x2 = b.x, y2 = b.y + nodeH / 2;
      const mid = (x1 + x2) / 2;
      root.append(svg("path", { class: "edge", d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`, "marker-end": "url(#arrow)" },
        svg("title", {}, `${e.source} → ${e.target} (${e.job}, ${e.origin})`)));
    }
    for (const [node, p] of pos) {
      const l = level.get(node);
      const cls = node === center ? "self" : suspects.has(node) ? "suspect" : l < 0 ? "upstream" : "downstream";
      const a = svg("a", { href: `${ROOT}/datasets/${encodeURIComponent(node)}` },
        svg("g", { class: `node ${cls}`, "data-node": node },
          svg("rect", { x: p.x, y: p.y, width: nodeW, height: nodeH, rx: 6 }),
          svg("text", { x: p.x + nodeW / 2, y: p.y + nodeH / 2 + 4, "text-anchor": "middle" }, node)));
      root.append(a);
    }
    return el("div", {}, root, el("p", { class: "muted legend" },
      "Upstream on the left (red: a suspect with an earlier incident), this dataset in blue, " +
      "downstream on the right (orange: impacted). Click a dataset to open it."));
  }

  // ---- boot --------------------------------------------------------------------------------
  function fail(err) {
    if (err instanceof AuthNeeded) return;
    console.warn(err);
    showError(`Could not load this page: ${err.message}`);
  }

  const pages = { datasets: datasetsPage, dataset: datasetPage, incidents: incidentsPage, incident: incidentPage };
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === PAGE || (a.dataset.nav === "datasets" && PAGE === "dataset") ||
        (a.dataset.nav === "incidents" && PAGE === "incident")) a.setAttribute("aria-current", "page");
  }
  const started = performance.now();
  pages[PAGE]().catch(fail).finally(() => {
    state.renderMs = performance.now() - started;
    state.ready = true;
    body.dataset.ready = "true";
  });
})();
