/**
 * Pull a model from the Hugging Face hub: download `config.json`, the safetensors
 * checkpoint (one file, or every shard its `model.safetensors.index.json` names) and the
 * tokenizer files into a local cache, then convert them into a flashlm file.
 *
 * Files come from `${HF_ENDPOINT ?? "https://huggingface.co"}/<repo>/resolve/<revision>/<file>`,
 * the URLs the hub's own clients use; `HF_TOKEN` is sent as `Authorization: Bearer <token>`
 * (to the hub only, never to the CDN it redirects large files to).
 *
 * Every file is downloaded to `<file>.partial` and renamed to its final name only after its
 * size (and sha256, when the hub gives one) is verified and the bytes are flushed to disk, so
 * a file under its final name is always complete. A dropped connection is retried by resuming
 * with an HTTP `Range` request, and so is a `.partial` left over by an earlier, interrupted run.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { basename, dirname, isAbsolute, join } from "node:path";
import { convertHfToFlash } from "../core/convert.ts";
import { cacheDir } from "./demo_model.ts";
import { FlashlmError } from "../io/errors.ts";
import type { StorageDtype } from "../core/flash_format.ts";
import { writeAll } from "../io/atomic_write.ts";

// ---------------------------------------------------------------------------
// Options and progress

/** Where one file's download stands; passed to {@linkcode DownloadOptions.onProgress}. */
export interface DownloadProgress {
  /** The file's name in the repo (e.g. `model.safetensors`). */
  file: string;
  /** Bytes of the file on disk so far, resumed ones included. */
  done: number;
  /** The file's size, when the server said it. */
  total: number | undefined;
  /** Bytes received by this download (not counting resumed ones): the rate's numerator. */
  received: number;
  /** Milliseconds since this download started: the rate's denominator. */
  elapsedMs: number;
  /** `"downloading"`, then `"done"` once verified and in place; `"cached"` if it already was. */
  state: "downloading" | "done" | "cached";
}

/** Options of {@linkcode downloadFile} (and, through {@linkcode PullOptions}, of {@linkcode pullModel}). */
export interface DownloadOptions {
  /** Sent as `Authorization: Bearer <token>` to the hub's origin. Default `$HF_TOKEN`; `""` sends none. */
  token?: string;
  /** Attempts after the first when the connection drops or the server fails (5xx). Default 4. */
  retries?: number;
  /** Wait before the first retry; doubled for each next one. Default 500 ms. */
  retryDelayMs?: number;
  /** Called as bytes arrive (often: throttle the drawing, as {@linkcode DownloadProgressBar} does). */
  onProgress?: (progress: DownloadProgress) => void;
  /** The file's name in progress reports. Default: the basename of `dest`. */
  label?: string;
  /** Return `null` instead of throwing when the server answers 404. Default false. */
  optional?: boolean;
}

/** What {@linkcode downloadFile} did. */
export interface DownloadResult {
  /** The file's path (`dest`). */
  path: string;
  /** Its size in bytes. */
  size: number;
  /** Its sha256 (lowercase hex) when the hub gave one, which it then matches. */
  sha256: string | undefined;
  /** False when the file was already complete and nothing was fetched. */
  downloaded: boolean;
}

// ---------------------------------------------------------------------------
// Where things are

/** Default hub address, as in `huggingface_hub`. */
const DEFAULT_ENDPOINT = "https://huggingface.co";

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

/**
 * The hub's address: `$HF_ENDPOINT` (e.g. a mirror, or a local test server), else
 * `https://huggingface.co`, without a trailing slash.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hubEndpoint } from "./hub.ts";
 * assert.ok(!hubEndpoint().endsWith("/"));
 * ```
 */
export function hubEndpoint(): string {
  return (env("HF_ENDPOINT") ?? DEFAULT_ENDPOINT).replace(/\/+$/, "");
}

