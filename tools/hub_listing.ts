/**
 * What a revision of a Hugging Face model repo holds, as the hub's API lists it: the model-info
 * API (`<endpoint>/api/models/<repo>/revision/<rev>`, its `siblings`) names the files, the tree
 * API (`<endpoint>/api/models/<repo>/tree/<rev>`) gives their sizes and, for LFS files, their
 * sha256 (`lfs.oid`). From that, which weights `pull` fetches: safetensors when the revision has
 * them, else PyTorch's `pytorch_model.bin` — never TensorFlow, Flax or ONNX files.
 *
 * @module
 */

import { FlashlmError, showValue } from "../io/errors.ts";
import type { DownloadOptions } from "./hub_download.ts";
import { fetchHubJson } from "./hub_http.ts";

// ---------------------------------------------------------------------------
// Listing a revision

/** One file of a revision, as the hub lists it. */
export interface HubFile {
  /** Its path in the repo. */
  path: string;
  /** Its size in bytes, when the tree API gave it. */
  size?: number;
  /** Its sha256 (lowercase hex), for LFS files. */
  sha256?: string;
}

/** The most pages of a tree listing followed (the hub sends 1000 entries or so per page). */
const MAX_TREE_PAGES = 100;

/**
 * The files of `repoId` at `revision`, by path, or `null` when the hub's API does not know the
 * repo or revision (a 404: the caller then asks for files by name, as a plain mirror needs).
 *
 * @param endpoint The hub's address, without a trailing slash.
 * @param options The token and retry settings of the downloads.
 * @throws {FlashlmError} for a 401/403 (mentioning HF_TOKEN), a failed request, or an answer
 *   that is not the API's shape.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { listRevision } from "./hub_listing.ts";
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
 *   const path = new URL(req.url).pathname;
 *   if (path === "/api/models/org/m/revision/main") {
 *     return Response.json({ siblings: [{ rfilename: "config.json" }, { rfilename: "a.bin" }] });
 *   }
 *   if (path === "/api/models/org/m/tree/main") {
 *     return Response.json([{ type: "file", path: "a.bin", size: 134, oid: "0".repeat(40),
 *       lfs: { oid: "ab".repeat(32), size: 9000, pointerSize: 134 } }]);
 *   }
 *   return new Response(null, { status: 404 });
 * });
 * const files = await listRevision(`http://127.0.0.1:${server.addr.port}`, "org/m", "main", {
 *   token: "",
 * });
 * assert.deepEqual(files?.get("a.bin"), { path: "a.bin", size: 9000, sha256: "ab".repeat(32) });
 * assert.deepEqual(files?.get("config.json"), { path: "config.json" });
 * await server.shutdown();
 * ```
 */
export async function listRevision(
  endpoint: string,
  repoId: string,
  revision: string,
  options: Pick<DownloadOptions, "token" | "retries" | "retryDelayMs"> = {},
): Promise<Map<string, HubFile> | null> {
  const rev = encodeURIComponent(revision);
  const infoUrl = `${endpoint}/api/models/${repoId}/revision/${rev}`;
  const info = await fetchHubJson(infoUrl, options);
  if (info === null) return null;
  const siblings = (info.json as { siblings?: unknown } | null)?.siblings;
  if (!Array.isArray(siblings)) {
    throw new FlashlmError(`the hub's model info has no "siblings" list`, {
      file: infoUrl,
      kind: "io",
    });
  }
  const files = new Map<string, HubFile>();
  for (const sibling of siblings) {
    const path = (sibling as { rfilename?: unknown } | null)?.rfilename;
    if (typeof path !== "string" || path === "") {
      throw new FlashlmError(`the hub lists a file as ${showValue(sibling)}`, {
        file: infoUrl,
        kind: "io",
      });
    }
    files.set(path, { path });
  }

  // Sizes and sha256 from the tree; without them the downloads still verify with the headers.
  let url: string | undefined = `${endpoint}/api/models/${repoId}/tree/${rev}`;
  for (let page = 0; url !== undefined && page < MAX_TREE_PAGES; page++) {
    const tree = await fetchHubJson(url, options);
    if (tree === null || !Array.isArray(tree.json)) break;
    for (const entry of tree.json as Record<string, unknown>[]) {
      const file = typeof entry?.path === "string" ? files.get(entry.path) : undefined;
      if (file === undefined || entry.type !== "file") continue;
      const lfs = entry.lfs as { oid?: unknown; size?: unknown } | undefined;
      const size = lfs?.size ?? entry.size;
      if (typeof size === "number" && Number.isSafeInteger(size) && size >= 0) file.size = size;
      if (typeof lfs?.oid === "string" && /^[0-9a-f]{64}$/.test(lfs.oid)) file.sha256 = lfs.oid;
    }
    url = tree.next;
  }
  return files;
}

// ---------------------------------------------------------------------------
// Choosing the weights

/** The weight files `pull` can convert, in order of preference (as `convert` prefers them). */
export const WEIGHT_LAYOUTS: readonly { file: string; sharded: boolean }[] = [
  { file: "model.safetensors.index.json", sharded: true },
  { file: "model.safetensors", sharded: false },
  { file: "pytorch_model.bin.index.json", sharded: true },
  { file: "pytorch_model.bin", sharded: false },
];

/**
 * The weights to fetch from a revision holding `files`: the first of {@linkcode WEIGHT_LAYOUTS}
 * present, or `null` when there is none (only TensorFlow, Flax or ONNX weights, say).
 *
 * @example facebook/opt-125m's main branch
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { chooseWeights } from "./hub_listing.ts";
 * const main = ["config.json", "flax_model.msgpack", "pytorch_model.bin", "tf_model.h5"];
 * assert.deepEqual(chooseWeights(new Set(main)), { file: "pytorch_model.bin", sharded: false });
 * assert.equal(chooseWeights(new Set(["config.json", "tf_model.h5"])), null);
 * ```
 */
export function chooseWeights(
  files: ReadonlySet<string>,
): { file: string; sharded: boolean } | null {
  return WEIGHT_LAYOUTS.find((layout) => files.has(layout.file)) ?? null;
}
