/**
 * The architecture, checked: imports point one way, `kernels ← io ← core ← tools ← cli`,
 * inference never imports training (`core/` ← `core/train/`), and no module imports
 * itself through others. Every import of every source file is parsed: static, dynamic,
 * and `new URL("….ts", import.meta.url)` (a path handed to a child process is an edge too).
 */

import { strict as assert } from "node:assert";
import { dirname, join, normalize, relative } from "node:path";

// ---------------------------------------------------------------------------
// The rules

/** Layers from the bottom up; a file may import its own layer and those below. */
const LAYERS = ["kernels", "io", "core", "tools", "cli"] as const;

/** Which layer a repo-relative path belongs to, or null when it is in none (tests, mod.ts). */
export function layerOf(path: string): number | null {
  if (path === "cli.ts") return LAYERS.indexOf("cli");
  const top = path.split("/")[0];
  const i = LAYERS.indexOf(top as typeof LAYERS[number]);
  return i < 0 ? null : i;
}

/** An import edge from one repo-relative file to another. */
export interface Edge {
  from: string;
  to: string;
}

/** The problems in a set of edges: wrong-direction edges, inference → training, cycles. */
export function layeringProblems(edges: Edge[]): string[] {
  const problems: string[] = [];
  for (const { from, to } of edges) {
    const a = layerOf(from), b = layerOf(to);
    if (a === null) continue;
    if (b === null) {
      problems.push(`${from} imports ${to}, which is in no layer`);
    } else if (b > a) {
      problems.push(`${from} (${LAYERS[a]}) imports ${to} (${LAYERS[b]}): a layer above it`);
    } else if (
      from.startsWith("core/") && !from.startsWith("core/train/") && to.startsWith("core/train/")
    ) {
      problems.push(`${from} imports ${to}: inference must not depend on training`);
    }
  }
  for (const cycle of cycles(edges)) problems.push(`an import cycle among ${cycle.join(", ")}`);
  return problems;
}

/** The files of each cycle (each strongly connected component of more than one file). */
function cycles(edges: Edge[]): string[][] {
  const next = new Map<string, string[]>();
  for (const { from, to } of edges) {
    if (!next.has(from)) next.set(from, []);
    next.get(from)!.push(to);
  }
  // Tarjan's strongly connected components.
  const index = new Map<string, number>(), low = new Map<string, number>();
  const stack: string[] = [], onStack = new Set<string>();
  const out: string[][] = [];
  let counter = 0;
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (next.get(v) ?? []).includes(v)) out.push(scc.reverse());
    }
  };
  for (const v of next.keys()) if (!index.has(v)) visit(v);
  return out;
}

// ---------------------------------------------------------------------------
// Reading the imports

const ROOT = normalize(join(dirname(new URL(import.meta.url).pathname), ".."));

/** Source with comments blanked out (doc examples import too, but are not the module's). */
function stripComments(source: string): string {
  let out = "";
  let i = 0;
  while (i < source.length) {
    const c = source[i], d = source[i + 1];
    if (c === "/" && d === "*") {
      const end = source.indexOf("*/", i + 2);
      i = end < 0 ? source.length : end + 2;
    } else if (c === "/" && d === "/") {
      while (i < source.length && source[i] !== "\n") i++;
    } else if (c === "/" && /[(,=:[!&|?{};]$|^$/.test(out.trimEnd().slice(-1))) {
      // A regular expression literal: skip it whole (its quotes are not strings).
      let j = i + 1, inClass = false;
      while (j < source.length && (source[j] !== "/" || inClass) && source[j] !== "\n") {
        if (source[j] === "\\") j++;
        else if (source[j] === "[") inClass = true;
        else if (source[j] === "]") inClass = false;
        j++;
      }
      i = j + 1;
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < source.length && source[j] !== c) j += source[j] === "\\" ? 2 : 1;
      out += source.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

const IMPORT =
  /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|new URL\(\s*)["'](\.{1,2}\/[^"']+\.ts)["']/g;

/** The repo-relative files that `source` (at repo-relative `path`) imports. */
export function importsOf(path: string, source: string): string[] {
  const out: string[] = [];
  for (const m of stripComments(source).matchAll(IMPORT)) {
    out.push(normalize(join(dirname(path), m[1])));
  }
  return out;
}

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(join(ROOT, dir))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...await sourceFiles(path));
    else if (entry.name.endsWith(".ts")) out.push(path);
  }
  return out;
}

async function repoEdges(): Promise<Edge[]> {
  const files = ["cli.ts", ...(await Promise.all(LAYERS.map(sourceFiles))).flat()];
  const edges: Edge[] = [];
  for (const from of files) {
    const source = await Deno.readTextFile(join(ROOT, from));
    for (const to of importsOf(from, source)) edges.push({ from, to: relative(".", to) });
  }
  return edges;
}

// ---------------------------------------------------------------------------
// Tests

Deno.test("every import of kernels, io, core, tools and cli points down the layers, with no cycle", async () => {
  const edges = await repoEdges();
  assert(edges.length > 100, `only ${edges.length} imports found: the parser is broken`);
  assert.deepEqual(layeringProblems(edges), []);
});

Deno.test("the layering check finds a wrong-direction import, a training import and a cycle", () => {
  const source = [
    'import { x } from "../core/engine.ts"; // a comment: import "../cli.ts"',
    '/* from "../tools/bench.ts" */',
    'const child = new URL("../../cli.ts", import.meta.url);',
    'const lazy = await import("./page_cache.ts");',
  ].join("\n");
  assert.deepEqual(importsOf("io/reader.ts", source), [
    "core/engine.ts",
    "../cli.ts",
    "io/page_cache.ts",
  ]);
  assert.deepEqual(layeringProblems([{ from: "io/reader.ts", to: "core/engine.ts" }]), [
    "io/reader.ts (io) imports core/engine.ts (core): a layer above it",
  ]);
  assert.deepEqual(
    layeringProblems([{ from: "core/engine.ts", to: "core/train/train_predictor.ts" }]),
    ["core/engine.ts imports core/train/train_predictor.ts: inference must not depend on training"],
  );
  assert.deepEqual(
    layeringProblems([
      { from: "core/a.ts", to: "core/b.ts" },
      { from: "core/b.ts", to: "core/c.ts" },
      { from: "core/c.ts", to: "core/a.ts" },
    ]),
    ["an import cycle among core/a.ts, core/b.ts, core/c.ts"],
  );
});