/**
 * The URL of `file` in model repo `repoId` at `revision`:
 * `<endpoint>/<repo>/resolve/<revision>/<file>` (the revision percent-encoded whole, so a
 * branch like `refs/pr/1` stays one path segment, as the hub expects).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hubFileUrl } from "./hub.ts";
 * assert.equal(
 *   hubFileUrl("https://huggingface.co", "facebook/opt-125m", "main", "config.json"),
 *   "https://huggingface.co/facebook/opt-125m/resolve/main/config.json",
 * );
 * ```
 */
export function hubFileUrl(
  endpoint: string,
  repoId: string,
  revision: string,
  file: string,
): string {
  const path = file.split("/").map(encodeURIComponent).join("/");
  return `${endpoint}/${repoId}/resolve/${encodeURIComponent(revision)}/${path}`;
}

/**
 * The local folder of a repo at a revision:
 * `<cache>/hub/<repo with "/" replaced by "--">/<revision, likewise>`.
 *
 * @param cache The cache root. Default {@linkcode cacheDir} (`$FLASHLM_CACHE`, ...).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hubCachePath } from "./hub.ts";
 * assert.equal(hubCachePath("facebook/opt-125m", "main", "/c"), "/c/hub/facebook--opt-125m/main");
 * ```
 */
export function hubCachePath(repoId: string, revision: string, cache: string = cacheDir()): string {
  return join(cache, "hub", repoId.replaceAll("/", "--"), revision.replaceAll("/", "--"));
}

/** `org/name` or `name`: letters, digits, `.`, `_`, `-` (the hub's rule), no `..`. */
function checkRepoId(repoId: string): void {
  const part = "[A-Za-z0-9][A-Za-z0-9._-]*";
  if (!new RegExp(`^${part}(/${part})?$`).test(repoId) || repoId.includes("..")) {
    throw new FlashlmError(
      `"${repoId}" is not a Hugging Face repo id (expected org/name, like facebook/opt-125m)`,
      { kind: "usage" },
    );
  }
}

/** A branch, tag or commit: no empty parts, no `..`, nothing that escapes the cache folder. */
function checkRevision(revision: string): void {
  if (
    !/^[A-Za-z0-9._/-]+$/.test(revision) || revision.split("/").some((p) => p === "" || p === "..")
  ) {
    throw new FlashlmError(`"${revision}" is not a revision (a branch, tag or commit hash)`, {
      kind: "usage",
    });
  }
}

// ---------------------------------------------------------------------------
// HTTP: requests, redirects, what the headers say

/** A failure worth retrying: a dropped connection, a 5xx, a 429. */
class Retryable extends Error {}

/** What the hub says about a file before it is fetched. */
interface RemoteInfo {
  /** Its size, if known, and which header said so (named in mismatch errors). */
  size: number | undefined;
  sizeFrom: string;
  /** Its sha256 (lowercase hex), for LFS files. */
  sha256: string | undefined;
}

