/**
 * Tiny SVG charts for the benchmarks: a line chart (e.g. throughput vs chunk size, one
 * line per depth, like *LLM in a Flash* Figure 2b) and a grouped bar chart (e.g.
 * tokens/s per mode). Plain strings in, a standalone SVG document out; no dependencies.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Shared pieces

/** A tick on an axis: where it is and what it says. */
export interface Tick {
  /** Position in data units. */
  value: number;
  /** Text under (or beside) the tick. */
  label: string;
}

/** Distinct colours for up to 10 series (then they repeat). */
const PALETTE = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
];

const FONT = 'font-family="sans-serif"';

/**
 * `s` with `& < > "` escaped for SVG text and attributes.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { escapeXml } from "./svg_chart.ts";
 * assert.equal(escapeXml('a<b & "c"'), "a&lt;b &amp; &quot;c&quot;");
 * ```
 */
export function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

/**
 * About `count` round ticks (1, 2, 2.5 or 5 times a power of ten) from 0 to at least
 * `max`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { niceTicks } from "./svg_chart.ts";
 * assert.deepEqual(niceTicks(9.3, 5).map((t) => t.value), [0, 2, 4, 6, 8, 10]);
 * ```
 */
export function niceTicks(max: number, count = 5): Tick[] {
  if (!(max > 0)) max = 1;
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw)!;
  const ticks: Tick[] = [];
  for (let i = 0; i * step < max + step * 0.999; i++) {
    const value = Number((i * step).toPrecision(12));
    ticks.push({ value, label: String(value) });
  }
  return ticks;
}

function header(width: number, height: number, title: string): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" ${FONT}>${
      escapeXml(title)
    }</text>`,
  ];
}

/** Axes, grid and y ticks of a plot area; returns SVG lines. */
function axes(
  box: { left: number; top: number; width: number; height: number },
  yTicks: Tick[],
  yOf: (v: number) => number,
  xLabel: string,
  yLabel: string,
): string[] {
  const out: string[] = [];
  const { left, top, width, height } = box;
  for (const t of yTicks) {
    const y = yOf(t.value);
    out.push(
      `<line x1="${left}" y1="${y}" x2="${left + width}" y2="${y}" stroke="#ddd"/>`,
      `<text x="${left - 6}" y="${y + 4}" text-anchor="end" font-size="11" ${FONT}>${
        escapeXml(t.label)
      }</text>`,
    );
  }
  out.push(
    `<line x1="${left}" y1="${top + height}" x2="${left + width}" y2="${
      top + height
    }" stroke="black"/>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${top + height}" stroke="black"/>`,
    `<text x="${left + width / 2}" y="${
      top + height + 38
    }" text-anchor="middle" font-size="12" ${FONT}>${escapeXml(xLabel)}</text>`,
    `<text transform="translate(16 ${
      top + height / 2
    }) rotate(-90)" text-anchor="middle" font-size="12" ${FONT}>${escapeXml(yLabel)}</text>`,
  );
  return out;
}

function legend(names: string[], x: number, y: number): string[] {
  return names.flatMap((name, i) => [
    `<rect x="${x}" y="${y + i * 18 - 9}" width="14" height="10" fill="${
      PALETTE[i % PALETTE.length]
    }"/>`,
    `<text x="${x + 20}" y="${y + i * 18}" font-size="11" ${FONT}>${escapeXml(name)}</text>`,
  ]);
}

// ---------------------------------------------------------------------------
// Line chart

/** One line of a {@linkcode lineChart}. */
export interface LineSeries {
  /** Legend text. */
  name: string;
  /** Points as `[x, y]`, in x order; a `NaN` y leaves a gap. */
  points: [number, number][];
}

/** Options of {@linkcode lineChart}. */
export interface LineChartOptions {
  /** Title above the plot. */
  title: string;
  /** Label of the x axis. */
  xLabel: string;
  /** Label of the y axis. */
  yLabel: string;
  /** The lines. */
  series: LineSeries[];
  /** Logarithmic x axis (e.g. chunk sizes in powers of two). Default false. */
  xLog?: boolean;
  /** x ticks; default the distinct x values of the data. */
  xTicks?: Tick[];
  /** Width in pixels. Default 720. */
  width?: number;
  /** Height in pixels. Default 440. */
  height?: number;
}

/**
 * A line chart as a standalone SVG document; y starts at 0.
 *
 * @example Throughput vs chunk size, one line per depth
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { lineChart } from "./svg_chart.ts";
 * const svg = lineChart({
 *   title: "random reads",
 *   xLabel: "chunk size (KiB)",
 *   yLabel: "MB/s",
 *   xLog: true,
 *   series: [
 *     { name: "depth 1", points: [[4, 50], [32, 300], [128, 800]] },
 *     { name: "depth 16", points: [[4, 400], [32, 1800], [128, 3000]] },
 *   ],
 * });
 * assert(svg.startsWith("<svg") && svg.includes("depth 16") && svg.includes("<polyline"));
 * ```
 */
