/**
 * The `Deno` namespace under Bun (and Node), so flashlm's Deno-first code runs there
 * unchanged: `installDenoShim()` installs the `@deno/shim-deno` npm package as the `Deno`
 * global and completes the parts flashlm needs that the package leaves out or gets wrong.
 *
 * | what                   | the package             | here                                   |
 * | ---------------------- | ----------------------- | -------------------------------------- |
 * | `FsFile.seek`, `sync`  | throw                   | positions kept per file, `fs.fsync`    |
 * | `makeTempDir/File`     | ignore `dir`, `suffix`  | Deno's semantics                       |
 * | `remove`, `rename`...  | throw Node's errors     | `Deno.errors.NotFound` etc.            |
 * | `Deno.Command`         | absent                  | `output()` on `node:child_process`     |
 *
 * Not here (Deno only): FFI (`Deno.dlopen`: the reader uses its `node-fs` backend instead,
 * see `io/read_backends.ts`), `Deno.serve`, `Deno.bench`. Bun's entry point `bun.ts` and the
 * Bun test preload `tests/bun/setup.ts` call it before anything else runs. It is not part
 * of the JSR package's API (mod.ts): in Deno it has nothing to do.
 *
 * @module
 */

import { type RuntimeName, runtimeName } from "./runtime.ts";

// ---------------------------------------------------------------------------
// Installing the shim

/** The npm package that implements the `Deno` namespace on Node's APIs (see package.json). */
const DENO_SHIM_PACKAGE = "@deno/shim-deno";

/**
 * Outside Deno, install a `Deno` global so the rest of flashlm runs unchanged: the
 * `@deno/shim-deno` package (files, temp dirs, env, args, exit, stdout) plus a small
 * `Deno.Command` on `node:child_process`. Bun's entry point (`bun.ts`) calls it before
 * importing anything else. Idempotent; does nothing in Deno. Returns the runtime.
 *
 * What stays Deno-only: FFI (`Deno.dlopen`; the reader uses `node-fs` instead),
 * `Deno.serve` and `Deno.bench`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { installDenoShim } from "./bun_shim.ts";
 * assert.equal(await installDenoShim(), "deno"); // a no-op in Deno
 * ```
 */
export async function installDenoShim(): Promise<RuntimeName> {
  const runtime = runtimeName();
  const g = globalThis as Record<string, unknown>;
  if (runtime === "deno" || typeof g.Deno !== "undefined") return runtime;
  const specifier = DENO_SHIM_PACKAGE; // a variable, so Deno's module graph never sees it
  const shim = (await import(specifier)) as { Deno: Record<string, unknown> };
  const deno = { ...shim.Deno }; // a plain copy: the shim's own members are read-only getters
  if (typeof deno.Command === "undefined") deno.Command = NodeCommand;
  await completeFsFile(deno);
  await completeTempPaths(deno);
  mapNodeErrors(deno);
  g.Deno = deno;
  return runtime;
}

// ---------------------------------------------------------------------------
// Files: positions, seek and sync

/**
 * The shim's `FsFile` reads and writes at the descriptor's own position and throws on
 * `seek` and `sync`; flashlm seeks (to rewrite a header) and fsyncs (atomic writes). So
 * each file keeps its position here, reads and writes at it explicitly, and `seek`
 * moves it; files opened for `append` keep writing at the end.
 */