/** The sha256 in an ETag (`"<64 hex>"`, maybe weak), or undefined (a git sha1, or anything else). */
function sha256FromEtag(etag: string | null): string | undefined {
  const value = etag?.replace(/^W\//, "").replaceAll('"', "").trim().toLowerCase();
  return value && /^[0-9a-f]{64}$/.test(value) ? value : undefined;
}

function parseCount(text: string | null): number | undefined {
  return text !== null && /^\d+$/.test(text.trim()) ? Number(text.trim()) : undefined;
}

/** `bytes 10-99/100` or `bytes *` + `/100` → the start and the total (undefined for `*`). */
function parseContentRange(
  text: string | null,
): { start: number | undefined; total: number | undefined } | undefined {
  const m = text?.trim().match(/^bytes\s+(?:(\d+)-\d+|\*)\/(\d+|\*)$/);
  if (!m) return undefined;
  return {
    start: m[1] === undefined ? undefined : Number(m[1]),
    total: m[2] === "*" ? undefined : Number(m[2]),
  };
}

/**
 * Send `method` to `url`, following redirects by hand so that the token goes to the hub's
 * origin only, and collecting the hub's `X-Linked-*` headers on the way (they are on the
 * redirect to the CDN, not on the CDN's answer). `stopAtLinked`: return the redirect that
 * carries them instead of following it (what a HEAD needs).
 */
async function request(
  method: "HEAD" | "GET",
  url: string,
  headers: Record<string, string>,
  token: string | undefined,
  stopAtLinked: boolean,
): Promise<{ res: Response; url: string; linkedSize?: number; linkedSha256?: string }> {
  const origin = new URL(url).origin;
  let linkedSize: number | undefined;
  let linkedSha256: string | undefined;
  for (let hop = 0; hop <= 10; hop++) {
    const h: Record<string, string> = {
      // Without this, fetch asks for gzip and unzips it: Content-Length would not be the file's.
      "accept-encoding": "identity",
      ...headers,
    };
    if (token && new URL(url).origin === origin) h.authorization = `Bearer ${token}`;
    let res: Response;
    try {
      res = await fetch(url, { method, headers: h, redirect: "manual" });
    } catch (err) {
      throw new Retryable(`cannot reach ${new URL(url).origin}: ${(err as Error).message}`);
    }
    linkedSize ??= parseCount(res.headers.get("x-linked-size"));
    linkedSha256 ??= sha256FromEtag(res.headers.get("x-linked-etag"));
    const location = res.headers.get("location");
    const redirect = res.status >= 300 && res.status < 400 && location !== null;
    if (!redirect || (stopAtLinked && linkedSize !== undefined)) {
      return { res, url, linkedSize, linkedSha256 };
    }
    await res.body?.cancel();
    url = new URL(location, url).href;
  }
  throw new FlashlmError(`more than 10 redirects`, { file: url, kind: "io" });
}

/** Turn a failed status into an error: 404 → `null` (the caller decides), 5xx → retry. */
async function failure(
  res: Response,
  url: string,
  token: string | undefined,
): Promise<FlashlmError | Retryable | null> {
  await res.body?.cancel();
  const hubMessage = res.headers.get("x-error-message");
  const said = hubMessage ? ` (the hub says: ${hubMessage})` : "";
  if (res.status === 404) return null;
  if (res.status === 401 || res.status === 403) {
    const advice = token
      ? "the HF_TOKEN sent has no access to it: check the token and accept the model's terms on the hub"
      : "the repo may not exist, or be private or gated: check its id, and set HF_TOKEN to a token with access";
    return new FlashlmError(`HTTP ${res.status} from the hub${said}: ${advice}`, {
      file: url,
      kind: "io",
    });
  }
  if (res.status >= 500 || res.status === 429) {
    return new Retryable(`HTTP ${res.status} ${res.statusText}${said}`);
  }
  return new FlashlmError(`unexpected HTTP ${res.status} ${res.statusText}${said}`, {
    file: url,
    kind: "io",
  });
}

/** HEAD the file: its size and sha256 as the hub states them, or `null` if it is not there. */
async function remoteInfo(url: string, token: string | undefined): Promise<RemoteInfo | null> {
  const { res, linkedSize, linkedSha256 } = await request("HEAD", url, {}, token, true);
  await res.body?.cancel();
  if (res.status >= 300 && !(linkedSize !== undefined && res.status < 400)) {
    const err = await failure(res, url, token);
    if (err === null) return null;
    throw err;
  }
  const direct = res.status < 300; // a 2xx, not a redirect: its headers describe the file itself
  const length = direct ? parseCount(res.headers.get("content-length")) : undefined;
  return {
    size: linkedSize ?? length,
    sizeFrom: linkedSize !== undefined ? "X-Linked-Size" : "Content-Length",
    sha256: linkedSha256 ?? (direct ? sha256FromEtag(res.headers.get("etag")) : undefined),
  };
}

// ---------------------------------------------------------------------------
// sha256 of a file

/**
 * The sha256 of the file at `path` (lowercase hex), read `chunkBytes` at a time so a
 * multi-gigabyte checkpoint never sits in memory (`node:crypto` hashes incrementally,
 * which WebCrypto's one-shot `digest` cannot).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sha256File } from "./hub.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "abc");
 * assert.equal(
 *   await sha256File(path),
 *   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
 * );
 * await Deno.remove(path);
 * ```
 */
export async function sha256File(path: string, chunkBytes: number = 1 << 20): Promise<string> {
  const hash = createHash("sha256");
  const file = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(chunkBytes);
    while (true) {
      const n = await file.read(buf);
      if (n === null) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    file.close();
  }
  return hash.digest("hex");
}

// ---------------------------------------------------------------------------
// Downloading one file

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await Deno.stat(path)).size;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new FlashlmError(`cannot stat: ${(err as Error).message}`, { file: path, kind: "io" });
  }
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** Whether `path` already holds the file the hub describes (size, and sha256 when known). */
async function isComplete(path: string, info: RemoteInfo): Promise<boolean> {
  const size = await sizeOf(path);
  if (size === undefined || info.size === undefined || size !== info.size) return false;
  return info.sha256 === undefined || (await sha256File(path)) === info.sha256;
}

