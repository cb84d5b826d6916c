/**
 * Downloading files from the Hugging Face hub, resumably and verified.
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
import { basename, dirname } from "node:path";
import { FlashlmError } from "../io/errors.ts";
import { writeAll } from "../io/atomic_write.ts";
import {
  envVar,
  hubFailure,
  hubRequest,
  parseCount,
  Retryable,
  sha256FromEtag,
} from "./hub_http.ts";

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
  /**
   * The file's size and sha256 as the hub's file listing gives them: used when the file's own
   * headers do not say, and checked against them when they do.
   */
  expected?: { size?: number; sha256?: string };
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

/**
 * The hub's address: `$HF_ENDPOINT` (e.g. a mirror, or a local test server), else
 * `https://huggingface.co`, without a trailing slash.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hubEndpoint } from "./hub_download.ts";
 * const before = Deno.env.get("HF_ENDPOINT");
 * Deno.env.set("HF_ENDPOINT", "http://127.0.0.1:18080/");
 * assert.equal(hubEndpoint(), "http://127.0.0.1:18080");
 * Deno.env.delete("HF_ENDPOINT");
 * assert.equal(hubEndpoint(), "https://huggingface.co");
 * if (before !== undefined) Deno.env.set("HF_ENDPOINT", before);
 * ```
 */
export function hubEndpoint(): string {
  return (envVar("HF_ENDPOINT") ?? DEFAULT_ENDPOINT).replace(/\/+$/, "");
}

/**
 * The URL of `file` in model repo `repoId` at `revision`:
 * `<endpoint>/<repo>/resolve/<revision>/<file>` (the revision percent-encoded whole, so a
 * branch like `refs/pr/1` stays one path segment, as the hub expects).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hubFileUrl } from "./hub_download.ts";
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

// ---------------------------------------------------------------------------
// HTTP: requests, redirects, what the headers say

/** What the hub says about a file before it is fetched. */
interface RemoteInfo {
  /** Its size, if known, and which header said so (named in mismatch errors). */
  size: number | undefined;
  sizeFrom: string;
  /** Its sha256 (lowercase hex), for LFS files. */
  sha256: string | undefined;
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

/** HEAD the file: its size and sha256 as the hub states them, or `null` if it is not there. */
async function remoteInfo(url: string, token: string | undefined): Promise<RemoteInfo | null> {
  const { res, linkedSize, linkedSha256 } = await hubRequest("HEAD", url, {}, token, true);
  await res.body?.cancel();
  if (res.status >= 300 && !(linkedSize !== undefined && res.status < 400)) {
    const err = await hubFailure(res, url, token);
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
 * import { sha256File } from "./hub_download.ts";
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

/**
 * Remove the file at `path` if there is one (a missing file is not an error).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { removeIfPresent } from "./hub_download.ts";
 * const path = await Deno.makeTempFile();
 * await removeIfPresent(path);
 * await removeIfPresent(path); // already gone: nothing to do
 * await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
 * ```
 */
export async function removeIfPresent(path: string): Promise<void> {
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
  const { res } = await hubRequest("GET", url, range, token, false);

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
    const err = await hubFailure(res, url, token);
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
 * import { downloadFile } from "./hub_download.ts";
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
  const token = options.token ?? envVar("HF_TOKEN");
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
        withExpected(info, options.expected, url);
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

/** Fill in what the headers did not say from the listing's `expected`; refuse disagreements. */
function withExpected(
  info: RemoteInfo,
  expected: DownloadOptions["expected"],
  url: string,
): void {
  if (expected?.size !== undefined) {
    if (info.size !== undefined && info.size !== expected.size) {
      throw new FlashlmError(
        `the hub disagrees with itself: its file listing says ${expected.size} bytes, ${info.sizeFrom} says ${info.size}`,
        { file: url, kind: "io" },
      );
    }
    info.size = expected.size;
    if (info.sizeFrom === "Content-Length") info.sizeFrom = "the hub's file listing";
  }
  if (expected?.sha256 !== undefined) {
    if (info.sha256 !== undefined && info.sha256 !== expected.sha256) {
      throw new FlashlmError(
        `the hub disagrees with itself: its file listing says sha256 ${expected.sha256}, the file's ETag says ${info.sha256}`,
        { file: url, kind: "io" },
      );
    }
    info.sha256 = expected.sha256;
  }
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