async function completeFsFile(deno: Record<string, unknown>): Promise<void> {
  const fs = await import("node:fs");
  type File = { rid: number };
  const position = new WeakMap<File, number>();
  const appending = new WeakSet<File>();
  const at = (f: File) => position.get(f) ?? 0;
  const advance = (f: File, n: number | null) => {
    position.set(f, at(f) + (n ?? 0));
    return n;
  };
  const call = <T>(run: (done: (e: Error | null, v: T) => void) => void) =>
    new Promise<T>((resolve, reject) => run((e, v) => (e ? reject(e) : resolve(v))));

  const open = deno.open as (path: string | URL, options?: { append?: boolean }) => Promise<File>;
  deno.open = async (path: string | URL, options?: { append?: boolean }) => {
    const file = await open(path, options);
    if (options?.append) appending.add(file);
    return file;
  };
  const proto = (deno.FsFile as { prototype: Record<string, unknown> }).prototype;
  proto.read = async function (this: File, p: Uint8Array) {
    if (p.length === 0) return 0;
    const n = await call<number>((done) => fs.read(this.rid, p, 0, p.length, at(this), done));
    return n === 0 ? null : advance(this, n);
  };
  proto.readSync = function (this: File, p: Uint8Array) {
    if (p.length === 0) return 0;
    const n = fs.readSync(this.rid, p, 0, p.length, at(this));
    return n === 0 ? null : advance(this, n);
  };
  proto.write = async function (this: File, p: Uint8Array) {
    if (appending.has(this)) return await call<number>((done) => fs.write(this.rid, p, done));
    return advance(
      this,
      await call<number>((d) => fs.write(this.rid, p, 0, p.length, at(this), d)),
    );
  };
  proto.writeSync = function (this: File, p: Uint8Array) {
    if (appending.has(this)) return fs.writeSync(this.rid, p);
    return advance(this, fs.writeSync(this.rid, p, 0, p.length, at(this)));
  };
  proto.seekSync = function (this: File, offset: number | bigint, whence: number) {
    const base = whence === 0 ? 0 : whence === 1 ? at(this) : fs.fstatSync(this.rid).size;
    position.set(this, base + Number(offset));
    return at(this);
  };
  proto.seek = function (this: File, offset: number | bigint, whence: number) {
    return Promise.resolve(
      (proto.seekSync as (o: number | bigint, w: number) => number).call(this, offset, whence),
    );
  };
  proto.sync = function (this: File) {
    return call<void>((done) => fs.fsync(this.rid, (e) => done(e, undefined)));
  };
  proto.syncSync = function (this: File) {
    fs.fsyncSync(this.rid);
  };
}

// ---------------------------------------------------------------------------
// Temp paths

/**
 * The shim's `makeTemp*` ignore `dir` and `suffix` (flashlm builds temp files beside their
 * destination, so a rename stays on one file system): Deno's semantics on `node:fs`.
 */
async function completeTempPaths(deno: Record<string, unknown>): Promise<void> {
  const fs = await import("node:fs");
  const os = await import("node:os");
  type TempOptions = { dir?: string; prefix?: string; suffix?: string };
  const name = (o: TempOptions = {}) => {
    const random = [...crypto.getRandomValues(new Uint8Array(4))]
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    return `${o.dir ?? os.tmpdir()}/${o.prefix ?? ""}${random}${o.suffix ?? ""}`;
  };
  const retry = <T>(make: () => T): T => {
    for (;;) {
      try {
        return make();
      } catch (e) {
        if ((e as { code?: string }).code !== "EEXIST") throw e;
      }
    }
  };
  const makeDir = (o?: TempOptions) =>
    retry(() => {
      const path = name(o);
      fs.mkdirSync(path, { mode: 0o700 });
      return path;
    });
  const makeFile = (o?: TempOptions) =>
    retry(() => {
      const path = name(o);
      fs.closeSync(fs.openSync(path, "wx", 0o600));
      return path;
    });
  deno.makeTempDirSync = makeDir;
  deno.makeTempDir = (o?: TempOptions) => Promise.resolve().then(() => makeDir(o));
  deno.makeTempFileSync = makeFile;
  deno.makeTempFile = (o?: TempOptions) => Promise.resolve().then(() => makeFile(o));
}

// ---------------------------------------------------------------------------
// Node's errors as Deno's

