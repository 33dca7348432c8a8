/* pipetrack monitor: what every page shares. Text from the database goes into the page through
   textContent and attribute setters only, never as HTML. */
"use strict";

const PT = (() => {
  /* Bidi overrides and isolates in a task name or message would reorder what the eye reads
     (as tracker/_terminal.py says for terminals): shown as visible \uXXXX stand-ins. */
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  function visible(text) {
    return String(text).replace(BIDI, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = visible(value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(visible(child)));
    }
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    let s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d) return `${d}d${two(h)}h`;
    if (h) return `${h}h${two(m)}m`;
    if (m) return `${m}m${two(s)}s`;
    return `${s}s`;
  }

  function time(iso) {
    if (!iso) return "–";
    const when = new Date(iso);
    return isNaN(when) ? String(iso) : when.toLocaleString();
  }

  function percent(value) {
    return value === null || value === undefined ? "–" : `${Number(value).toFixed(1)}%`;
  }

  function badge(status) {
    const name = String(status || "NOT_RUN");
    return el("span", { class: `badge s-${name.replace(/[^A-Z_]/g, "")}`, text: name });
  }

  function bar(value, label) {
    const fill = el("span", { class: "fill" });
    fill.style.width = `${Math.min(Math.max(Number(value) || 0, 0), 100)}%`;
    return el("span", { class: "bar", title: label || percent(value) }, fill);
  }

  function runLink(runId, text) {
    return runId ? el("a", { href: `/run/${encodeURIComponent(runId)}` }, text) : text;
  }

  function taskLink(task) {
    return el("a", { href: `/task/${encodeURIComponent(task)}`, text: task });
  }

  function table(headers, rows) {
    const head = el("tr", {}, ...headers.map((h) => el("th", { text: h })));
    const body = el("tbody", {}, ...rows);
    return el("table", {}, el("thead", {}, head), body);
  }

  function cells(...values) {
    return el("tr", {}, ...values.map((v) => (v instanceof Node && v.tagName === "TD" ? v : el("td", {}, v))));
  }

  function replace(id, ...children) {
    const target = document.getElementById(id);
    if (target) target.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
  }

  /* Series as uPlot draws them: x (Unix seconds) and one or more y arrays. */
  function chart(id, title, xs, series, opts) {
    const target = document.getElementById(id);
    if (!target) return;
    target.replaceChildren();
    if (!xs.length || typeof uPlot === "undefined") return;
    const colours = ["#2b6cb0", "#c05621", "#2f855a", "#9b2c2c", "#6b46c1", "#b7791f", "#2c7a7b"];
    const width = Math.max(320, Math.min(target.clientWidth || 900, 1100));
    const config = {
      title: title,
      width: width,
      height: (opts && opts.height) || 220,
      scales: { x: { time: !(opts && opts.categorical) } },
      series: [{}].concat(series.map((s, i) => ({
        label: s.label, stroke: s.colour || colours[i % colours.length], width: 2,
        points: { show: true, size: 5 }, value: s.value,
      }))),
      axes: [{}, { values: (u, ticks) => ticks.map((t) => (opts && opts.yFormat ? opts.yFormat(t) : t)) }],
    };
    new uPlot(config, [xs].concat(series.map((s) => s.values)), target);
  }

  /* Draw the embedded payload, then poll the page's /api twin and redraw. */
  function live(render) {
    const live = document.getElementById("live");
    const holder = document.getElementById("payload");
    if (holder) render(JSON.parse(holder.textContent));
    const api = document.body.dataset.api;
    const every = Number(document.body.dataset.poll) || 2000;
    if (!api) return;
    let busy = false;
    const tick = async () => {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const answer = await fetch(api, { headers: { Accept: "application/json" }, cache: "no-store" });
        const data = await answer.json();
        if (!answer.ok) throw new Error(data.error || answer.statusText);
        render(data);
        live.textContent = `live · ${new Date().toLocaleTimeString()}`;
        live.className = "live ok";
      } catch (err) {
        live.textContent = `not updating: ${err.message}`;
        live.className = "live stale";
      } finally {
        busy = false;
      }
    };
    live.textContent = "live";
    live.className = "live ok";
    setInterval(tick, every);
  }

  return { visible, el, duration, time, percent, badge, bar, runLink, taskLink, table, cells, replace, chart, live };
})();
