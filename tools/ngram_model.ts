/**
 * The demo model's weights: a word-pair (bigram) table of a short public-domain text,
 * written into an OPT's weights by hand, so the demo prints real words. Nothing is
 * trained: the weights are synthetic, and the model knows only which token followed
 * which in {@linkcode DEMO_TEXT}.
 *
 * How the table is laid into the transformer (d_model 64, 4 layers):
 * - the input embedding of each token is a small random vector; attention and position
 *   embeddings are nearly zero, so each layer's LayerNorm sees (almost) the current token;
 * - each FFN layer has one neuron per token of the text that has a follower: its fc1 row is
 *   that token's normalised embedding and its bias fires it for that token only (plus a few
 *   random neurons that fire now and then, as in real ReLU FFNs);
 * - in the last layer, that neuron's fc2 column is the sum of its followers' output
 *   embeddings (lm_head rows), weighted by how often each followed; an always-on neuron adds
 *   the text's word frequencies for tokens the text never had;
 * - the untied lm_head then scores each follower by its share; tokens the text does not use
 *   have zero rows and are never chosen.
 *
 * So every token fires about one table neuron and a few random ones per layer (a sparse
 * FFN, whose pattern the trained predictor learns), and the text follows the table.
 *
 * @module
 */

import { bytesToUnicode, encodeGpt2Text, gpt2Tokens } from "../core/gpt2_bpe.ts";
import { OptTokenizer } from "../core/tokenizer.ts";
import { Rng } from "../core/sampler.ts";

/**
 * The text the table is made from: the opening of "The Story of the Three Little Pigs",
 * after Joseph Jacobs, _English Fairy Tales_ (1890), in the public domain.
 */
export const DEMO_TEXT = `Once upon a time when pigs spoke rhyme
And monkeys chewed tobacco,
And hens took snuff to make them tough,
And ducks went quack, quack, quack, O!

There was an old sow with three little pigs, and as she had not enough to keep them, she sent them out to seek their fortune. The first that went off met a man with a bundle of straw, and said to him:

"Please, man, give me that straw to build me a house."

Which the man did, and the little pig built a house with it. Presently came along a wolf, and knocked at the door, and said:

"Little pig, little pig, let me come in."

To which the pig answered:

"No, no, by the hair of my chinny chin chin."

The wolf then answered to that:

"Then I'll huff, and I'll puff, and I'll blow your house in."

So he huffed, and he puffed, and he blew his house in, and ate up the little pig.

The second little pig met a man with a bundle of furze, and said:

"Please, man, give me that furze to build a house."

Which the man did, and the pig built his house. Then along came the wolf, and said:

"Little pig, little pig, let me come in."

"No, no, by the hair of my chinny chin chin."

"Then I'll puff, and I'll huff, and I'll blow your house in."

So he huffed, and he puffed, and he puffed, and he huffed, and at last he blew the house down, and he ate up the little pig.

The third little pig met a man with a load of bricks, and said:

"Please, man, give me those bricks to build a house with."

So the man gave him the bricks, and he built his house with them. So the wolf came, as he did to the other little pigs, and said:

"Little pig, little pig, let me come in."

"No, no, by the hair of my chinny chin chin."

"Then I'll huff, and I'll puff, and I'll blow your house in."

Well, he huffed, and he puffed, and he huffed and he puffed, and he puffed and huffed; but he could not get the house down.
`;

// ---------------------------------------------------------------------------
// The vocabulary

/** A vocab.json and merges.txt, and the tokenizer they make. */
export interface TextVocab {
  /** vocab.json's text. */
  vocabJson: string;
  /** merges.txt's text (a header only: flashlm tokenizes with GPT-2's own merges). */
  mergesText: string;
  /** Number of tokens. */
  size: number;
  /** The tokenizer of this vocabulary. */
  tokenizer: OptTokenizer;
}

/**
 * The smallest OPT-style vocabulary that holds `text` in whole GPT-2 tokens: the 4 special
 * tokens, the 256 single bytes, then every longer GPT-2 token of `text` in order of first
 * use.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { textVocab } from "./ngram_model.ts";
 * const { tokenizer, size } = textVocab("Once upon a time");
 * assert.equal(size, 4 + 256 + 4); // "Once", " upon", " a", " time"
 * assert.equal(tokenizer.encode("Once upon a time", { addBos: false }).length, 4);
 * ```
 */
export function textVocab(text: string): TextVocab {
  const tokens: string[] = ["<s>", "<pad>", "</s>", "<unk>", ...bytesToUnicode()];
  const seen = new Set(tokens);
  const { strings } = gpt2Tokens();
  for (const id of encodeGpt2Text(text)) {
    const token = strings[id];
    if (!seen.has(token)) {
      seen.add(token);
      tokens.push(token);
    }
  }
  const vocabJson = `{${tokens.map((t, id) => `${JSON.stringify(t)}: ${id}`).join(", ")}}`;
  const mergesText = "#version: 0.2\n";
  return {
    vocabJson,
    mergesText,
    size: tokens.length,
    tokenizer: OptTokenizer.fromFiles(vocabJson, mergesText, "vocab.json"),
  };
}

// ---------------------------------------------------------------------------
// The weights

/** The shape of the model the table is laid into. */
export interface NgramShape {
  /** hidden_size. */
  dModel: number;
  /** ffn_dim: at least the number of distinct tokens of the text, plus one. */
  dFfn: number;
  /** num_hidden_layers. */
  nLayers: number;
  /** vocab_size (padded). */
  vocabSize: number;
  /** max_position_embeddings. */
  maxPositions: number;
}

