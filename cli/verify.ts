/**
 * `flashlm verify`: check every section's checksum of a flashlm file, FFN included.
 *
 * @module
 */

import { type CommandSpec, endProgress, progress, usage } from "./common.ts";
import { FlashModelFile, verifyFfn } from "../core/flash_file.ts";
import { FlashlmError } from "../io/errors.ts";

/** Usage, summary, examples and flags of `verify`. */
export const spec = {
  usage: "flashlm verify <model.flm>",
  summary: "check every section's checksum, FFN included",
  examples: ["flashlm verify tiny.flm"],
  flags: {},
  progress: true,
} as const satisfies CommandSpec;

/** Open the file (header, tokenizer and resident part are checked then), verify the FFN. */
export async function run(positional: string[]): Promise<void> {
  if (positional.length !== 1) throw usage("verify needs one <model.flm>");
  const file = await FlashModelFile.open(positional[0]); // header, tokenizer, resident
  const bad = await verifyFfn(file, (done, total) => progress("verifying FFN layers", done, total));
  endProgress();
  if (bad.length) {
    throw new FlashlmError(
      `FFN layer(s) ${
        bad.join(", ")
      } fail their checksums or hold NaN/Inf weights (the file is corrupt: convert the model again)`,
      { file: file.path },
    );
  }
  console.log(
    `${file.path}: OK (header, tokenizer, resident and ${file.config.nLayers} FFN layers verified, every bundle's checksum too)`,
  );
}
