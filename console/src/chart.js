// Charts for `render`: timechart, linechart, areachart, scatterchart, columnchart, barchart and
// piechart, with the with(...) properties title, xcolumn, ycolumns, series and kind=stacked
// (stacked100 too), drawn as SVG from the result rows (text set as text, never as markup).
import { el, svg } from "./api.js";

const W = 820, H = 320, M = { l: 64, r: 16, t: 34, b: 40 };
const COLORS = ["#2f6db5", "#d9822b", "#3b9c5a", "#c23b3b", "#7b5ea7", "#8c6d4f", "#d45fa8", "#6b7b8c", "#b5b52f", "#2fb5b0"];
const NUMERIC = new Set(["int", "long", "real", "decimal", "double"]);

function num(v) {
  if (v === null || v === undefined || v === "") return null;
  const n = typeof v === "number" ? v : Number(v);
  return Number.isFinite(n) ? n : null;
}

function timeValue(v) {
  const t = Date.parse(v);
  return Number.isFinite(t) ? t : null;
}

function nice(lo, hi) {
  if (lo === hi) { lo -= 1; hi += 1; }
  return [lo, hi];
}

// Which column is x, which are y, which make series (as Kusto picks them when not given).
export function plan(columns, render) {
  const names = columns.map((c) => c.name);
  const idx = (n) => names.indexOf(n);
  const vis = render.visualization;
  let x = render.xcolumn !== undefined ? idx(render.xcolumn) : -1;
  if (x < 0) {
    const want = vis === "timechart" ? (c) => c.type === "datetime"
      : vis === "columnchart" || vis === "barchart" || vis === "piechart" ? (c) => !NUMERIC.has(c.type)
        : (c) => c.type === "datetime" || NUMERIC.has(c.type);
    x = columns.findIndex(want);
    if (x < 0) x = 0;
  }
  let ys = (render.ycolumns || []).map(idx).filter((i) => i >= 0);
  if (!ys.length) ys = columns.map((c, i) => i).filter((i) => i !== x && NUMERIC.has(columns[i].type));
  let series = (render.series || []).map(idx).filter((i) => i >= 0);
  if (!render.series) series = columns.map((c, i) => i).filter((i) => i !== x && !ys.includes(i) && c.type === "string");
  return { x, ys, series };
}

// Series: [{name, points: [[x, y, rowIndex]]}]
export function seriesOf(columns, rows, render) {
  const p = plan(columns, render);
  const xType = columns[p.x] ? columns[p.x].type : "string";
  const isTime = xType === "datetime";
  const categorical = !isTime && !NUMERIC.has(xType);
  const byName = new Map();
  const categories = [];
  rows.forEach((row, ri) => {
    const prefix = p.series.map((i) => String(row[i] ?? "")).join(", ");
    const xRaw = row[p.x];
    let xv;
    if (categorical) {
      const key = String(xRaw ?? "");
      xv = categories.indexOf(key);
      if (xv < 0) { categories.push(key); xv = categories.length - 1; }
    } else xv = isTime ? timeValue(xRaw) : num(xRaw);
    if (xv === null) return;
    for (const yi of p.ys) {
      const name = [prefix, p.ys.length > 1 || !prefix ? columns[yi].name : ""].filter(Boolean).join(": ");
      if (!byName.has(name)) byName.set(name, { name, points: [] });
      const yv = num(row[yi]);
      if (yv !== null) byName.get(name).points.push([xv, yv, ri]);
    }
  });
  const list = [...byName.values()];
  for (const s of list) s.points.sort((a, b) => a[0] - b[0]);
  return { list, isTime, categorical, categories, plan: p };
}

function axisLabel(v, isTime, categorical, categories) {
  if (categorical) return categories[v] ?? "";
  if (isTime) return new Date(v).toISOString().replace("T", " ").slice(0, 16);
  return Math.abs(v) >= 1e6 ? v.toExponential(2) : String(Math.round(v * 100) / 100);
}