/**
 * The weights of an OPT (as `model.decoder.*` names without the prefix, and `lm_head.weight`)
 * that follows the bigram table of `text` tokenized by `tokenizer`: a function from tensor
 * name and shape to its values. Deterministic for a seed.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ngramWeights, textVocab } from "./ngram_model.ts";
 * const { tokenizer, size } = textVocab("a b a c");
 * const shape = { dModel: 16, dFfn: 8, nLayers: 1, vocabSize: size, maxPositions: 8 };
 * const weights = ngramWeights("a b a c", tokenizer, shape, 1);
 * assert.equal(weights("layers.0.fc1.weight", [8, 16]).length, 8 * 16);
 * assert.throws(() => ngramWeights("a b a c", tokenizer, { ...shape, dFfn: 2 }, 1), /ffn_dim/);
 * ```
 */
export function ngramWeights(
  text: string,
  tokenizer: OptTokenizer,
  shape: NgramShape,
  seed: number,
): (name: string, dims: number[]) => Float32Array {
  const { dModel: d, dFfn, nLayers, vocabSize: V } = shape;
  const rng = new Rng(seed);
  const normal = (): number => rng.normal();

  // The table: follower counts of every token (the sequence starts with </s>).
  const ids = [tokenizer.bosId, ...tokenizer.encode(text, { addBos: false })];
  const followers = new Map<number, Map<number, number>>();
  const unigram = new Map<number, number>();
  for (let i = 0; i + 1 < ids.length; i++) {
    const next = followers.get(ids[i]) ?? new Map<number, number>();
    next.set(ids[i + 1], (next.get(ids[i + 1]) ?? 0) + 1);
    followers.set(ids[i], next);
    unigram.set(ids[i + 1], (unigram.get(ids[i + 1]) ?? 0) + 1);
  }
  const sources = [...followers.keys()];
  if (sources.length + 1 > dFfn) {
    throw new Error(`ffn_dim ${dFfn} is below the table's ${sources.length + 1} neurons`);
  }

  // Input embeddings: small random; output embeddings (lm_head): random for the tokens of
  // the text, zero for the others.
  const embedIn = Float32Array.from({ length: V * d }, () => 0.1 * normal());
  const embedOut = new Float32Array(V * d);
  for (const id of unigram.keys()) {
    for (let k = 0; k < d; k++) embedOut[id * d + k] = normal();
  }
  // A token's key: its input embedding as LayerNorm makes it (zero mean, unit variance).
  const key = (id: number): Float32Array => {
    const row = embedIn.subarray(id * d, (id + 1) * d);
    const mean = row.reduce((a, b) => a + b, 0) / d;
    const sd = Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / d);
    return row.map((v) => (v - mean) / sd);
  };
  // fc1 row = key * MATCH / d: a pre-activation of MATCH for its token, about N(0, MATCH²/d)
  // for others; the bias leaves ACTIVE on a match and keeps the rest below zero.
  const MATCH = 4, BIAS = -2.4, ACTIVE = MATCH + BIAS;
  // Neuron of each source in every layer: a fixed random place, the always-on one after.
  const order = Array.from({ length: dFfn }, (_, i) => i);
  for (let i = dFfn - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const neuronOf = new Map(sources.map((id, i) => [id, order[i]]));
  const alwaysOn = order[sources.length];

  const fc1 = (): Float32Array => {
    const w = Float32Array.from({ length: dFfn * d }, () => normal() / Math.sqrt(d));
    for (const [id, n] of neuronOf) w.set(key(id).map((v) => (v * MATCH) / d), n * d);
    w.fill(0, alwaysOn * d, (alwaysOn + 1) * d);
    return w;
  };
  const fc1Bias = (): Float32Array => {
    const b = Float32Array.from({ length: dFfn }, () => -2.5 + 0.3 * normal());
    for (const n of neuronOf.values()) b[n] = BIAS;
    b[alwaysOn] = 1;
    return b;
  };
  // fc2 (dModel, dFfn): small random columns; in the last layer the table's columns.
  const fc2 = (last: boolean): Float32Array => {
    const w = Float32Array.from({ length: d * dFfn }, () => 0.01 * normal());
    if (!last) return w;
    const column = (n: number, weights: Map<number, number>, scale: number): void => {
      const total = [...weights.values()].reduce((a, b) => a + b, 0);
      for (let k = 0; k < d; k++) {
        let sum = 0;
        for (const [id, count] of weights) sum += (count / total) * embedOut[id * d + k];
        w[k * dFfn + n] = scale * sum;
      }
    };
    for (const [id, n] of neuronOf) column(n, followers.get(id)!, 1 / ACTIVE);
    column(alwaysOn, unigram, 0.05);
    return w;
  };

  return (name: string, dims: number[]): Float32Array => {
    const size = dims.reduce((a, b) => a * b, 1);
    const layer = /^layers\.(\d+)\./.exec(name);
    const last = layer !== null && Number(layer[1]) === nLayers - 1;
    if (name === "embed_tokens.weight") return embedIn;
    if (name === "lm_head.weight") return embedOut;
    if (name === "final_layer_norm.weight") return new Float32Array(size).fill(0.2);
    if (name.endsWith("layer_norm.weight")) return new Float32Array(size).fill(1);
    if (name.endsWith("fc1.weight")) return fc1();
    if (name.endsWith("fc1.bias")) return fc1Bias();
    if (name.endsWith("fc2.weight")) return fc2(last);
    if (name === "embed_positions.weight") {
      return Float32Array.from({ length: size }, () => 0.002 * normal());
    }
    if (name.endsWith("out_proj.weight")) {
      return Float32Array.from({ length: size }, () => (0.01 * normal()) / Math.sqrt(d));
    }
    if (name.endsWith("_proj.weight")) {
      return Float32Array.from({ length: size }, () => normal() / Math.sqrt(d));
    }
    return new Float32Array(size); // biases and LayerNorm biases
  };
}
