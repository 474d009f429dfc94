// The list and detail pages: bulk triage in the alert and incident queues, the triage form of
// the alert and incident pages, and the rule page's run now / enable / disable / backtest.
import { api, el, svg } from "./api.js";

function $(id) { return document.getElementById(id); }

function patchOf(form) {
  const data = new FormData(form);
  const patch = {};
  for (const key of ["status", "classification", "assignedTo", "comment"]) {
    const v = data.get(key);
    if (v !== null && String(v).trim() !== "") patch[key] = String(v).trim();
  }
  return patch;
}

export function initQueue() {
  const bulk = $("bulk");
  if (!bulk) return;
  const kind = bulk.dataset.kind;
  const all = $("select-all");
  if (all) all.addEventListener("change", () => document.querySelectorAll("input.pick").forEach((c) => { c.checked = all.checked; }));
  bulk.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const ids = [...document.querySelectorAll("input.pick:checked")].map((c) => c.value);
    const patch = patchOf(bulk);
    if (!ids.length || !Object.keys(patch).length) {
      $("bulk-result").textContent = "Select rows and a change first.";
      return;
    }
    let done = 0;
    const failed = [];
    for (const id of ids) {
      try {
        await api("PATCH", `/api/${kind}/${encodeURIComponent(id)}`, patch);
        done++;
      } catch (e) { failed.push(`${id}: ${e.message}`); }
    }
    $("bulk-result").textContent = `${done} updated${failed.length ? `; failed: ${failed.join("; ")}` : ""}`;
    if (!failed.length) location.reload();
  });
}

export function initTriage() {
  const form = $("triage");
  if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("PATCH", `/api/${form.dataset.kind}/${encodeURIComponent(form.dataset.id)}`, patchOf(form));
      $("triage-result").textContent = "Saved.";
      location.reload();
    } catch (e) { $("triage-result").textContent = `Not saved: ${e.message}`; }
  });
}

function backtestChart(days) {
  const w = 12, h = 60, peak = Math.max(1, ...days.map((d) => d.count));
  return svg("svg", { id: "backtest-chart", width: Math.max(60, days.length * w), height: h + 14 },
    days.map((d, i) => svg("rect", { class: "bar", x: i * w, y: h - (h * d.count) / peak, width: w - 2, height: (h * d.count) / peak, fill: "#c0392b" },
      svg("title", {}, `${d.day}: ${d.count}`))));
}

export function initRule() {
  const root = $("rule");
  if (!root) return;
  const id = root.dataset.id;
  const result = $("rule-result");
  $("rule-run").addEventListener("click", async () => {
    result.textContent = "Running…";
    try {
      const run = await api("POST", `/api/detections/rules/${id}/run`);
      result.textContent = `Run ${run.status}: ${run.rowsMatched ?? 0} rows matched, ${run.alertsCreated ?? 0} alert(s) created.`;
      result.id = "rule-result";
      setTimeout(() => location.reload(), 600);
    } catch (e) { result.textContent = `Run failed: ${e.message}`; }
  });
  $("rule-toggle").addEventListener("click", async () => {
    try {
      await api("PATCH", `/api/detections/rules/${id}`, { enabled: root.dataset.enabled !== "true" });
      location.reload();
    } catch (e) { result.textContent = `Not changed: ${e.message}`; }
  });
  $("rule-backtest-run").addEventListener("click", async () => {
    $("backtest").replaceChildren(el("p", { class: "meta", text: "Backtesting…" }));
    try {
      const b = await api("POST", `/api/detections/rules/${id}/backtest?days=30`);
      $("backtest").replaceChildren(el("h2", { text: "Backtest, last 30 days" }),
        el("p", { id: "backtest-summary", text: `${b.rowsMatched} matching rows; ${b.alertsWouldCreate} alert(s) would be raised.` }),
        backtestChart(b.matchesPerDay || []));
    } catch (e) { $("backtest").replaceChildren(el("p", { class: "bad", text: `Backtest failed: ${e.message}` })); }
  });
}
