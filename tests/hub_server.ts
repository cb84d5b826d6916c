/**
 * A local stand-in for the Hugging Face hub, for tests/hub_test.ts and by hand (the
 * README's `pull` example):
 *
 *   deno run -A tests/hub_server.ts --serve 8080
 *
 * serves a tiny synthetic OPT as org/tiny on 127.0.0.1:8080 and exits after 30 s without
 * requests.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { tinyHfModel } from "./helpers.ts";

// ---------------------------------------------------------------------------
// The fake hub

/** Faults the fake hub can inject, each for one file. */
export interface Faults {
  /** The first GET of `file` sends only `afterBytes` bytes of its body, then closes. */
  drop?: { file: string; afterBytes: number };
  /** Every GET of `file` declares the full Content-Length but sends `by` bytes fewer. */
  shortBody?: { file: string; by: number };
  /** `X-Linked-Size` of `file` says `by` more bytes than there are; GETs send no Content-Length. */
  linkedSizeLie?: { file: string; by: number };
  /** `X-Linked-ETag` of `file` is the sha256 of other bytes. */
  badSha?: string;
  /** Answer Range requests with 200 and the whole file. */
  ignoreRange?: boolean;
}

/** One request the fake hub saw. */
export interface Seen {
  method: string;
  path: string;
  range: string | null;
  auth: string | null;
  status: number;
}

const hex = (algorithm: string, data: Uint8Array): string =>
  createHash(algorithm).update(data).digest("hex");

/** Files the real hub stores in LFS (weights): they answer with X-Linked-* headers. */
function isLfs(file: string): boolean {
  return /\.(safetensors|bin|h5|msgpack|onnx)$/.test(file);
}

/**
 * Serves `/<repo>/resolve/<revision>/<file>` like the hub: small files directly with a
 * sha1 ETag; weights (`.safetensors`, `.bin`, `.h5`, `.msgpack`) as LFS (X-Linked-Size,
 * X-Linked-ETag = sha256), redirected to `/cdn/<file>` on `cdnBase` when given (another origin,
 * like the real CDN). Honors Range. Lists what a revision holds as the hub's API does:
 * `/api/models/<repo>/revision/<rev>` (`siblings`) and `/api/models/<repo>/tree/<rev>` (sizes,
 * LFS sha256), unless `api` is false (a plain mirror). `branches` adds revisions (e.g.
 * `refs/pr/1`) with files of their own.
 */
