// The hunting page: the KQL editor (CodeMirror 6), running the query under the cursor, the
// results grid, charts, the schema tree, history, saved queries, export and "Create detection
// rule" (compile check and backtest shown before saving).
import { EditorState, Prec } from "@codemirror/state";
import { EditorView, keymap, lineNumbers, highlightActiveLine, drawSelection } from "@codemirror/view";
import { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
import { syntaxHighlighting, defaultHighlightStyle, bracketMatching } from "@codemirror/language";
import { autocompletion, completionKeymap } from "@codemirror/autocomplete";
import { linter, lintGutter, lintKeymap, forceLinting } from "@codemirror/lint";
import { api, el, ApiError } from "./api.js";
import { kqlLanguage, blockAt, completionSource } from "./kql.js";
import { Grid } from "./grid.js";
import { drawChart } from "./chart.js";

const SEED = 'DeviceProcessEvents\n| where Timestamp > ago(2h)\n| where ProcessCommandLine contains "/Volume"\n| sort by Timestamp asc';
const state = { running: null, lastResult: null, diagnostics: [] };

function $(id) { return document.getElementById(id); }

function setStatus(text, cls = "meta") {
  const s = $("status");
  s.className = cls;
  s.textContent = text;
}

function currentQuery(view) {
  const block = blockAt(view.state.doc, view.state.selection.main.head);
  return block ? block.text : "";
}

// Diagnostics of the block under the cursor, from POST /api/query/check (CodeMirror's linter
// waits until typing pauses). Quick fixes replace the marked text with a suggested name.
function kqlLinter() {
  return linter(async (view) => {
    const block = blockAt(view.state.doc, view.state.selection.main.head);
    if (!block || !block.text.trim()) { showDiagnostics([], null); return []; }
    let result;
    try {
      result = await api("POST", "/api/query/check", { query: block.text });
    } catch (e) {
      return [];
    }
    if (view.state.sliceDoc(block.from, block.to) !== block.text) return []; // stale: typed on
    showDiagnostics(result.diagnostics, block);
    return result.diagnostics.filter((d) => d.start !== undefined).map((d) => {
      const from = Math.min(block.from + d.start, block.to);
      const to = Math.max(from, Math.min(block.from + Math.max(d.end, d.start + 1), block.to));
      return {
        from, to,
        severity: d.severity === "error" ? "error" : "warning",
        message: d.message + (d.hints && d.hints.length ? ` (${d.hints[0]})` : ""),
        source: d.code,
        actions: (d.suggestions || []).slice(0, 3).map((s) => ({
          name: `Replace with ${s}`,
          apply(v, f, t) { v.dispatch({ changes: { from: f, to: t, insert: s } }); },
        })),
      };
    });
  }, { delay: 350 });
}

function showDiagnostics(list, block) {
  state.diagnostics = list;
  const host = $("diagnostics");
  host.replaceChildren(...list.map((d) => el("div", {
    class: `diag diag-${d.severity}`, "data-line": d.line, "data-column": d.column, "data-code": d.code,
  }, `${d.severity} at line ${d.line ?? "?"}, column ${d.column ?? "?"}: ${d.message}`,
  d.suggestions && d.suggestions.length ? ` — did you mean ${d.suggestions.join(" or ")}?` : "")));
}

async function runQuery(view) {
  if (state.running) return true;
  const text = currentQuery(view);
  if (!text.trim()) { setStatus("Nothing to run: the cursor is not in a query.", "bad"); return true; }
  const controller = new AbortController();
  state.running = controller;
  $("run").disabled = true;
  $("cancel").disabled = false;
  setStatus("Running…");
  $("warnings").replaceChildren();
  const started = performance.now();
  const body = { query: text };
  if ($("timespan").value) body.timespan = $("timespan").value;
  try {
    const res = await api("POST", "/api/query", body, { signal: controller.signal });
    state.lastResult = { ...res, query: text };
    const elapsed = res.stats ? res.stats.elapsedMs : performance.now() - started;
    setStatus(`${res.rows.length.toLocaleString()} rows · ${Math.round(elapsed)} ms${res.truncated ? " · truncated" : ""}`,
      res.truncated ? "bad" : "meta");
    $("warnings").replaceChildren(...(res.warnings || []).map((w) => el("div", { class: "warning", text: w })));
    if (res.render) drawChart($("chart"), res.columns, res.rows, res.render);
    else $("chart").replaceChildren();
    state.grid = new Grid($("results"), res.columns, res.rows);
  } catch (e) {
    if (e.name === "AbortError") setStatus("Cancelled.", "bad");
    else {
      const first = e instanceof ApiError && e.body && e.body.errors && e.body.errors[0];
      const where = first && first.line ? ` (line ${first.line}, column ${first.column})` : "";
      setStatus(`Error: ${e.message}${where}`, "bad");
    }
  } finally {
    state.running = null;
    $("run").disabled = false;
    $("cancel").disabled = true;
    loadHistory(view);
  }
  return true;
}

function insertText(view, text) {
  const { from, to } = view.state.selection.main;
  view.dispatch({ changes: { from, to, insert: text }, selection: { anchor: from + text.length } });
  view.focus();
}

function schemaTree(view, schema) {
  const tree = $("schema-tree");
  const render = (filter) => {
    const f = filter.toLowerCase();
    tree.replaceChildren(...schema.filter((t) => !f || t.name.toLowerCase().includes(f) || t.columns.some((c) => c.name.toLowerCase().includes(f)))
      .map((t) => el("details", { class: "table", open: f ? true : undefined },
        el("summary", {}, el("a", { href: "#", class: "tname", title: t.description || "", onclick: (e) => { e.preventDefault(); insertText(view, t.name); } }, t.name)),
        el("ul", {}, t.columns.filter((c) => !f || t.name.toLowerCase().includes(f) || c.name.toLowerCase().includes(f)).map((c) =>
          el("li", {}, el("a", { href: "#", class: "col", title: c.description || "", onclick: (e) => { e.preventDefault(); insertText(view, c.name); } }, c.name),
            " ", el("span", { class: "ctype", text: c.type })))))));
  };
  render("");
  $("schema-filter").addEventListener("input", (e) => render(e.target.value));
}

function loadQueryInto(view, text) {
  view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text }, selection: { anchor: text.length } });
  view.focus();
}

