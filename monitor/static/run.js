/* The Run page: one run's subtasks as a timeline, its error, resources and related runs. */
"use strict";

(() => {
  const { el, duration, percent, badge, bar, runLink, taskLink, table, cells, replace, time } = PT;
  const ACTIVE = ["STARTED", "RUNNING"];

  function gantt(run, subtasks) {
    if (!subtasks.length) return el("p", { class: "empty", text: "No subtasks recorded." });
    const start = Date.parse(run.execution_start);
    const ends = subtasks.map((s) => Date.parse(s.started_at) + 1000 * (s.elapsed_seconds || 0));
    const span = Math.max(...ends, start + 1000 * (run.elapsed_seconds || 0)) - start || 1;
    const depth = {};
    const rows = subtasks.map((s) => {
      const level = s.parent_index ? (depth[s.parent_index] ?? -1) + 1 : 0;
      depth[s.subtask_index] = level;
      const block = el("span", { class: `span s-${s.subtask_status}`, title: `${s.subtask_name}: ${duration(s.elapsed_seconds)}` });
      block.style.left = `${(100 * (Date.parse(s.started_at) - start)) / span}%`;
      block.style.width = `${Math.max((100000 * (s.elapsed_seconds || 0)) / span, 0.3)}%`;
      const items = s.items_total !== null && s.items_total !== undefined ? `${s.items_complete || 0}/${s.items_total}` : "";
      const name = el("td", { class: "subtask", text: s.subtask_name });
      name.style.paddingLeft = `${0.4 + level * 1.2}em`;
      return cells(String(s.subtask_index), name, badge(s.subtask_status), duration(s.elapsed_seconds), items,
        el("td", { class: "timeline" }, el("span", { class: "track" }, block)), s.message || "");
    });
    return table(["#", "Subtask", "Status", "Time", "Items", "Timeline", "Message"], rows);
  }

  function figures(pairs) {
    return el("dl", { class: "figures" }, ...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  }

  function samples(list) {
    const target = document.getElementById("samples");
    target.replaceChildren();
    if (!list.length) {
      target.append(el("p", { class: "empty", text: "No resource samples recorded for this run." }));
      return;
    }
    const names = [...new Set(list.flatMap((s) => Object.keys(s)))].filter((k) => k !== "t").sort();
    const xs = list.map((s) => s.t);
    for (const name of names) {
      const id = `sample-${name.replace(/[^a-z0-9_]/gi, "_")}`;
      target.append(el("div", { id: id, class: "chart" }));
      PT.chart(id, name, xs, [{ label: name, values: list.map((s) => (name in s ? s[name] : null)) }], { height: 160 });
    }
  }

  function render(data) {
    const run = data.run;
    replace("run-title", "Run of ", taskLink(run.task_name));
    replace("run-status", badge(run.status), ` started ${time(run.execution_start)}`,
      run.execution_end ? `, ended ${time(run.execution_end)}` : "", ` · ${duration(run.elapsed_seconds)}`,
      ACTIVE.includes(run.execution_status) && run.eta_seconds !== null ? ` · about ${duration(run.eta_seconds)} left` : "",
      run.hostname ? ` · ${run.hostname} pid ${run.process_id}` : "");
    replace("progress", el("div", { class: "level" }, bar(run.overall_percent_complete, "overall"),
      el("span", { class: "pct", text: percent(run.overall_percent_complete) }),
      el("span", { class: "message", text: run.overall_progress_message || "" })),
      run.subtask_name ? el("div", { class: "level sub" }, bar(run.subtask_percent_complete, "current subtask"),
        el("span", { class: "subname", text: `${run.current_subtask || "?"}/${run.total_subtasks || "?"} ${run.subtask_name}` }),
        el("span", { class: "message", text: run.subtask_progress_message || "" })) : null);
    replace("gantt", gantt(run, data.subtasks));
    const failed = Boolean(run.error_message || run.error_detail);
    document.getElementById("error-section").hidden = !failed;
    replace("error-message", run.error_message || "");
    replace("error-detail", run.error_detail || "");
    replace("resources", figures([
      ["memory", run.memory_mb === null ? "–" : `${run.memory_mb} MB`],
      ["peak memory", run.peak_memory_mb === null ? "–" : `${run.peak_memory_mb} MB`],
      ["CPU", run.cpu_percent === null ? "–" : `${Number(run.cpu_percent).toFixed(1)} %`],
    ]));
    samples(data.samples);
    const related = [];
    if (data.parent) related.push(["parent", runLink(data.parent.run_id, `${data.parent.task_name || data.parent.run_id} (${data.parent.execution_status || "?"})`)]);
    for (const child of data.children) related.push(["child", runLink(child.run_id, `${child.task_name} (${child.execution_status}, ${duration(child.elapsed_seconds)})`)]);
    if (run.git_commit) related.push(["git commit", run.git_commit]);
    if (run.trace_id) related.push(["trace", data.trace_url ? el("a", { href: data.trace_url, rel: "noreferrer", text: `${run.trace_id} in Jaeger` }) : run.trace_id]);
    replace("related", related.length ? figures(related) : el("p", { class: "empty", text: "No parent, children or trace." }));
    const env = Object.entries(run.environment || {}).sort();
    replace("environment", env.length ? table(["Variable", "Value"], env.map(([k, v]) => cells(k, v))) : el("p", { class: "empty", text: "No environment recorded." }));
    const record = Object.entries(run).filter(([k, v]) => v !== null && typeof v !== "object" && k !== "error_detail").sort();
    replace("record", table(["Field", "Value"], record.map(([k, v]) => cells(k, String(v)))));
  }

  PT.live(render);
})();
