/* The Dependencies page: the declared tasks as a layered graph (SVG), coloured by latest
   status, the critical path of the last full run marked, each stage's expected finish. */
"use strict";

(() => {
  const { el, duration, table, cells, replace, time } = PT;
  const SVG = "http://www.w3.org/2000/svg";
  const W = 190, H = 46, GX = 60, GY = 18;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = PT.visible(text);
    return node;
  }

  function graph(data) {
    if (!data.nodes.length) return el("p", { class: "empty", text: "No declared tasks: declare them with `pipetrack tasks sync FILE` (docs/tasks.md)." });
    const at = {};
    for (const n of data.nodes) at[n.task] = { x: 10 + n.layer * (W + GX), y: 10 + n.row * (H + GY) };
    const width = 20 + (Math.max(...data.nodes.map((n) => n.layer)) + 1) * (W + GX);
    const height = 20 + (Math.max(...data.nodes.map((n) => n.row)) + 1) * (H + GY);
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "task dependency graph" });
    const defs = svg("defs", {});
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerUnits: "userSpaceOnUse", markerWidth: 10, markerHeight: 10, orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
    defs.append(marker);
    root.append(defs);
    for (const e of data.edges) {
      const a = at[e.source], b = at[e.target];
      if (!a || !b) continue;
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mid = (x1 + x2) / 2;
      const path = svg("path", { d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`, class: e.critical ? "edge critical" : "edge", "marker-end": "url(#arrow)" });
      path.dataset.source = e.source;
      path.dataset.target = e.target;
      root.append(path);
    }
    for (const n of data.nodes) {
      const { x, y } = at[n.task];
      const group = svg("g", { class: `node s-${String(n.status).replace(/[^A-Z_]/g, "")}${n.critical ? " critical" : ""}${n.declared ? "" : " undeclared"}`, transform: `translate(${x},${y})` });
      group.dataset.task = n.task;
      const link = svg("a", { href: `/task/${encodeURIComponent(n.task)}` });
      link.append(svg("rect", { width: W, height: H, rx: 6 }));
      const label = n.task.length > 26 ? n.task.slice(0, 25) + "…" : n.task;
      link.append(svg("text", { x: 8, y: 18, class: "name" }, label));
      const detail = `${n.status}${n.last_seconds !== null ? " · " + duration(n.last_seconds) : ""}`;
      link.append(svg("text", { x: 8, y: 36, class: "detail" }, detail));
      link.append(svg("title", {}, `${n.task} (${n.stage})\nstatus ${n.status}\nlast run ${duration(n.last_seconds)}, typical ${duration(n.typical_seconds)}\nexpected finish ${time(n.expected_finish)}${n.overdue ? "\noverdue: " + n.overdue : ""}`));
      group.append(link);
      root.append(group);
    }
    return root;
  }

  function render(data) {
    const path = data.critical_path;
    replace("summary", `${data.nodes.length} tasks, ${data.edges.length} dependencies · `,
      path.length ? `critical path (${duration(data.critical_seconds)} in the last full run): ${path.join(" → ")}` : "no critical path yet (no finished runs of declared tasks)");
    replace("graph", graph(data));
    replace("stages", data.stages.length ? table(["Stage", "Tasks", "Expected finish", "Without estimate"],
      data.stages.map((s) => cells(s.stage, String(s.tasks), time(s.expected_finish), String(s.unknown))))
      : el("p", { class: "empty", text: "No stages." }));
  }

  PT.live(render);
})();
