/* The Now page: every task's latest run, grouped by stage, redrawn from /api/now. */
"use strict";

(() => {
  const { el, duration, percent, badge, bar, runLink, taskLink, table, cells, replace } = PT;

  function progress(task) {
    const overall = task.overall_percent_complete;
    const active = task.execution_status === "RUNNING" || task.execution_status === "STARTED";
    const parts = [el("div", { class: "level" }, bar(overall, "overall"), el("span", { class: "pct", text: percent(overall) }))];
    if (active && task.subtask_name) {
      let sub = task.subtask_percent_complete;
      if ((sub === null || sub === undefined) && task.subtask_items_total) {
        sub = (100 * Math.min(task.subtask_items_complete || 0, task.subtask_items_total)) / task.subtask_items_total;
      }
      const position = task.total_subtasks ? `${task.current_subtask || "?"}/${task.total_subtasks}` : "";
      const items = task.subtask_items_total !== null && task.subtask_items_total !== undefined
        ? ` (${task.subtask_items_complete || 0}/${task.subtask_items_total})` : "";
      parts.push(el("div", { class: "level sub" }, bar(sub, "current subtask"),
        el("span", { class: "subname", text: `${position} ${task.subtask_name}${items}` })));
    }
    const message = active ? task.subtask_progress_message || task.overall_progress_message : null;
    if (message) parts.push(el("div", { class: "message", text: message }));
    return el("td", { class: "progress" }, ...parts);
  }

  function notes(task) {
    const lines = [];
    if (task.condition === "LOST") lines.push(`lost: no heartbeat for ${duration(task.heartbeat_age_seconds)}`);
    if (task.condition === "STALLED") lines.push(`stalled: no progress for ${duration(task.progress_age_seconds)}`);
    if (task.overdue) lines.push(`overdue: ${task.overdue}`);
    if (task.execution_status === "FAILED" && task.error_message) lines.push(task.error_message.split("\n")[0]);
    return el("td", { class: "notes" }, ...lines.map((line) => el("div", { text: line })));
  }

  function row(task) {
    const tr = cells(
      taskLink(task.task_name),
      runLink(task.run_id, badge(task.status)),
      progress(task),
      duration(task.elapsed_seconds),
      task.eta_seconds === null || task.eta_seconds === undefined ? "–" : duration(task.eta_seconds),
      task.hostname || "–",
      notes(task),
    );
    tr.dataset.task = task.task_name;
    tr.className = `row s-${String(task.status).replace(/[^A-Z_]/g, "")}`;
    return tr;
  }

  function render(data) {
    const counts = Object.entries(data.counts).sort().map(([status, n]) => `${n} ${status}`);
    replace("summary", `${data.tasks} tasks${counts.length ? ": " + counts.join(", ") : ""} · as of ${PT.time(data.at)}`);
    if (!data.stages.length) {
      replace("stages", el("p", { class: "empty", text: "No runs recorded yet (or none match the filters)." }));
      return;
    }
    replace("stages", ...data.stages.map((group) => el("section", { class: "stage" },
      el("h2", { text: group.stage }),
      table(["Task", "Status", "Progress", "Elapsed", "ETA", "Host", "Notes"], group.tasks.map(row)))));
  }

  PT.live(render);
})();