async function loadHistory(view) {
  try {
    const h = await api("GET", "/api/query/history?top=30");
    $("history").replaceChildren(...h.value.map((q) => el("li", {},
      el("a", { href: "#", title: q.query, onclick: (e) => { e.preventDefault(); loadQueryInto(view, q.query); } }, q.query.slice(0, 80)),
      el("div", { class: "meta", text: `${q.ranAt.slice(0, 19).replace("T", " ")} · ${q.error ? "error" : `${q.rows} rows`}` }))));
  } catch { /* the pane stays as it was */ }
}

async function loadSaved(view) {
  const s = await api("GET", "/api/query/saved");
  $("saved").replaceChildren(...s.value.map((q) => el("li", {},
    el("a", { href: "#", title: q.query, onclick: (e) => { e.preventDefault(); loadQueryInto(view, q.query); } }, q.name),
    q.shared ? el("span", { class: "meta", text: " (shared)" }) : null,
    q.mine ? el("button", { class: "linkish", title: "Delete", onclick: async () => { await api("DELETE", `/api/query/saved/${q.id}`); loadSaved(view); } }, "×") : null)));
}

async function saveQuery(view) {
  const text = currentQuery(view);
  const name = $("save-name").value.trim();
  if (!text.trim() || !name) { setStatus("To save, put the cursor in a query and give it a name.", "bad"); return; }
  try {
    await api("POST", "/api/query/saved", { name, query: text, shared: $("save-shared").checked });
    $("save-name").value = "";
    await loadSaved(view);
  } catch (e) { setStatus(`Not saved: ${e.message}`, "bad"); }
}

async function exportResult(view, format) {
  const text = currentQuery(view);
  if (!format || !text.trim()) return;
  const body = { query: text };
  if ($("timespan").value) body.timespan = $("timespan").value;
  setStatus(`Exporting ${format}…`);
  try {
    const resp = await api("POST", `/api/query/export?format=${encodeURIComponent(format)}`, body, { raw: true });
    const blob = await resp.blob();
    const a = el("a", { href: URL.createObjectURL(blob), download: `quarry-export.${format}` });
    document.body.append(a);
    a.click();
    a.remove();
    setStatus(`Exported ${blob.size.toLocaleString()} bytes as ${format}.`);
  } catch (e) { setStatus(`Export failed: ${e.message}`, "bad"); }
  $("export").value = "";
}

