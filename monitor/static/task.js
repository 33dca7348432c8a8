/* The Task history page: each run's duration against the typical one, outcomes, bottlenecks. */
"use strict";

(() => {
  const { el, duration, badge, runLink, table, cells, replace, time, chart } = PT;

  function render(data) {
    replace("task-title", data.task);
    const outcomes = Object.entries(data.outcomes).sort().map(([s, n]) => `${n} ${s}`).join(", ");
    replace("summary", `${data.runs.length} runs shown · typical duration ${duration(data.typical_seconds)}`,
      outcomes ? ` · all time: ${outcomes}` : "");
    const runs = data.runs.slice().reverse(); // oldest first, as a time axis wants
    chart("durations-chart", "Duration (s)", runs.map((r) => Date.parse(r.execution_start) / 1000), [
      { label: "duration", values: runs.map((r) => r.elapsed_seconds) },
      { label: "typical", values: runs.map(() => data.typical_seconds), colour: "#888" },
    ]);
    const stats = data.subtasks;
    replace("bottlenecks", stats.length ? table(["Subtask", "Runs", "Median", "Longest", "Share of run"],
      stats.map((s) => cells(s.name, String(s.runs), duration(s.median_seconds), duration(s.max_seconds),
        s.median_share === null ? "–" : `${(100 * s.median_share).toFixed(0)}%`)))
      : el("p", { class: "empty", text: "No subtasks recorded for these runs." }));
    const top = stats.slice(0, 6);
    chart("subtask-chart", "Subtask durations per run (s)", runs.map((r) => Date.parse(r.execution_start) / 1000),
      top.map((s) => ({ label: s.name, values: data.durations[s.name].slice().reverse() })));
    const over = (r) => data.typical_seconds && r.elapsed_seconds > 1.5 * data.typical_seconds;
    replace("runs", data.runs.length ? table(["Started", "Status", "Duration", "vs typical", "Exit", "Host", "Result"],
      data.runs.map((r) => cells(runLink(r.run_id, time(r.execution_start)), badge(r.execution_status),
        duration(r.elapsed_seconds),
        data.typical_seconds ? el("td", { class: over(r) ? "slow" : "", text: `${Math.round((100 * r.elapsed_seconds) / data.typical_seconds)}%` }) : "–",
        r.exit_code === null ? "" : String(r.exit_code), r.hostname || "",
        (r.error_message || r.overall_progress_message || "").split("\n")[0])))
      : el("p", { class: "empty", text: "No runs of this task (or none match the filters)." }));
  }

  PT.live(render);
})();