/** The file-system functions whose Node errors {@linkcode mapNodeErrors} turns into Deno's. */
const FS_FUNCTIONS = [
  "open",
  "stat",
  "lstat",
  "readFile",
  "readTextFile",
  "writeFile",
  "writeTextFile",
  "remove",
  "rename",
  "mkdir",
  "readDir",
  "realPath",
  "copyFile",
  "truncate",
  "chmod",
  "makeTempDir",
  "makeTempFile",
].flatMap((name) => [name, `${name}Sync`]);

/**
 * Some shim functions (`remove`, `rename`, ...) throw Node's errors as they are, where
 * flashlm tests `err instanceof Deno.errors.NotFound`: wrap the file-system functions so
 * `ENOENT`, `EEXIST`, `EACCES`/`EPERM`, `EBUSY` and `EBADF` become Deno's error classes
 * (same message and stack).
 */
function mapNodeErrors(deno: Record<string, unknown>): void {
  const errors = deno.errors as Record<string, new (message: string) => Error>;
  const classOf: Record<string, string> = {
    ENOENT: "NotFound",
    EEXIST: "AlreadyExists",
    EACCES: "PermissionDenied",
    EPERM: "PermissionDenied",
    EBUSY: "Busy",
    EBADF: "BadResource",
  };
  const mapped = (e: unknown): unknown => {
    const name = classOf[(e as { code?: string })?.code ?? ""];
    if (!name || !(name in errors) || e instanceof errors[name]) return e;
    return Object.assign(new errors[name]((e as Error).message), { stack: (e as Error).stack });
  };
  for (const name of FS_FUNCTIONS) {
    const f = deno[name];
    if (typeof f !== "function") continue;
    deno[name] = (...args: unknown[]) => {
      try {
        const out = f(...args);
        return out instanceof Promise ? out.catch((e) => Promise.reject(mapped(e))) : out;
      } catch (e) {
        throw mapped(e);
      }
    };
  }
}

// ---------------------------------------------------------------------------
// Deno.Command on node:child_process

/** The options of {@linkcode NodeCommand} (the subset of `Deno.CommandOptions` flashlm uses). */
interface NodeCommandOptions {
  args?: string[];
  env?: Record<string, string>;
  cwd?: string;
  stdout?: "piped" | "inherit" | "null";
  stderr?: "piped" | "inherit" | "null";
}

/** What {@linkcode NodeCommand}'s `output()` returns (the fields of `Deno.CommandOutput`). */
interface NodeCommandOutput {
  code: number;
  success: boolean;
  signal: string | null;
  stdout: Uint8Array;
  stderr: Uint8Array;
}

/** `Deno.Command(...).output()` on `node:child_process` (Bun and Node). */
class NodeCommand {
  #command: string;
  #options: NodeCommandOptions;

  constructor(command: string | URL, options: NodeCommandOptions = {}) {
    this.#command = command instanceof URL ? command.pathname : command;
    this.#options = options;
  }

  /** Run to the end; stdout and stderr are collected when `"piped"` (the default). */
  async output(): Promise<NodeCommandOutput> {
    const { spawn } = await import("node:child_process");
    const { env } = await import("node:process");
    const o = this.#options;
    const mode = (m: string | undefined) =>
      m === "inherit" ? "inherit" : m === "null" ? "ignore" : "pipe";
    const child = spawn(this.#command, o.args ?? [], {
      cwd: o.cwd,
      env: { ...env, ...o.env },
      stdio: ["ignore", mode(o.stdout), mode(o.stderr)],
    });
    const out: Uint8Array[] = [];
    const err: Uint8Array[] = [];
    child.stdout?.on("data", (chunk: Uint8Array) => out.push(chunk));
    child.stderr?.on("data", (chunk: Uint8Array) => err.push(chunk));
    const [code, signal] = await new Promise<[number, string | null]>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (c: number | null, s: string | null) => resolve([c ?? 1, s]));
    });
    const join = (parts: Uint8Array[]) => {
      const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) {
        all.set(p, at);
        at += p.length;
      }
      return all;
    };
    return { code, success: code === 0, signal, stdout: join(out), stderr: join(err) };
  }
}
