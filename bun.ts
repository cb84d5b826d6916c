#!/usr/bin/env bun
/**
 * flashlm under Bun: installs the `Deno` namespace shim (see `installDenoShim` in
 * `io/bun_shim.ts`), then re-exports the library and, when run as a program, the CLI.
 *
 *   npm ci                                         once: the shim and gpt-tokenizer
 *   bun run bun.ts                                 generate with the embedded demo model
 *   bun run bun.ts generate <model.flm> --prompt "…"
 *
 * A library user under Bun imports this file instead of `mod.ts`.
 *
 * @module
 */

import { installDenoShim } from "./io/bun_shim.ts";

await installDenoShim();

export * from "./mod.ts";

if (import.meta.main) {
  const { main } = await import("./cli.ts");
  Deno.exit(await main(Deno.args));
}