/**
 * One attempt: bring `partial` closer to complete. Resumes from its current size with a
 * `Range` request; starts over if the server answers 200 (it ignored the range). Returns when
 * the server has sent everything it said it would; throws {@linkcode Retryable} if the
 * connection drops first.
 */
async function fetchInto(
  url: string,
  partial: string,
  info: RemoteInfo,
  token: string | undefined,
  onBytes: (done: number, n: number) => void,
): Promise<void> {
  let offset = (await sizeOf(partial)) ?? 0;
  if (info.size !== undefined && offset > info.size) {
    await removeIfPresent(partial); // longer than the file: not a prefix of it
    offset = 0;
  }
  if (info.size !== undefined && offset === info.size) return; // all there: verify it
  const range: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
  const { res } = await request("GET", url, range, token, false);

  let total: number | undefined;
  let totalFrom: string;
  if (res.status === 206) {
    const cr = parseContentRange(res.headers.get("content-range"));
    if (cr?.start !== offset) {
      await res.body?.cancel();
      await removeIfPresent(partial);
      throw new Retryable(`the server resumed at byte ${cr?.start} instead of ${offset}`);
    }
    total = cr.total;
    totalFrom = "Content-Range";
  } else if (res.status === 200) {
    offset = 0; // the server ignored the range: the body is the whole file
    total = parseCount(res.headers.get("content-length"));
    totalFrom = "Content-Length";
  } else if (res.status === 416) {
    await res.body?.cancel();
    const cr = parseContentRange(res.headers.get("content-range"));
    if (cr?.total === offset) return; // the partial file already holds every byte
    await removeIfPresent(partial);
    throw new Retryable(`the server cannot resume at byte ${offset}; starting over`);
  } else {
    const err = await failure(res, url, token);
    throw err ?? new FlashlmError(`not found on the hub`, { file: url, kind: "io" });
  }

  if (total !== undefined && info.size !== undefined && total !== info.size) {
    await res.body?.cancel();
    await removeIfPresent(partial);
    throw new FlashlmError(
      `the server's sizes disagree: ${info.sizeFrom} says ${info.size} bytes, ${totalFrom} says ${total}`,
      { file: url, kind: "io" },
    );
  }
  if (info.size === undefined && total !== undefined) {
    info.size = total;
    info.sizeFrom = totalFrom;
  }

  const file = await Deno.open(
    partial,
    offset === 0 ? { write: true, create: true, truncate: true } : { write: true, append: true },
  );
  let done = offset;
  try {
    if (res.body !== null) {
      try {
        for await (const chunk of res.body) {
          await writeAll(file, chunk);
          done += chunk.length;
          onBytes(done, chunk.length);
        }
      } catch (err) {
        if (err instanceof FlashlmError) throw err; // a local write failed: not a network problem
        throw new Retryable(
          `the connection dropped after ${done} of ${total ?? "?"} bytes (${
            (err as Error).message
          })`,
        );
      }
    }
  } finally {
    file.close();
  }
  if (total !== undefined && done < total) {
    throw new Retryable(`the connection closed after ${done} of ${total} bytes`);
  }
}

