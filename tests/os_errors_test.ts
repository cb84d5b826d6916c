/**
 * Conditions of the operating system a user meets — a full disk, a read-only or missing
 * output directory, a closed stdout, too many open files, no memory — are reported as one
 * line naming the user's path and what to do, with exit 1 (never 70, "a bug"), and leave
 * nothing half-written; a closed stdout ends the command quietly with exit 0.
 *
 * The full disk is a 64 KiB tmpfs and the read-only directory a tmpfs mounted `ro` (root
 * ignores `chmod`), so these tests need root and `mount`; where mounting is not allowed they
 * are ignored with a message. Each test unmounts in `finally`.
 */

import { strict as assert } from "node:assert";
import { FlashlmError, isBrokenPipe, osError } from "../io/errors.ts";
import { atomicWriteFile, writeAll } from "../io/atomic_write.ts";
import { runCli } from "./helpers.ts";

// ---------------------------------------------------------------------------
// Helpers

/** Whether this process may mount a tmpfs (root on Linux, with mount allowed). */
function canMount(): boolean {
  if (Deno.build.os !== "linux") return false;
  const dir = Deno.makeTempDirSync();
  try {
    const mounted =
      new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir] })
        .outputSync().success;
    if (mounted) new Deno.Command("umount", { args: [dir] }).outputSync();
    return mounted;
  } catch {
    return false;
  } finally {
    Deno.removeSync(dir);
  }
}

const MOUNT = canMount();
if (!MOUNT) console.error("os_errors_test: cannot mount a tmpfs here: the disk tests are ignored");