function stack(list, mode) {
  // cumulative values per x, in series order; stacked100 scales each x to 100
  const totals = new Map();
  for (const s of list) for (const [x, y] of s.points) totals.set(x, (totals.get(x) || 0) + y);
  const base = new Map();
  return list.map((s) => ({
    name: s.name,
    points: s.points.map(([x, y, ri]) => {
      const scale = mode === "stacked100" ? 100 / (totals.get(x) || 1) : 1;
      const lo = base.get(x) || 0, hi = lo + y * scale;
      base.set(x, hi);
      return [x, hi, ri, lo];
    }),
  }));
}

export function drawChart(host, columns, rows, render) {
  const vis = render.visualization;
  host.replaceChildren();
  if (!["timechart", "linechart", "areachart", "stackedareachart", "scatterchart", "columnchart", "barchart", "piechart"].includes(vis)) {
    host.append(el("p", { class: "meta", text: `render ${vis}: shown as the table below` }));
    return null;
  }
  const data = seriesOf(columns, rows, render);
  const root = svg("svg", { id: "chart-svg", class: `chart chart-${vis}`, viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "data-visualization": vis });
  root.append(svg("text", { x: W / 2, y: 20, "text-anchor": "middle", class: "chart-title" }, render.title || ""));
  if (!data.list.length) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "No numeric values to draw"));
    host.append(root);
    return root;
  }
  if (vis === "piechart") drawPie(root, data);
  else drawXY(root, data, vis, render.kind || (vis === "stackedareachart" ? "stacked" : "default"));
  const legend = el("div", { class: "legend" }, data.list.map((s, i) =>
    el("span", { class: "legend-item" }, el("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }), s.name)));
  host.append(root, legend);
  return root;
}

function drawXY(root, data, vis, kind) {
  const horizontal = vis === "barchart";
  const bars = vis === "columnchart" || vis === "barchart";
  const stacked = (kind === "stacked" || kind === "stacked100") && (bars || vis === "areachart" || vis === "stackedareachart");
  const list = stacked ? stack(data.list, kind) : data.list.map((s) => ({ name: s.name, points: s.points.map((p) => [...p, 0]) }));
  let xs = [], ys = [0];
  for (const s of list) for (const [x, y, , lo] of s.points) { xs.push(x); ys.push(y, lo); }
  let [x0, x1] = bars ? [-0.5, Math.max(...xs) + 0.5] : nice(Math.min(...xs), Math.max(...xs));
  let [y0, y1] = nice(Math.min(...ys), Math.max(...ys));
  const pw = W - M.l - M.r, ph = H - M.t - M.b;
  const sx = (v) => M.l + ((v - x0) / (x1 - x0)) * pw;
  const sy = (v) => M.t + ph - ((v - y0) / (y1 - y0)) * ph;
  // horizontal bars: categories on the vertical axis, values on the horizontal one
  const hx = (v) => M.l + ((v - y0) / (y1 - y0)) * pw;
  const hy = (v) => M.t + ((v - x0) / (x1 - x0)) * ph;
  const axes = svg("g", { class: "axes" });
  axes.append(svg("line", { x1: M.l, y1: M.t + ph, x2: M.l + pw, y2: M.t + ph, stroke: "#999" }));
  axes.append(svg("line", { x1: M.l, y1: M.t, x2: M.l, y2: M.t + ph, stroke: "#999" }));
  for (let i = 0; i <= 4; i++) {
    const v = y0 + ((y1 - y0) * i) / 4;
    if (horizontal) axes.append(svg("text", { x: hx(v), y: H - 22, "text-anchor": "middle", class: "tick" }, axisLabel(v, false, false)));
    else axes.append(svg("text", { x: M.l - 6, y: sy(v) + 4, "text-anchor": "end", class: "tick" }, axisLabel(v, false, false)));
  }
  const xticks = bars ? data.categories.map((_, i) => i).filter((i) => data.categories.length <= 12 || i % Math.ceil(data.categories.length / 12) === 0)
    : [0, 1, 2, 3, 4].map((i) => x0 + ((x1 - x0) * i) / 4);
  for (const v of xticks) {
    const label = axisLabel(v, data.isTime, data.categorical, data.categories);
    if (horizontal) axes.append(svg("text", { x: M.l - 6, y: hy(v) + 4, "text-anchor": "end", class: "tick" }, label));
    else axes.append(svg("text", { x: sx(v), y: H - 22, "text-anchor": "middle", class: "tick" }, label));
  }
  root.append(axes);
  const n = list.length;
  list.forEach((s, si) => {
    const color = COLORS[si % COLORS.length];
    const g = svg("g", { class: "series", "data-series": s.name });
    if (bars) {
      const band = (horizontal ? ph : pw) / (x1 - x0);
      const width = stacked ? band * 0.7 : (band * 0.7) / n;
      for (const [x, y, , lo] of s.points) {
        const off = stacked ? -width / 2 : -band * 0.35 + si * width;
        const tip = svg("title", {}, `${s.name}: ${y - lo}`);
        if (horizontal) {
          g.append(svg("rect", { class: "bar pt", x: hx(Math.min(lo, y)), y: hy(x) + off, width: Math.abs(hx(y) - hx(lo)), height: width, fill: color }, tip));
        } else {
          g.append(svg("rect", { class: "bar pt", x: sx(x) + off, y: sy(Math.max(lo, y)), width, height: Math.abs(sy(lo) - sy(y)), fill: color }, tip));
        }
      }
    } else {
      const pts = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
      if (vis === "areachart" || vis === "stackedareachart") {
        const lower = s.points.slice().reverse().map(([x, , , lo]) => `${sx(x).toFixed(1)},${sy(lo).toFixed(1)}`);
        g.append(svg("polygon", { class: "area", points: pts.concat(lower).join(" "), fill: color, "fill-opacity": 0.35, stroke: "none" }));
      }
      if (vis !== "scatterchart") g.append(svg("polyline", { class: "line", points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 1.6 }));
      for (const [x, y] of s.points) {
        g.append(svg("circle", { class: "pt", cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: vis === "scatterchart" ? 3.5 : 2.5, fill: color },
          svg("title", {}, `${s.name}: ${axisLabel(x, data.isTime, data.categorical, data.categories)} → ${y}`)));
      }
    }
    root.append(g);
  });
}

function drawPie(root, data) {
  // one slice per category (the first series' values)
  const s = data.list[0];
  const total = s.points.reduce((a, [, y]) => a + Math.max(0, y), 0) || 1;
  const cx = W / 2, cy = (H + M.t) / 2, r = Math.min(W, H - M.t) / 2 - 20;
  let angle = -Math.PI / 2;
  s.points.forEach(([x, y], i) => {
    const frac = Math.max(0, y) / total;
    const a2 = angle + frac * 2 * Math.PI;
    const large = frac > 0.5 ? 1 : 0;
    const p1 = [cx + r * Math.cos(angle), cy + r * Math.sin(angle)], p2 = [cx + r * Math.cos(a2), cy + r * Math.sin(a2)];
    const d = frac >= 0.9999 ? `M ${cx - r} ${cy} a ${r} ${r} 0 1 0 ${2 * r} 0 a ${r} ${r} 0 1 0 ${-2 * r} 0`
      : `M ${cx} ${cy} L ${p1[0].toFixed(1)} ${p1[1].toFixed(1)} A ${r} ${r} 0 ${large} 1 ${p2[0].toFixed(1)} ${p2[1].toFixed(1)} Z`;
    const label = data.categorical ? data.categories[x] : String(x);
    root.append(svg("path", { class: "slice pt", d, fill: COLORS[i % COLORS.length], stroke: "#fff" },
      svg("title", {}, `${label}: ${y} (${(frac * 100).toFixed(1)}%)`)));
    angle = a2;
  });
  data.list = s.points.map(([x]) => ({ name: data.categorical ? data.categories[x] : String(x) }));
}
