/**
 * Download progress on a terminal: one line per file with a bar, bytes done of the
 * total, the rate and the time left, redrawn in place.
 *
 * @module
 */

import type { DownloadProgress } from "./hub_download.ts";

// ---------------------------------------------------------------------------
// Progress bar

function formatBytes(n: number): string {
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

function formatSeconds(s: number): string {
  s = Math.round(s);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * One line of download progress: name, bar, bytes done/total, rate in MB/s and ETA.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { formatDownloadProgress } from "./hub_progress.ts";
 * const line = formatDownloadProgress({
 *   file: "model.safetensors",
 *   done: 50e6,
 *   total: 100e6,
 *   received: 50e6,
 *   elapsedMs: 5000,
 *   state: "downloading",
 * });
 * assert.match(line, /50\.0 MB\/100\.0 MB +10\.0 MB\/s +ETA 5s/);
 * ```
 */
export function formatDownloadProgress(p: DownloadProgress, width: number = 24): string {
  if (p.state === "cached") return `${p.file}  ${formatBytes(p.done)}  already complete`;
  const seconds = p.elapsedMs / 1000;
  const rate = seconds > 0 ? p.received / seconds : 0; // bytes/s
  let bar = "";
  let size = formatBytes(p.done);
  if (p.total !== undefined && p.total > 0) {
    const filled = Math.min(width, Math.round((p.done / p.total) * width));
    bar = ` [${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
    size = `${formatBytes(p.done)}/${formatBytes(p.total)}`;
  }
  let tail = "";
  if (p.state === "done") tail = "  done";
  else if (p.total !== undefined && rate > 0) {
    tail = `  ETA ${formatSeconds(Math.max(0, p.total - p.done) / rate)}`;
  }
  return `${p.file}${bar}  ${size}  ${(rate / 1e6).toFixed(1)} MB/s${tail}`;
}

/** Options of {@linkcode DownloadProgressBar}. */
export interface ProgressBarOptions {
  /** Where the text goes. Default: stderr. */
  write?: (text: string) => void;
  /** Least time between two redraws of the same file's line. Default 100 ms (10 a second). */
  minIntervalMs?: number;
  /** The clock, in ms. Default `performance.now`. */
  now?: () => number;
  /**
   * Draw every update on one line, whatever its file (a whole pull's progress, whose `file`
   * is the one being fetched). Default false: one line per file.
   */
  oneLine?: boolean;
}

/**
 * A download progress bar on one terminal line, redrawn with `\r` at most every
 * `minIntervalMs`; a file's last state (done or already complete) is always drawn and ends
 * its line. Pass its `update` as {@linkcode DownloadOptions.onProgress}.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { DownloadProgressBar } from "./hub_progress.ts";
 * let out = "";
 * const bar = new DownloadProgressBar({ write: (t) => (out += t), now: () => 0 });
 * const p = { file: "a", done: 1, total: 2, received: 1, elapsedMs: 1, state: "downloading" as const };
 * bar.update(p);
 * bar.update({ ...p, done: 2 }); // same instant: not drawn
 * bar.update({ ...p, done: 2, state: "done" });
 * assert.equal(out.split("\r").length - 1, 2);
 * assert.ok(out.endsWith("\n"));
 * ```
 */
export class DownloadProgressBar {
  #write: (text: string) => void;
  #minIntervalMs: number;
  #now: () => number;
  #file: string | undefined;
  #lastDraw = -Infinity;
  #lastLength = 0;
  #lineOpen = false;
  #oneLine: boolean;

  /** A bar drawing to `options.write` (stderr by default). */
  constructor(options: ProgressBarOptions = {}) {
    const encoder = new TextEncoder();
    this.#write = options.write ?? ((text) => {
      const bytes = encoder.encode(text);
      let done = 0;
      while (done < bytes.length) done += Deno.stderr.writeSync(bytes.subarray(done));
    });
    this.#minIntervalMs = options.minIntervalMs ?? 100;
    this.#now = options.now ?? (() => performance.now());
    this.#oneLine = options.oneLine ?? false;
  }

  /** Draw `p` if it is a final state, a new line, or enough time has passed. */
  update(p: DownloadProgress): void {
    const now = this.#now();
    const final = p.state !== "downloading";
    const sameLine = this.#oneLine ? this.#lineOpen : p.file === this.#file;
    if (!final && sameLine && now - this.#lastDraw < this.#minIntervalMs) return;
    if (!sameLine && this.#lineOpen) this.#write("\n");
    const line = formatDownloadProgress(p);
    const pad = sameLine ? " ".repeat(Math.max(0, this.#lastLength - line.length)) : "";
    this.#write(`\r${line}${pad}${final ? "\n" : ""}`);
    this.#file = p.file;
    this.#lastDraw = now;
    this.#lastLength = line.length;
    this.#lineOpen = !final;
  }
}