export function lineChart(options: LineChartOptions): string {
  const width = options.width ?? 720, height = options.height ?? 440;
  const box = { left: 70, top: 40, width: width - 70 - 150, height: height - 40 - 60 };
  const xs = [...new Set(options.series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) =>
    a - b
  );
  const fx = (x: number): number => (options.xLog ? Math.log(x) : x);
  const x0 = fx(xs[0] ?? 0), x1 = fx(xs[xs.length - 1] ?? 1);
  const xOf = (x: number): number =>
    box.left + (x1 === x0 ? box.width / 2 : ((fx(x) - x0) / (x1 - x0)) * box.width);
  const yMax = Math.max(
    0,
    ...options.series.flatMap((s) => s.points.map((p) => p[1]).filter(Number.isFinite)),
  );
  const yTicks = niceTicks(yMax);
  const yTop = yTicks[yTicks.length - 1].value;
  const yOf = (y: number): number => box.top + box.height - (y / yTop) * box.height;

  const out = header(width, height, options.title);
  out.push(...axes(box, yTicks, yOf, options.xLabel, options.yLabel));
  const xTicks = options.xTicks ?? xs.map((x) => ({ value: x, label: String(x) }));
  for (const t of xTicks) {
    const x = xOf(t.value);
    out.push(
      `<line x1="${x}" y1="${box.top + box.height}" x2="${x}" y2="${
        box.top + box.height + 5
      }" stroke="black"/>`,
      `<text x="${x}" y="${
        box.top + box.height + 18
      }" text-anchor="middle" font-size="11" ${FONT}>${escapeXml(t.label)}</text>`,
    );
  }
  options.series.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    // Split at NaN so a missing point leaves a gap.
    let piece: string[] = [];
    const flush = (): void => {
      if (piece.length > 1) {
        out.push(
          `<polyline fill="none" stroke="${colour}" stroke-width="2" points="${piece.join(" ")}"/>`,
        );
      }
      piece = [];
    };
    for (const [x, y] of s.points) {
      if (!Number.isFinite(y)) {
        flush();
        continue;
      }
      const px = xOf(x).toFixed(1), py = yOf(y).toFixed(1);
      piece.push(`${px},${py}`);
      out.push(`<circle cx="${px}" cy="${py}" r="3" fill="${colour}"/>`);
    }
    flush();
  });
  out.push(...legend(options.series.map((s) => s.name), box.left + box.width + 16, box.top + 10));
  out.push("</svg>");
  return out.join("\n") + "\n";
}

// ---------------------------------------------------------------------------
// Bar chart

/** Options of {@linkcode barChart}. */
export interface BarChartOptions {
  /** Title above the plot. */
  title: string;
  /** Label of the y axis. */
  yLabel: string;
  /** Label of the x axis (under the groups). Default none. */
  xLabel?: string;
  /** Group names along the x axis (e.g. models). */
  groups: string[];
  /** One bar per series in every group; `values[g]` is the bar in group g (`NaN`: none). */
  series: { name: string; values: number[] }[];
  /** Print each bar's value above it. Default true. */
  showValues?: boolean;
  /** Width in pixels. Default 720. */
  width?: number;
  /** Height in pixels. Default 440. */
  height?: number;
}

/**
 * A grouped bar chart as a standalone SVG document; y starts at 0.
 *
 * @example tokens/s per mode for two models
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { barChart } from "./svg_chart.ts";
 * const svg = barChart({
 *   title: "generation speed",
 *   yLabel: "tokens/s",
 *   groups: ["opt-125m", "opt-1.3b"],
 *   series: [
 *     { name: "naive", values: [3.1, 0.4] },
 *     { name: "flashlm", values: [21.5, 4.2] },
 *   ],
 * });
 * assert(svg.startsWith("<svg") && svg.includes("flashlm") && svg.includes("21.5"));
 * ```
 */
export function barChart(options: BarChartOptions): string {
  const width = options.width ?? 720, height = options.height ?? 440;
  const box = { left: 70, top: 40, width: width - 70 - 150, height: height - 40 - 60 };
  const yMax = Math.max(0, ...options.series.flatMap((s) => s.values.filter(Number.isFinite)));
  const yTicks = niceTicks(yMax);
  const yTop = yTicks[yTicks.length - 1].value;
  const yOf = (y: number): number => box.top + box.height - (y / yTop) * box.height;

  const out = header(width, height, options.title);
  out.push(...axes(box, yTicks, yOf, options.xLabel ?? "", options.yLabel));
  const groupWidth = box.width / Math.max(1, options.groups.length);
  const barWidth = (groupWidth * 0.8) / Math.max(1, options.series.length);
  options.groups.forEach((group, g) => {
    const gx = box.left + g * groupWidth;
    out.push(
      `<text x="${gx + groupWidth / 2}" y="${
        box.top + box.height + 18
      }" text-anchor="middle" font-size="11" ${FONT}>${escapeXml(group)}</text>`,
    );
    options.series.forEach((s, i) => {
      const v = s.values[g];
      if (!Number.isFinite(v)) return;
      const x = gx + groupWidth * 0.1 + i * barWidth;
      const y = yOf(v);
      out.push(
        `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${barWidth.toFixed(1)}" height="${
          (box.top + box.height - y).toFixed(1)
        }" fill="${PALETTE[i % PALETTE.length]}"/>`,
      );
      if (options.showValues ?? true) {
        out.push(
          `<text x="${(x + barWidth / 2).toFixed(1)}" y="${
            (y - 4).toFixed(1)
          }" text-anchor="middle" font-size="10" ${FONT}>${escapeXml(formatValue(v))}</text>`,
        );
      }
    });
  });
  out.push(...legend(options.series.map((s) => s.name), box.left + box.width + 16, box.top + 10));
  out.push("</svg>");
  return out.join("\n") + "\n";
}

