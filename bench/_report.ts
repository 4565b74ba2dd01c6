/**
 * Renders benchmark results: a plain-text table for the terminal, the targets tables (issues 3
 * and 7, issue 8, issue 10), and an SVG bar chart of the ratios to direct that a browser can open.
 *
 * ```ts
 * import { renderTable } from "./_report.ts";
 * console.log(renderTable([], [], ["direct", "reuse"]));
 * ```
 *
 * @module
 */

import { type FigureRow, goalForRow, type GoalResult, goalsForRow } from "./_figures.ts";
import { formatNumber, formatRatio } from "./_stats.ts";

/**
 * Lays out rows of cells as aligned columns: the first `leftColumns` and the last
 * `trailingLeft` columns left-aligned, the others right-aligned.
 */
export function alignColumns(rows: string[][], leftColumns = 1, trailingLeft = 0): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => widths[i] = Math.max(widths[i] ?? 0, c.length));
  const firstTrailing = widths.length - trailingLeft;
  return rows.map((r) =>
    r.map((c, i) =>
      i < leftColumns || i >= firstTrailing ? c.padEnd(widths[i]) : c.padStart(widths[i])
    ).join("  ").trimEnd()
  ).join("\n");
}

function goalMark(g: GoalResult | undefined): string {
  if (!g) return "";
  const sign = g.bound === "max" ? "<=" : ">=";
  const verdict = g.met === null ? "not measured" : g.met ? "met" : "NOT MET";
  const limit = `${sign}${g.threshold}${g.unit === "x" ? "x" : ` ${g.unit}`}`;
  if (g.baseline === "direct") return `${limit}: ${verdict}`;
  const measured = g.measured === null ? "" : ` (${g.measured.toFixed(3)}x)`;
  return `${g.column} ${limit} ${g.baseline}${measured}: ${verdict}`;
}

/**
 * The main table: one row per workload and figure; a column per target with its value and, for
 * proxies, the ratio to direct; the last column marks the issue's target for that row (headed
 * `targetHeader`).
 */
export function renderTable(
  rows: FigureRow[],
  goals: GoalResult[],
  columns: string[],
  targetHeader = "target (reuse)",
): string {
  const header = ["workload", "figure", ...columns, targetHeader];
  const out: string[][] = [header];
  let last = "";
  for (const r of rows) {
    const title = r.workload === last ? "" : r.title;
    last = r.workload;
    const cells = columns.map((c) => {
      const v = r.values[c];
      if (v === null || v === undefined) return "-";
      const ratio = r.ratios[c];
      return ratio === null || ratio === undefined
        ? formatNumber(v)
        : `${formatNumber(v)} (${formatRatio(ratio)})`;
    });
    const unit = r.unit && r.unit !== "1/s" ? ` [${r.unit}]` : "";
    out.push([title, `${r.label}${unit}`, ...cells, goalMark(goalForRow(goals, r))]);
  }
  return alignColumns(out, 2);
}

/**
 * A targets table: each target with the measured value and met / NOT MET / not measured (with
 * the reason, when known).
 */
export function renderGoals(goals: GoalResult[]): string {
  const out: string[][] = [["workload", "figure", "target", "mode", "measured", "result"]];
  for (const g of goals) {
    const measured = g.measured === null ? "-" : g.unit === "x"
      ? `${g.measured.toFixed(3)}x` // three decimals: 0.646 must not read as a met 0.65
      : `${formatNumber(g.measured)} ${g.unit}`;
    const result = g.met === null
      ? `not measured${g.note ? ` (${g.note})` : ""}`
      : g.met
      ? "met"
      : "NOT MET";
    out.push([g.workload, g.figure, g.target, g.mode, measured, result]);
  }
  return alignColumns(out, 4, 1);
}

const COLORS: Record<string, string> = {
  off: "#9e9e9e",
  warm: "#f2a93b",
  reuse: "#2e7d32",
  relay: "#6d4c41",
  haproxy: "#1565c0",
  socat: "#8e44ad",
  "reuse-raw": "#8bc34a",
  "reuse-redis": "#00838f",
  "reuse-plain": "#a5d6a7",
};

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/**
 * An SVG bar chart: for each headline figure that has a ratio to direct (medians, rates,
 * throughput), for the memory per session and for the proxy CPU per operation, one bar per proxy
 * column, a line at 1.0x (direct), and a dashed line at each target that judges the figure (for
 * a target relative to another column, such as reuse-redis against reuse-raw or off against
 * relay, at the threshold times that column's bar).
 */
