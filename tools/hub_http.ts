/**
 * HTTP with the Hugging Face hub, shared by the downloads (tools/hub_download.ts) and the
 * listing API (tools/hub_listing.ts): requests that follow redirects by hand (the token goes to
 * the hub's origin only), what a failed status means (retry, 404, a token problem), and JSON
 * from the hub's API.
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";

// ---------------------------------------------------------------------------
// Environment and errors

/**
 * The environment variable `name`, or undefined when it is unset, empty, or not readable
 * (no `--allow-env`: behave as if unset).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { envVar } from "./hub_http.ts";
 * Deno.env.set("FLASHLM_EXAMPLE", "");
 * assert.equal(envVar("FLASHLM_EXAMPLE"), undefined);
 * ```
 */
export function envVar(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

/**
 * A failure worth retrying: a dropped connection, a 5xx, a 429.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Retryable } from "./hub_http.ts";
 * assert.ok(new Retryable("HTTP 503") instanceof Error);
 * ```
 */
export class Retryable extends Error {}

// ---------------------------------------------------------------------------
// Headers

/**
 * The sha256 in an ETag (`"<64 hex>"`, maybe weak), or undefined (a git sha1, or anything else).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sha256FromEtag } from "./hub_http.ts";
 * assert.equal(sha256FromEtag(`W/"${"AB".repeat(32)}"`), "ab".repeat(32));
 * assert.equal(sha256FromEtag(`"${"a".repeat(40)}"`), undefined);
 * ```
 */
export function sha256FromEtag(etag: string | null): string | undefined {
  const value = etag?.replace(/^W\//, "").replaceAll('"', "").trim().toLowerCase();
  return value && /^[0-9a-f]{64}$/.test(value) ? value : undefined;
}

/**
 * A header's whole number (a size), or undefined when it is absent or not one.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseCount } from "./hub_http.ts";
 * assert.equal(parseCount(" 42 "), 42);
 * assert.equal(parseCount("4e2"), undefined);
 * ```
 */
export function parseCount(text: string | null): number | undefined {
  return text !== null && /^\d+$/.test(text.trim()) ? Number(text.trim()) : undefined;
}

// ---------------------------------------------------------------------------
// Requests

/**
 * Send `method` to `url`, following redirects by hand so that the token goes to the hub's
 * origin only, and collecting the hub's `X-Linked-*` headers on the way (they are on the
 * redirect to the CDN, not on the CDN's answer). `stopAtLinked`: return the redirect that
 * carries them instead of following it (what a HEAD needs).
 *
 * @throws {Retryable} when the server cannot be reached; {@linkcode FlashlmError} after 10 redirects.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hubRequest } from "./hub_http.ts";
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) =>
 *   new URL(req.url).pathname === "/a"
 *     ? new Response(null, { status: 302, headers: { location: "/b", "x-linked-size": "7" } })
 *     : new Response(req.headers.get("authorization")));
 * const base = `http://127.0.0.1:${server.addr.port}`;
 * const { res, url, linkedSize } = await hubRequest("GET", `${base}/a`, {}, "t", false);
 * assert.equal(await res.text(), "Bearer t");
 * assert.equal(url, `${base}/b`);
 * assert.equal(linkedSize, 7);
 * await server.shutdown();
 * ```
 */
export async function hubRequest(
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

/**
 * Turn a failed status into an error: 404 → `null` (the caller decides), 5xx and 429 → a
 * {@linkcode Retryable}, 401/403 → a FlashlmError saying what to do about HF_TOKEN.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hubFailure, Retryable } from "./hub_http.ts";
 * assert.equal(await hubFailure(new Response(null, { status: 404 }), "u", undefined), null);
 * assert.ok((await hubFailure(new Response(null, { status: 503 }), "u", undefined)) instanceof Retryable);
 * assert.match(String(await hubFailure(new Response(null, { status: 401 }), "u", undefined)), /HF_TOKEN/);
 * ```
 */
export async function hubFailure(
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

/**
 * GET a JSON document from the hub's API (e.g. `<endpoint>/api/models/<repo>/revision/<rev>`),
 * with the token, retrying dropped connections and 5xx as downloads do.
 *
 * @returns The parsed JSON and the next page's URL (from a `Link: <…>; rel="next"` header), or
 *   `null` when the hub answers 404 (an unknown repo or revision, or a server without the API).
 * @throws {FlashlmError} on 401/403 (mentioning HF_TOKEN), another failure once the retries are
 *   spent, or a body that is not JSON.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { fetchHubJson } from "./hub_http.ts";
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) =>
 *   new URL(req.url).pathname === "/api/x"
 *     ? Response.json({ siblings: [] })
 *     : new Response(null, { status: 404 }));
 * const base = `http://127.0.0.1:${server.addr.port}`;
 * assert.deepEqual((await fetchHubJson(`${base}/api/x`, { token: "" }))?.json, { siblings: [] });
 * assert.equal(await fetchHubJson(`${base}/api/y`, { token: "" }), null);
 * await server.shutdown();
 * ```
 */
export async function fetchHubJson(
  url: string,
  options: { token?: string; retries?: number; retryDelayMs?: number } = {},
): Promise<{ json: unknown; next: string | undefined } | null> {
  const token = options.token ?? envVar("HF_TOKEN");
  const retries = options.retries ?? 4;
  let lastError: Retryable | undefined;
  for (let attempt = 0; attempt <= retries; attempt++) {
    if (attempt > 0) {
      await new Promise((r) => setTimeout(r, (options.retryDelayMs ?? 500) * 2 ** (attempt - 1)));
    }
    try {
      const { res } = await hubRequest("GET", url, { accept: "application/json" }, token, false);
      if (res.status >= 300) {
        const err = await hubFailure(res, url, token);
        if (err === null) return null;
        throw err;
      }
      let text: string;
      try {
        text = await res.text();
      } catch (err) {
        throw new Retryable(`the connection dropped (${(err as Error).message})`);
      }
      try {
        const link = res.headers.get("link")?.match(/<([^>]+)>\s*;\s*rel="next"/)?.[1];
        return { json: JSON.parse(text), next: link && new URL(link, url).href };
      } catch (err) {
        throw new FlashlmError(`the hub's answer is not JSON: ${(err as Error).message}`, {
          file: url,
          kind: "io",
        });
      }
    } catch (err) {
      if (!(err instanceof Retryable)) throw err;
      lastError = err;
    }
  }
  throw new FlashlmError(`request failed after ${retries + 1} attempts: ${lastError!.message}`, {
    file: url,
    kind: "io",
  });
}
