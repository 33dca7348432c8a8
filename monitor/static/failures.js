/* The Failures page: failed, lost and cancelled runs in a range, grouped by error. */
"use strict";

(() => {
  const { el, badge, runLink, taskLink, table, cells, replace, time } = PT;

  function render(data) {
    replace("summary", `${data.total} runs in ${data.groups.length} groups, started ${time(data.since)} – ${time(data.until)}`);
    if (!data.groups.length) {
      replace("groups", el("p", { class: "empty", text: "No failed, lost or cancelled runs in this range." }));
      return;
    }
    replace("groups", table(["Runs", "Outcome", "Error", "Tasks", "First", "Last", "Recent runs"],
      data.groups.map((g) => cells(String(g.runs), badge(g.outcome),
        el("td", { class: "error-cell" }, el("div", { class: "key", text: g.error_key || "(no message)" }),
          el("pre", { class: "example", text: g.example_message || "" })),
        el("td", {}, ...g.tasks.flatMap((t, i) => (i ? [", ", taskLink(t)] : [taskLink(t)])),
          g.task_count > g.tasks.length ? ` and ${g.task_count - g.tasks.length} more` : ""),
        time(g.first_start), time(g.last_start),
        el("td", {}, ...g.recent_runs.flatMap((id, i) => (i ? [" ", runLink(id, id.slice(0, 8))] : [runLink(id, id.slice(0, 8))])))))));
  }

  PT.live(render);
})();