export class FakeHub {
  readonly seen: Seen[] = [];
  readonly getsOf = new Map<string, number>();
  cdnBase: string | undefined;
  /** Whether the API answers (false: only files, as a plain mirror). */
  api = true;
  /** More revisions than `revision`, each with its own files. */
  readonly branches = new Map<string, Map<string, Uint8Array>>();
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor(
    readonly files: Map<string, Uint8Array>,
    readonly repo = "org/tiny",
    readonly revision = "main",
    readonly faults: Faults = {},
    readonly token?: string,
    port = 0,
  ) {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port, onListen() {} },
      (req) => this.#handle(req),
    );
  }

  /** Called on every request (the `--serve` mode's idle timer). */
  onRequest: () => void = () => {};

  /** Resolves when the server has shut down. */
  get finished(): Promise<void> {
    return this.#server.finished;
  }

  get base(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  /** File GET requests (not HEADs, not API calls) the hub and CDN answered. */
  gets(): Seen[] {
    return this.seen.filter((s) => s.method === "GET" && !s.path.startsWith("/api/"));
  }

  /** The files of `revision`, if the repo has it. */
  filesOf(revision: string): Map<string, Uint8Array> | undefined {
    return revision === this.revision ? this.files : this.branches.get(revision);
  }

  async close(): Promise<void> {
    await this.#server.shutdown();
  }

  #handle(req: Request): Response {
    this.onRequest();
    const res = this.#answer(req);
    const path = new URL(req.url).pathname;
    this.seen.push({
      method: req.method,
      path,
      range: req.headers.get("range"),
      auth: req.headers.get("authorization"),
      status: res.status,
    });
    return res;
  }

  #answer(req: Request): Response {
    const path = new URL(req.url).pathname;
    if (path.startsWith("/cdn/")) {
      const file = decodeURIComponent(path.slice("/cdn/".length));
      const data = [this.files, ...this.branches.values()].find((f) => f.has(file))?.get(file);
      return data ? this.#serve(req, file, data) : new Response(null, { status: 404 });
    }
    if (path.startsWith("/api/")) return this.#listing(req, path);
    const m = path.match(/^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/);
    if (!m || m[1] !== this.repo) {
      return new Response("Repository not found", {
        status: 404,
        headers: { "x-error-code": "RepoNotFound" },
      });
    }
    const files = this.filesOf(decodeURIComponent(m[2]));
    if (files === undefined) {
      return new Response(null, { status: 404, headers: { "x-error-code": "RevisionNotFound" } });
    }
    if (this.token && req.headers.get("authorization") !== `Bearer ${this.token}`) {
      return this.#restricted();
    }
    const file = m[3].split("/").map(decodeURIComponent).join("/");
    const data = files.get(file);
    if (!data) {
      return new Response("Entry not found", {
        status: 404,
        headers: { "x-error-code": "EntryNotFound" },
      });
    }
    if (!isLfs(file)) {
      return this.#serve(req, file, data, { etag: `"${hex("sha1", data)}"` });
    }
    const { size, sha } = this.#claimed(file, data);
    const lfs = {
      "x-linked-size": String(size),
      "x-linked-etag": `"${sha}"`,
      "x-repo-commit": "0".repeat(40),
    };
    if (this.cdnBase) {
      return new Response(null, {
        status: 302,
        headers: { ...lfs, location: `${this.cdnBase}/cdn/${encodeURIComponent(file)}` },
      });
    }
    return this.#serve(req, file, data, { ...lfs, etag: `"${sha}"` });
  }

  /** The size and sha256 the hub states for an LFS file (the faults' lies included). */
  #claimed(file: string, data: Uint8Array): { size: number; sha: string } {
    const lie = this.faults.linkedSizeLie?.file === file ? this.faults.linkedSizeLie.by : 0;
    const sha = this.faults.badSha === file ? hex("sha256", data.subarray(1)) : hex("sha256", data);
    return { size: data.length + lie, sha };
  }

  #restricted(): Response {
    return new Response(null, {
      status: 401,
      headers: { "x-error-message": "Access to model org/tiny is restricted." },
    });
  }

  /** The model-info and tree APIs: what a revision holds, with sizes and LFS sha256. */
  #listing(req: Request, path: string): Response {
    const m = path.match(/^\/api\/models\/([^/]+\/[^/]+)\/(revision|tree)\/([^/]+)$/);
    const files = m && m[1] === this.repo ? this.filesOf(decodeURIComponent(m[3])) : undefined;
    if (!this.api || !m || files === undefined) {
      return Response.json({ error: "Repository not found" }, { status: 404 });
    }
    if (this.token && req.headers.get("authorization") !== `Bearer ${this.token}`) {
      return this.#restricted();
    }
    const names = [...files.keys()].sort();
    if (m[2] === "revision") {
      return Response.json({
        id: this.repo,
        sha: "0".repeat(40),
        siblings: names.map((rfilename) => ({ rfilename })),
      });
    }
    return Response.json(names.map((name) => {
      const data = files.get(name)!;
      const entry = { type: "file", oid: hex("sha1", data), size: data.length, path: name };
      if (!isLfs(name)) return entry;
      const { size, sha } = this.#claimed(name, data);
      const lfs = { oid: sha, size, pointerSize: 134 };
      return { ...entry, size: 134, lfs };
    }));
  }

  /** The bytes of `data` from the requested range on, with the faults applied. */
  #serve(
    req: Request,
    file: string,
    data: Uint8Array,
    extra: Record<string, string> = {},
  ): Response {
    const headers: Record<string, string> = { "accept-ranges": "bytes", ...extra };
    const range = req.headers.get("range")?.match(/^bytes=(\d+)-$/);
    let start = 0;
    let status = 200;
    if (range && !this.faults.ignoreRange) {
      start = Number(range[1]);
      if (start >= data.length) {
        return new Response(null, {
          status: 416,
          headers: { "content-range": `bytes */${data.length}` },
        });
      }
      status = 206;
      headers["content-range"] = `bytes ${start}-${data.length - 1}/${data.length}`;
    }
    const chunked = this.faults.linkedSizeLie?.file === file;
    if (!chunked) headers["content-length"] = String(data.length - start);
    if (req.method === "HEAD") return new Response(null, { status, headers });

    const gets = (this.getsOf.get(file) ?? 0) + 1;
    this.getsOf.set(file, gets);
    let body = data.subarray(start);
    if (this.faults.drop?.file === file && gets === 1) {
      body = body.subarray(0, this.faults.drop.afterBytes);
    }
    if (this.faults.shortBody?.file === file) {
      body = body.subarray(0, Math.max(0, body.length - this.faults.shortBody.by));
    }
    // A stream that ends before Content-Length is reached: the client sees a dropped connection.
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < body.length; i += 4096) c.enqueue(body.slice(i, i + 4096));
        c.close();
      },
    });
    return new Response(stream, { status, headers });
  }
}

/** The files of a tiny synthetic model, by name. */
export async function modelFiles(dir: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const name of ["config.json", "model.safetensors", "vocab.json", "merges.txt"]) {
    files.set(name, await Deno.readFile(`${dir}/${name}`));
  }
  files.set("generation_config.json", new TextEncoder().encode('{"bos_token_id": 2}\n'));
  return files;
}

// ---------------------------------------------------------------------------
// By hand: `--serve <port>`

if (import.meta.main) {
  const at = Deno.args.indexOf("--serve");
  const port = at >= 0 ? Number(Deno.args[at + 1]) : NaN;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error("usage: deno run -A tests/hub_server.ts --serve <port>");
    Deno.exit(2);
  }
  const src = await tinyHfModel();
  const files = await modelFiles(src);
  await Deno.remove(src, { recursive: true });
  const hub = new FakeHub(files, "org/tiny", "main", {}, undefined, port);
  console.error(
    `serving a tiny synthetic OPT as org/tiny at ${hub.base} (HF_ENDPOINT=${hub.base})`,
  );
  let idle = setTimeout(() => hub.close(), 30_000);
  hub.onRequest = () => {
    clearTimeout(idle);
    idle = setTimeout(() => hub.close(), 30_000);
  };
  await hub.finished;
}