/**
 * Download `url` to `dest`, resumably and verified.
 *
 * The bytes go to `dest + ".partial"`; if that exists (an earlier run was interrupted) the
 * download resumes from its end with `Range: bytes=<size>-` (starting over if the server
 * answers 200). A dropped connection or a 5xx is retried `retries` times with exponential
 * backoff, each time resuming. At the end the size must equal what the hub said
 * (`X-Linked-Size`, else `Content-Length`/`Content-Range`) and the sha256 must equal the hub's
 * `X-Linked-ETag`/`ETag` when that is a sha256 (LFS files); only then is the file fsynced and
 * renamed to `dest`. A mismatch deletes the partial download and throws. If `dest` already
 * holds the right bytes, nothing is fetched but a HEAD.
 *
 * @returns What was done, or `null` if the server answered 404 and `options.optional` is set.
 * @throws {FlashlmError} on 404 ("not found on the hub"), 401/403 (mentioning HF_TOKEN), a
 *   size or sha256 mismatch, or once the retries are spent.
 *
 * @example Downloading from a local server
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { downloadFile } from "./hub.ts";
 * const body = new TextEncoder().encode('{"model_type": "opt"}');
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () =>
 *   new Response(body));
 * const dir = await Deno.makeTempDir();
 * const url = `http://127.0.0.1:${server.addr.port}/org/model/resolve/main/config.json`;
 * const result = await downloadFile(url, `${dir}/config.json`);
 * assert.equal(result?.size, body.length);
 * assert.equal(await Deno.readTextFile(`${dir}/config.json`), '{"model_type": "opt"}');
 * await server.shutdown();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function downloadFile(
  url: string,
  dest: string,
  options: DownloadOptions = {},
): Promise<DownloadResult | null> {
  const token = options.token ?? env("HF_TOKEN");
  const retries = options.retries ?? 4;
  const retryDelayMs = options.retryDelayMs ?? 500;
  const label = options.label ?? basename(dest);
  const partial = `${dest}.partial`;
  const started = performance.now();
  let info: RemoteInfo | null = null;
  let received = 0; // bytes fetched by this call, over all attempts
  const report = (state: DownloadProgress["state"], done: number): void =>
    options.onProgress?.({
      file: label,
      done,
      total: info?.size,
      received,
      elapsedMs: performance.now() - started,
      state,
    });

  let lastError: Retryable | undefined;
  let attempt = 0;
  for (; attempt <= retries; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, retryDelayMs * 2 ** (attempt - 1)));
    try {
      if (info === null) {
        info = await remoteInfo(url, token);
        if (info === null) {
          if (options.optional) return null;
          throw new FlashlmError(`not found on the hub: ${url}`, { kind: "io" });
        }
        if (await isComplete(dest, info)) {
          await removeIfPresent(partial);
          report("cached", info.size!);
          return { path: dest, size: info.size!, sha256: info.sha256, downloaded: false };
        }
      }
      await fetchInto(url, partial, info, token, (done, n) => {
        received += n;
        report("downloading", done);
      });
      lastError = undefined;
      break;
    } catch (err) {
      if (!(err instanceof Retryable)) throw err;
      lastError = err;
    }
  }
  if (lastError !== undefined) {
    const kept = (await sizeOf(partial)) ?? 0;
    const resume = kept > 0
      ? `${kept} bytes are kept in ${basename(partial)}, run again to resume`
      : "run again to retry";
    throw new FlashlmError(
      `download failed after ${attempt} attempts: ${lastError.message}; ${resume}`,
      { file: url, kind: "io" },
    );
  }

  await verifyAndInstall(partial, dest, info!);
  const size = (await sizeOf(dest))!;
  report("done", size);
  return { path: dest, size, sha256: info!.sha256, downloaded: true };
}

/** Check `partial` against `info`; then fsync and rename it to `dest`. A mismatch deletes it. */
async function verifyAndInstall(partial: string, dest: string, info: RemoteInfo): Promise<void> {
  const size = (await sizeOf(partial)) ?? 0;
  if (info.size !== undefined && size !== info.size) {
    await removeIfPresent(partial);
    throw new FlashlmError(
      `size mismatch: the hub says ${info.size} bytes (${info.sizeFrom}) but ${size} arrived; deleted the partial download`,
      { file: dest, kind: "io" },
    );
  }
  if (info.sha256 !== undefined) {
    const got = await sha256File(partial);
    if (got !== info.sha256) {
      await removeIfPresent(partial);
      throw new FlashlmError(
        `sha256 mismatch: the hub says ${info.sha256} but the download hashes to ${got}; deleted the partial download`,
        { file: dest, kind: "io" },
      );
    }
  }
  const file = await Deno.open(partial, { read: true, write: true });
  try {
    await file.sync();
  } finally {
    file.close();
  }
  await Deno.rename(partial, dest);
  try {
    const d = await Deno.open(dirname(dest), { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch { /* directory fsync unsupported here; the data itself is already synced */ }
}

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
 * import { formatDownloadProgress } from "./hub.ts";
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
}

/**
 * A download progress bar on one terminal line, redrawn with `\r` at most every
 * `minIntervalMs`; a file's last state (done or already complete) is always drawn and ends
 * its line. Pass its `update` as {@linkcode DownloadOptions.onProgress}.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { DownloadProgressBar } from "./hub.ts";
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
  }

  /** Draw `p` if it is a file's final state, a new file, or enough time has passed. */
  update(p: DownloadProgress): void {
    const now = this.#now();
    const final = p.state !== "downloading";
    const sameFile = p.file === this.#file;
    if (!final && sameFile && now - this.#lastDraw < this.#minIntervalMs) return;
    if (!sameFile && this.#lineOpen) this.#write("\n");
    const line = formatDownloadProgress(p);
    const pad = sameFile ? " ".repeat(Math.max(0, this.#lastLength - line.length)) : "";
    this.#write(`\r${line}${pad}${final ? "\n" : ""}`);
    this.#file = p.file;
    this.#lastDraw = now;
    this.#lastLength = line.length;
    this.#lineOpen = !final;
  }
}

// ---------------------------------------------------------------------------
// Pulling a model

/** Options of {@linkcode pullModel}. */
export interface PullOptions extends Omit<DownloadOptions, "label" | "optional"> {
  /** Branch, tag or commit. Default `"main"`. */
  revision?: string;
  /** Where the flashlm file goes. Default `<download folder>/model.flm`. */
  out?: string;
  /** The cache root; files go to {@linkcode hubCachePath} under it. Default {@linkcode cacheDir}. */
  cache?: string;
  /** The hub's address. Default {@linkcode hubEndpoint} (`$HF_ENDPOINT`). */
  endpoint?: string;
  /** Storage dtype of the converted weights. Default `"f16"`. */
  dtype?: StorageDtype;
  /** Called after each FFN layer is converted. */
  onConvertProgress?: (done: number, total: number) => void;
}

/** Tokenizer and generation files that are used when the repo has them (a 404 is fine). */
const OPTIONAL_FILES = [
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
];

/** The shard files a `model.safetensors.index.json` names, checked to stay inside the folder. */
async function shardsOf(indexPath: string): Promise<string[]> {
  const bad = (what: string): FlashlmError =>
    new FlashlmError(what, { file: indexPath, kind: "format" });
  let parsed: unknown;
  try {
    parsed = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (err) {
    throw bad(`checkpoint index is not valid JSON: ${(err as Error).message}`);
  }
  const map = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw bad(`checkpoint index has no "weight_map" object`);
  }
  const shards = new Set<string>();
  for (const shard of Object.values(map)) {
    if (
      typeof shard !== "string" || shard === "" || isAbsolute(shard) ||
      shard.split(/[\\/]/).some((p) => p === "" || p === "..")
    ) {
      throw bad(`weight_map names ${JSON.stringify(shard)}, which is not a relative file name`);
    }
    shards.add(shard);
  }
  if (shards.size === 0) throw bad(`weight_map is empty`);
  return [...shards].sort();
}

/**
 * Download a model repo from the Hugging Face hub into the cache and convert it into a
 * flashlm file.
 *
 * Fetches `config.json`, `model.safetensors.index.json` and every shard it names (or else
 * `model.safetensors`), `vocab.json`, `merges.txt`, and the optional tokenizer/generation
 * configs when present, each with {@linkcode downloadFile} (resumable, verified, skipped when
 * already complete) into {@linkcode hubCachePath}; then runs `convertHfToFlash` on the folder.
 *
 * @param repoId `org/name`, e.g. `facebook/opt-125m` (an OPT model with ReLU FFN).
 * @returns The download folder and the flashlm file's path.
 * @throws {FlashlmError} for a bad repo id or revision (kind "usage"), a required file the hub
 *   does not have ("not found on the hub: <url> (repo ..., revision ...)"), any download
 *   failure, or a model flashlm cannot convert.
 *
 * @example Pulling from a local stand-in for the hub
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { pullModel } from "./hub.ts";
 * import { buildSyntheticHfModel } from "./demo_model.ts";
 * const src = await Deno.makeTempDir();
 * await buildSyntheticHfModel(src, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 10 });
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
 *   const file = new URL(req.url).pathname.split("/resolve/main/")[1];
 *   try {
 *     return new Response(await Deno.readFile(`${src}/${file}`)); // a HEAD gets the headers only
 *   } catch {
 *     return new Response(null, { status: 404 });
 *   }
 * });
 * const cache = await Deno.makeTempDir();
 * const { flm } = await pullModel("org/tiny", {
 *   endpoint: `http://127.0.0.1:${server.addr.port}`,
 *   cache,
 * });
 * assert.ok(flm.endsWith("model.flm"));
 * await server.shutdown();
 * await Deno.remove(src, { recursive: true });
 * await Deno.remove(cache, { recursive: true });
 * ```
 */
export async function pullModel(
  repoId: string,
  options: PullOptions = {},
): Promise<{ dir: string; flm: string }> {
  const revision = options.revision ?? "main";
  checkRepoId(repoId);
  checkRevision(revision);
  const endpoint = (options.endpoint ?? hubEndpoint()).replace(/\/+$/, "");
  const dir = hubCachePath(repoId, revision, options.cache);
  await Deno.mkdir(dir, { recursive: true });

  const where = `repo ${repoId}, revision ${revision}`;
  const get = async (file: string, required: boolean, hint = ""): Promise<boolean> => {
    const url = hubFileUrl(endpoint, repoId, revision, file);
    const dest = join(dir, file);
    await Deno.mkdir(dirname(dest), { recursive: true });
    const result = await downloadFile(url, dest, { ...options, label: file, optional: true });
    if (result === null && required) {
      throw new FlashlmError(`not found on the hub: ${url} (${where}${hint})`, { kind: "io" });
    }
    return result !== null;
  };

  await get("config.json", true);
  const index = "model.safetensors.index.json";
  if (await get(index, false)) {
    for (const shard of await shardsOf(join(dir, index))) await get(shard, true);
  } else {
    await removeIfPresent(join(dir, index)); // a stale index would shadow model.safetensors
    await get("model.safetensors", true, `; it has no ${index} either`);
  }
  await get("vocab.json", true);
  await get("merges.txt", true);
  for (const file of OPTIONAL_FILES) await get(file, false);

  const flm = options.out ?? join(dir, "model.flm");
  await convertHfToFlash(dir, flm, {
    dtype: options.dtype ?? "f16",
    onProgress: options.onConvertProgress,
  });
  return { dir, flm };
}