export function renderSvg(
  rows: FigureRow[],
  goals: GoalResult[],
  columns: string[],
  subtitle: string,
): string {
  const proxies = columns.filter((c) => c !== "direct");
  // the headline figures only (the p99s are in the table and the JSON)
  const ratioRows = rows.filter((r) =>
    r.key !== "p99Ms" && proxies.some((c) => r.ratios[c] != null)
  );
  const memRows = rows.filter((r) =>
    r.key === "kibPerSession" && proxies.some((c) => r.values[c] != null)
  );
  const cpuRows = rows.filter((r) =>
    r.key === "cpuUsPerOp" && proxies.some((c) => r.values[c] != null)
  );
  const W = 980, labelW = 330, plotX = labelW + 10, plotW = W - plotX - 90;
  const barH = 13, gap = 3, blockPad = 30;
  const parts: string[] = [];
  let y = 64;

  const allRatios = ratioRows.flatMap((r) => proxies.map((c) => r.ratios[c] ?? 0));
  /**
   * Where a goal's line sits on a block's axis (`unit`: `x` for ratios to direct, else the
   * figure's own unit, whose values `value` gives); null when it cannot be drawn.
   */
  const targetAt = (
    g: GoalResult,
    unit: string,
    value: (c: string) => number | null,
  ): number | null => {
    if (g.unit !== "x") return g.unit === unit ? g.threshold : null;
    if (g.baseline === "direct") return unit === "x" ? g.threshold : null;
    const base = value(g.baseline);
    return base == null ? null : g.threshold * base;
  };
  const ratioTargets = ratioRows.flatMap((r) =>
    goalsForRow(goals, r).flatMap((g) => {
      const t = targetAt(g, "x", (c) => r.ratios[c] ?? null);
      return t === null ? [] : [t];
    })
  );
  const ratioMax = Math.max(1.2, ...allRatios, ...ratioTargets) * 1.08;

  const block = (r: FigureRow, value: (c: string) => number | null, max: number, unit: string) => {
    const better = r.better === "lower" ? "lower is better" : "higher is better";
    const title = `${r.title}: ${r.label} (${better})`;
    parts.push(`<text x="10" y="${y + 12}" class="t">${esc(title)}</text>`);
    const top = y + 18;
    const bars = proxies.filter((c) => value(c) !== null);
    const h = bars.length * (barH + gap);
    bars.forEach((c, i) => {
      const v = value(c) ?? 0;
      const by = top + i * (barH + gap);
      const bw = Math.max(1, (v / max) * plotW);
      parts.push(`<text x="${plotX - 6}" y="${by + barH - 3}" class="l">${esc(c)}</text>`);
      parts.push(
        `<rect x="${plotX}" y="${by}" width="${bw.toFixed(1)}" height="${barH}" fill="${
          COLORS[c] ?? "#555"
        }"/>`,
      );
      const label = unit === "x" ? formatRatio(v) : `${formatNumber(v)} ${unit}`;
      parts.push(
        `<text x="${(plotX + bw + 4).toFixed(1)}" y="${by + barH - 3}" class="v">${label}</text>`,
      );
    });
    if (unit === "x") {
      const x1 = plotX + (1 / max) * plotW;
      parts.push(
        `<line x1="${x1.toFixed(1)}" y1="${top - 3}" x2="${x1.toFixed(1)}" y2="${
          top + h
        }" class="direct"/>`,
      );
    }
    let labels = 0;
    for (const g of goalsForRow(goals, r)) {
      const at = targetAt(g, unit, value);
      if (at === null) continue;
      const xt = Math.min(plotX + plotW + 40, plotX + (at / max) * plotW);
      const sign = g.bound === "max" ? "≤" : "≥";
      const what = g.baseline === "direct"
        ? `${g.threshold}${g.unit === "x" ? "x" : " " + g.unit} (${g.column})`
        : `${g.threshold}x ${g.baseline} (${g.column})`;
      parts.push(
        `<line x1="${xt.toFixed(1)}" y1="${top - 3}" x2="${xt.toFixed(1)}" y2="${
          top + h
        }" class="goal"/>`,
      );
      parts.push(
        `<text x="${Math.min(xt + 3, W - 230).toFixed(1)}" y="${
          top + h + 10 + labels * 12
        }" class="g">target ${sign}${esc(what)}, issue ${g.issue}</text>`,
      );
      labels++;
    }
    y = top + h + blockPad + Math.max(0, labels - 1) * 12;
  };

  for (const r of ratioRows) block(r, (c) => r.ratios[c] ?? null, ratioMax, "x");
  /** The axis of a block in the figure's own unit: its bars and its targets' lines. */
  const valueMax = (r: FigureRow, unit: string) => {
    const value = (c: string) => r.values[c] ?? null;
    const targets = goalsForRow(goals, r).map((g) => targetAt(g, unit, value) ?? 0);
    return Math.max(...proxies.map((c) => r.values[c] ?? 0), ...targets, 1) * 1.08;
  };
  for (const r of memRows) block(r, (c) => r.values[c] ?? null, valueMax(r, "KiB"), "KiB");
  for (const r of cpuRows) block(r, (c) => r.values[c] ?? null, valueMax(r, "µs"), "µs");

  const shown = proxies.filter((c) =>
    ratioRows.some((r) => r.ratios[c] != null) ||
    [...memRows, ...cpuRows].some((r) => r.values[c] != null)
  );
  const legend = shown.map((c, i) =>
    `<rect x="${10 + i * 110}" y="${y}" width="12" height="12" fill="${COLORS[c] ?? "#555"}"/>` +
    `<text x="${26 + i * 110}" y="${y + 11}" class="l2">${esc(c)}</text>`
  ).join("");
  const note = `<text x="10" y="${y + 32}" class="s">Grey line: direct to the upstream (1.0x). ` +
    `Dashed red lines: the targets (issue 3: reuse; issue 7: reuse-redis against reuse-raw; ` +
    `issue 8: against relay, HAProxy, off; issue 10: TLS, against off and reuse-plain).</text>`;
  const H = y + 48;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
    `font-family="sans-serif">
<style>
.h{font-size:18px;font-weight:bold}.s{font-size:12px;fill:#555}.t{font-size:13px;font-weight:bold}
.l{font-size:12px;text-anchor:end}.l2{font-size:12px}
.v{font-size:11px;paint-order:stroke;stroke:white;stroke-width:3px}.g{font-size:11px;fill:#c62828}
.direct{stroke:#444;stroke-width:1.5}.goal{stroke:#c62828;stroke-width:1.5;stroke-dasharray:5,3}
</style>
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="24" class="h">tcp-pool-proxy benchmark: ratio to direct</text>
<text x="10" y="44" class="s">${esc(subtitle)}</text>
${parts.join("\n")}
${legend}
${note}
</svg>
`;
}