function ruleBody(form, query) {
  const data = new FormData(form);
  const list = (v) => String(v || "").split(",").map((s) => s.trim()).filter(Boolean);
  return {
    name: data.get("name"), query, frequency: data.get("frequency"), severity: data.get("severity"),
    category: data.get("category"), alertTitle: data.get("alertTitle") || null,
    deviceGroups: list(data.get("deviceGroups")).map(Number), actions: list(data.get("actions")),
  };
}

function ruleDialog(view) {
  const dialog = $("rule-dialog"), form = $("rule-form");
  let query = "";
  $("create-rule").addEventListener("click", () => {
    query = currentQuery(view);
    $("rule-check").textContent = "";
    $("rule-backtest").replaceChildren();
    $("rule-save").disabled = true;
    dialog.showModal();
  });
  $("rule-close").addEventListener("click", () => dialog.close());
  form.addEventListener("input", () => { $("rule-save").disabled = true; });
  $("rule-preview").addEventListener("click", async () => {
    $("rule-check").textContent = "Checking…";
    try {
      const res = await api("POST", "/api/detections/preview?days=7", ruleBody(form, query));
      if (!res.check.ok) {
        $("rule-check").textContent = `Compile check failed: ${res.check.message}`;
        $("rule-check").className = "bad";
        return;
      }
      $("rule-check").textContent = "Compile check passed.";
      $("rule-check").className = "ok";
      const b = res.backtest;
      if (b && !b.error) {
        $("rule-backtest").replaceChildren(el("div", { id: "backtest-summary", text:
          `Backtest, last ${b.days} days: ${b.rowsMatched} matching rows, ${b.alertsWouldCreate} alert(s) would be raised` +
          `${b.alertsDroppedByCap ? `, ${b.alertsDroppedByCap} dropped by the per-run cap` : ""}; ` +
          `${b.emailsWouldSend.emails} email(s) would be sent.` }),
        el("ul", {}, (b.matchesPerDay || []).map((d) => el("li", { text: `${d.day}: ${d.count}` }))));
      } else if (b) $("rule-backtest").textContent = b.error;
      $("rule-save").disabled = false;
    } catch (e) {
      $("rule-check").textContent = `Refused: ${e.message}`;
      $("rule-check").className = "bad";
    }
  });
  $("rule-save").addEventListener("click", async () => {
    try {
      const rule = await api("POST", "/api/detections/rules", ruleBody(form, query));
      $("rule-check").replaceChildren("Saved: ", el("a", { href: `/rules/${rule.id}`, id: "new-rule-link" }, rule.name));
      $("rule-save").disabled = true;
    } catch (e) {
      $("rule-check").textContent = `Not saved: ${e.message}`;
      $("rule-check").className = "bad";
    }
  });
}

export async function initHunting() {
  const [schema, lang] = await Promise.all([api("GET", "/api/schema"), api("GET", "/api/query/language")]);
  const params = new URLSearchParams(location.search);
  const initial = params.get("q") ?? SEED;
  const run = (view) => { runQuery(view); return true; };
  const view = new EditorView({
    parent: $("editor"),
    state: EditorState.create({
      doc: initial,
      extensions: [
        lineNumbers(), history(), drawSelection(), highlightActiveLine(), bracketMatching(),
        kqlLanguage(lang), syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
        autocompletion({ override: [completionSource(schema.tables, lang)], activateOnTyping: true }),
        kqlLinter(), lintGutter(),
        Prec.highest(keymap.of([{ key: "Shift-Enter", run }, { key: "Mod-Enter", run }])),
        keymap.of([...completionKeymap, ...lintKeymap, ...historyKeymap, ...defaultKeymap]),
        EditorView.lineWrapping,
      ],
    }),
  });
  window.quarryEditor = view; // for the browser tests and the devtools console
  schemaTree(view, schema.tables);
  $("run").addEventListener("click", () => runQuery(view));
  $("cancel").addEventListener("click", () => { if (state.running) state.running.abort(); });
  $("save-form").addEventListener("submit", (ev) => { ev.preventDefault(); saveQuery(view); });
  $("export").addEventListener("change", (e) => exportResult(view, e.target.value));
  ruleDialog(view);
  loadHistory(view);
  loadSaved(view);
  forceLinting(view);
  view.focus();
}
