// The results grid: virtualised (only the rows in view, plus a few, are in the DOM, so 100,000
// rows scroll smoothly), column types in the header, client sort (click a header) and filter,
// copy cell / row, dynamic values expanded as JSON. Cells are set with textContent only.
import { el } from "./api.js";

const ROW_H = 24;
const OVERSCAN = 8;

function cellText(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1;
  if (b === null || b === undefined) return 1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return cellText(a).localeCompare(cellText(b));
}

export class Grid {
  constructor(host, columns, rows) {
    this.host = host;
    this.columns = columns;
    this.all = rows;
    this.view = rows;
    this.sort = null; // [index, direction]
    this.selected = null; // [viewRow, col]
    this.widths = columns.map((c, i) => {
      let longest = c.name.length + c.type.length + 3;
      for (let r = 0; r < Math.min(rows.length, 200); r++) longest = Math.max(longest, Math.min(60, cellText(rows[r][i]).length));
      return Math.max(70, Math.min(420, longest * 7.5 + 16));
    });
    this.build();
  }

  build() {
    const total = this.widths.reduce((a, b) => a + b, 0);
    this.filterInput = el("input", { id: "grid-filter", placeholder: "Filter rows", oninput: () => this.applyFilter() });
    this.countLabel = el("span", { id: "row-count", class: "meta" });
    this.copyCell = el("button", { id: "copy-cell", disabled: true, onclick: () => this.copy(false) }, "Copy cell");
    this.copyRow = el("button", { id: "copy-row", disabled: true, onclick: () => this.copy(true) }, "Copy row");
    this.detail = el("pre", { id: "cell-detail", class: "cell-detail", hidden: true });
    this.header = el("div", { class: "grid-head", style: `width:${total}px` },
      this.columns.map((c, i) => el("div", {
        class: "gh", style: `width:${this.widths[i]}px`, "data-col": i, title: `${c.name} (${c.type}): click to sort`,
        onclick: () => this.sortBy(i),
      }, el("span", { class: "cname", text: c.name }), el("span", { class: "ctype", text: c.type }), el("span", { class: "sort" }))));
    this.spacer = el("div", { class: "grid-spacer", style: `width:${total}px` });
    this.body = el("div", { class: "grid-body", id: "grid-body", onscroll: () => this.paint() }, this.header, this.spacer);
    this.body.addEventListener("click", (ev) => {
      const cell = ev.target.closest(".gc");
      if (!cell) return;
      this.select(Number(cell.dataset.row), Number(cell.dataset.col));
    });
    this.host.replaceChildren(
      el("div", { class: "grid-tools" }, this.filterInput, this.copyCell, this.copyRow, this.countLabel),
      this.body,
      this.detail,
    );
    this.updateCount();
    this.paint();
  }

  updateCount() {
    const n = this.view.length, all = this.all.length;
    this.countLabel.textContent = n === all ? `${all.toLocaleString()} rows` : `${n.toLocaleString()} of ${all.toLocaleString()} rows`;
    this.spacer.style.height = `${n * ROW_H}px`;
  }

  applyFilter() {
    const q = this.filterInput.value.trim().toLowerCase();
    this.view = q ? this.all.filter((r) => r.some((v) => cellText(v).toLowerCase().includes(q))) : this.all;
    if (this.sort) this.sortRows();
    this.selected = null;
    this.updateCount();
    this.paint(true);
  }

  sortBy(i) {
    const dir = this.sort && this.sort[0] === i && this.sort[1] === 1 ? -1 : 1;
    this.sort = [i, dir];
    this.header.querySelectorAll(".sort").forEach((s, j) => { s.textContent = j === i ? (dir === 1 ? " ▲" : " ▼") : ""; });
    if (this.view === this.all) this.view = this.all.slice();
    this.sortRows();
    this.paint(true);
  }

  sortRows() {
    const [i, dir] = this.sort;
    this.view.sort((a, b) => dir * compare(a[i], b[i]));
  }

  paint(force = false) {
    const top = this.body.scrollTop;
    const height = this.body.clientHeight || 400;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(this.view.length, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    if (!force && this.range && this.range[0] === first && this.range[1] === last) return;
    this.range = [first, last];
    const frag = document.createDocumentFragment();
    for (let r = first; r < last; r++) {
      const row = this.view[r];
      const line = el("div", { class: "gr", style: `top:${r * ROW_H + ROW_H}px`, "data-row": r });
      row.forEach((v, c) => {
        const cls = "gc" + (typeof v === "object" && v !== null ? " dyn" : "") +
          (this.selected && this.selected[0] === r && this.selected[1] === c ? " sel" : "");
        line.append(el("div", { class: cls, style: `width:${this.widths[c]}px`, "data-row": r, "data-col": c, text: cellText(v) }));
      });
      frag.append(line);
    }
    this.spacer.replaceChildren(frag);
  }

  select(r, c) {
    this.selected = [r, c];
    this.copyCell.disabled = this.copyRow.disabled = false;
    const v = this.view[r][c];
    this.detail.hidden = false;
    this.detail.textContent = `${this.columns[c].name} (${this.columns[c].type}):\n` +
      (typeof v === "object" && v !== null ? JSON.stringify(v, null, 2) : cellText(v));
    this.paint(true);
  }

  selectedText(row) {
    if (!this.selected) return "";
    const [r, c] = this.selected;
    if (!row) return cellText(this.view[r][c]);
    const obj = {};
    this.columns.forEach((col, i) => { obj[col.name] = this.view[r][i]; });
    return JSON.stringify(obj);
  }

  async copy(row) {
    const text = this.selectedText(row);
    try {
      await navigator.clipboard.writeText(text);
      this.countLabel.dataset.copied = text;
    } catch {
      // no clipboard permission (an insecure origin): leave the text selected in the detail pane
      this.detail.hidden = false;
      this.detail.textContent = text;
      window.getSelection().selectAllChildren(this.detail);
    }
  }
}
