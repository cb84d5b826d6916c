/**
 * Deno's `npm:` specifiers under Bun. flashlm imports its npm dependencies fully
 * qualified (`npm:gpt-tokenizer@4.0.0/…`), so that Deno runs it from any folder with
 * no import map; Bun reads `npm:` as a plugin namespace, and this plugin resolves it to
 * the package installed in `node_modules` (package.json pins the same versions).
 * `bunfig.toml` preloads it for `bun run` and `bun test`. Not part of the JSR package.
 *
 * @module
 */

/** The part of Bun's plugin API used here. */
interface BunPluginBuilder {
  onResolve(
    options: { filter: RegExp; namespace: string },
    resolve: (args: { path: string; importer: string }) => { path: string },
  ): void;
}

/**
 * `name@version/sub/path` (or `@scope/name@version/…`) → `name/sub/path`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { npmSpecifierToPackagePath } from "./bun_npm.ts";
 * assert.equal(npmSpecifierToPackagePath("gpt-tokenizer@4.0.0/encoding/r50k_base"),
 *   "gpt-tokenizer/encoding/r50k_base");
 * assert.equal(npmSpecifierToPackagePath("@deno/shim-deno@0.19.2"), "@deno/shim-deno");
 * ```
 */
export function npmSpecifierToPackagePath(specifier: string): string {
  const m = /^\/?(@[^/@]+\/[^/@]+|[^/@]+)(?:@[^/]*)?(\/.*)?$/.exec(specifier);
  if (!m) throw new Error(`not an npm specifier: npm:${specifier}`);
  return m[1] + (m[2] ?? "");
}

if ("Bun" in globalThis) {
  const bun = (globalThis as unknown as {
    Bun: {
      plugin(p: { name: string; setup(build: BunPluginBuilder): void }): void;
      resolveSync(path: string, from: string): string;
    };
  }).Bun;
  bun.plugin({
    name: "npm-specifiers",
    setup(build) {
      build.onResolve({ filter: /.*/, namespace: "npm" }, (args) => ({
        path: bun.resolveSync(npmSpecifierToPackagePath(args.path), args.importer),
      }));
    },
  });
}