/** Run `body` on a fresh tmpfs mounted with `options`, unmounting and removing it after. */
async function withTmpfs(options: string, body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    const mount = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", options, "tmpfs", dir],
    })
      .output();
    assert.ok(mount.success, `mount -o ${options} failed`);
    try {
      await body(dir);
    } finally {
      await new Deno.Command("umount", { args: [dir] }).output();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Write a tiny synthetic model to `out` through the CLI. */
function makeModel(out: string, env: Record<string, string> = {}): ReturnType<typeof runCli> {
  return runCli(["make-model", "--shape", "tiny", "--out", out], env);
}

/** The one error line of `stderr` (it must be exactly one, and not an internal error). */
function errorLine(stderr: string): string {
  assert.ok(!stderr.includes("internal error"), stderr);
  const lines = stderr.split("\n").filter((l) => l.includes("flashlm: error:"));
  assert.equal(lines.length, 1, stderr);
  assert.ok(lines[0].startsWith("flashlm: error: "), `error glued to another line: ${stderr}`);
  return lines[0];
}

// ---------------------------------------------------------------------------
// Through the CLI

Deno.test({
  name: "a full disk while writing a model is exit 1 naming the output and leaves nothing there",
  ignore: !MOUNT,
  fn: () =>
    withTmpfs("size=64k", async (dir) => {
      const out = `${dir}/t.flm`;
      const r = await makeModel(out);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(
        errorLine(r.stderr),
        `flashlm: error: ${out}: no space left on device: free space or write elsewhere`,
      );
      assert.deepEqual([...Deno.readDirSync(dir)], []);
    }),
});

Deno.test({
  name: "a read-only output directory is exit 1 naming the output",
  ignore: !MOUNT,
  fn: () =>
    withTmpfs("ro,size=64k", async (dir) => {
      const out = `${dir}/t.flm`;
      const r = await makeModel(out);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(
        errorLine(r.stderr),
        `flashlm: error: ${out}: read-only file system: write elsewhere`,
      );
      assert.deepEqual([...Deno.readDirSync(dir)], []);
    }),
});

Deno.test("a missing output directory is exit 1 naming the output and its directory", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = `${dir}/missing/t.flm`;
    const r = await makeModel(out);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      errorLine(r.stderr),
      `flashlm: error: ${out}: its directory ${dir}/missing does not exist`,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "train-predictor with TMPDIR on a full disk is exit 1 on its own line naming TMPDIR",
  ignore: !MOUNT,
  fn: async () => {
    const work = await Deno.makeTempDir();
    try {
      const model = `${work}/m.flm`;
      assert.equal((await makeModel(model)).code, 0);
      const text = `${work}/text.txt`;
      await Deno.writeTextFile(text, "the quick brown fox jumps over the lazy dog. ".repeat(400));
      await withTmpfs("size=64k", async (tmp) => {
        const r = await runCli(
          ["train-predictor", model, "--text", text, "--out", `${work}/p.flm`],
          {
            TMPDIR: tmp,
          },
        );
        assert.equal(r.code, 1, r.stderr);
        const line = errorLine(r.stderr);
        assert.ok(line.startsWith(`flashlm: error: ${tmp}/flashlm-capture-`), line);
        assert.ok(line.includes(": no space left on device: free space or write elsewhere"), line);
        assert.ok(line.includes("TMPDIR"), line);
        assert.deepEqual([...Deno.readDirSync(tmp)], [], "the capture files are removed");
      });
      assert.ok(!Deno.readDirSync(work).some((e) => e.name.startsWith("p.flm")));
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  },
});

Deno.test("generate whose stdout is closed early stops quietly with exit 0", async () => {
  const work = await Deno.makeTempDir();
  try {
    const model = `${work}/m.flm`;
    assert.equal((await makeModel(model)).code, 0);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../cli.ts", import.meta.url).pathname,
        "generate",
        model,
        "--max-tokens",
        "100000",
      ],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    const reader = child.stdout.getReader();
    const first = await reader.read(); // a few bytes, then the reader goes away
    assert.ok(!first.done && first.value.length > 0);
    await reader.cancel();
    const [status, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
    assert.equal(status.code, 0, err);
    assert.ok(!err.includes("error"), err);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// The mapping itself (conditions root or this machine cannot produce on demand)

Deno.test("permission denied names the user's path and says what to do", () => {
  const err = osError(new Deno.errors.PermissionDenied("Permission denied (os error 13)"), "o.flm");
  assert.ok(err instanceof FlashlmError);
  assert.equal(err.kind, "io");
  assert.match(err.message, /^o\.flm: permission denied: .*write elsewhere$/);
});

Deno.test("too many open files, a full quota and a broken pipe are io errors", () => {
  assert.match(
    osError(new Error("Too many open files (os error 24)"), "x")!.message,
    /^x: too many open files: raise the limit/,
  );
  assert.match(
    osError(new Error("Disk quota exceeded (os error 122)"), "x")!.message,
    /^x: disk quota exceeded/,
  );
  assert.match(
    osError(new Deno.errors.BrokenPipe("Broken pipe (os error 32)"), "x")!.message,
    /^x: broken pipe/,
  );
  assert.ok(isBrokenPipe(new Deno.errors.BrokenPipe("Broken pipe (os error 32)")));
});

Deno.test("a failed allocation is an out-of-memory io error, not a bug", () => {
  const err = osError(new RangeError("Array buffer allocation failed"));
  assert.equal(err?.kind, "io");
  assert.match(
    err!.message,
    /^out of memory \(Array buffer allocation failed\): try a smaller --memory/,
  );
});

Deno.test("without a path, the error names the path in Deno's message", () => {
  const err = osError(new Error("No space left on device (os error 28): write '/d/f'"));
  assert.equal(err?.message, "/d/f: no space left on device: free space or write elsewhere");
});

Deno.test("a bug is not mistaken for an OS condition", () => {
  assert.equal(osError(new TypeError("cannot read properties of undefined")), undefined);
});

Deno.test("atomicWriteFile's writer hitting a full disk names the destination, not the temp file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/out.bin`;
    await assert.rejects(
      atomicWriteFile(path, async (file) => {
        await writeAll(file, new Uint8Array([1]));
        throw new Error("No space left on device (os error 28)"); // as a full disk's write throws
      }),
      (e: unknown) =>
        e instanceof FlashlmError && e.kind === "io" &&
        e.message === `${path}: no space left on device: free space or write elsewhere`,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