function formatValue(v: number): string {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toPrecision(2);
}

// ---------------------------------------------------------------------------
// Stacked bar chart

/** Options of {@linkcode stackedBarChart}. */
export interface StackedBarChartOptions {
  /** Title above the plot. */
  title: string;
  /** Label of the y axis. */
  yLabel: string;
  /** One bar per name, along the x axis (e.g. configurations). */
  bars: string[];
  /** The stacked parts, bottom first; `values[b]` is the part's height in bar b. */
  parts: { name: string; values: number[] }[];
  /** Print each bar's total above it. Default true. */
  showTotals?: boolean;
  /** Width in pixels. Default 760. */
  width?: number;
  /** Height of the plot and title in pixels, without the bar labels below it. Default 370. */
  height?: number;
}

/**
 * A stacked bar chart (e.g. the latency breakdown per configuration: I/O, memory
 * management, compute) as a standalone SVG document; y starts at 0. Negative or
 * non-finite parts count as 0.
 *
 * @example Latency per token of two configurations
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { stackedBarChart } from "./svg_chart.ts";
 * const svg = stackedBarChart({
 *   title: "latency per token",
 *   yLabel: "ms",
 *   bars: ["naive", "flashlm"],
 *   parts: [
 *     { name: "I/O", values: [90, 4] },
 *     { name: "compute", values: [30, 6] },
 *   ],
 * });
 * assert(svg.startsWith("<svg") && svg.includes("flashlm") && svg.includes(">120<"));
 * ```
 */
export function stackedBarChart(options: StackedBarChartOptions): string {
  // Bar labels are slanted 30°: room below the axis for the longest (~6 px per character).
  const bottom = Math.max(90, 24 + 3.2 * Math.max(0, ...options.bars.map((b) => b.length)));
  const width = options.width ?? 760, height = (options.height ?? 370) + bottom;
  const box = { left: 70, top: 40, width: width - 70 - 170, height: height - 40 - bottom };
  const part = (v: number): number => (Number.isFinite(v) && v > 0 ? v : 0);
  const totals = options.bars.map((_, b) =>
    options.parts.reduce((sum, p) => sum + part(p.values[b]), 0)
  );
  const yTicks = niceTicks(Math.max(0, ...totals));
  const yTop = yTicks[yTicks.length - 1].value;
  const yOf = (y: number): number => box.top + box.height - (y / yTop) * box.height;

  const out = header(width, height, options.title);
  out.push(...axes(box, yTicks, yOf, "", options.yLabel));
  const slot = box.width / Math.max(1, options.bars.length);
  const barWidth = slot * 0.6;
  options.bars.forEach((bar, b) => {
    const x = box.left + b * slot + (slot - barWidth) / 2;
    let base = 0;
    options.parts.forEach((p, i) => {
      const v = part(p.values[b]);
      if (v === 0) return;
      const y0 = yOf(base), y1 = yOf(base + v);
      out.push(
        `<rect x="${x.toFixed(1)}" y="${y1.toFixed(1)}" width="${barWidth.toFixed(1)}" height="${
          (y0 - y1).toFixed(1)
        }" fill="${PALETTE[i % PALETTE.length]}"><title>${
          escapeXml(`${bar} ${p.name}: ${formatValue(v)}`)
        }</title></rect>`,
      );
      base += v;
    });
    if (options.showTotals ?? true) {
      out.push(
        `<text x="${(x + barWidth / 2).toFixed(1)}" y="${
          (yOf(base) - 4).toFixed(1)
        }" text-anchor="middle" font-size="10" ${FONT}>${escapeXml(formatValue(base))}</text>`,
      );
    }
    const lx = x + barWidth / 2, ly = box.top + box.height + 14;
    out.push(
      `<text x="${
        lx.toFixed(1)
      }" y="${ly}" text-anchor="end" font-size="11" ${FONT} transform="rotate(-30 ${
        lx.toFixed(1)
      } ${ly})">${escapeXml(bar)}</text>`,
    );
  });
  out.push(...legend(options.parts.map((p) => p.name), box.left + box.width + 16, box.top + 10));
  out.push("</svg>");
  return out.join("\n") + "\n";
}
