/**
 * A restricted unpickler: it reads the pickles `torch.save` writes (protocol 2) into plain
 * values and **executes nothing**. Python's unpickler imports any `module.name` a pickle names
 * and calls it; this one knows only the opcodes torch.save emits and resolves a `GLOBAL` only
 * if the caller lists it, mapping it to a TypeScript function of the caller's (or to a bare
 * reference, for a type that is only named, like `torch.HalfStorage`). Any other opcode or
 * global (`os.system`, `builtins.eval`, ...) is refused with one {@linkcode FlashlmError}
 * naming the file, the opcode or global, and its byte offset.
 *
 * Values: `None` → null, bool, int (as a number, refused past 2^53), float, str; a tuple is a
 * frozen array, a list an array, a dict a `Map` (keys: None, bool, numbers, strings); a listed
 * global is a {@linkcode PickleGlobal}; anything else is what the caller's functions return.
 *
 * @module
 */

import { FlashlmError, showValue } from "./errors.ts";

// ---------------------------------------------------------------------------
// Values and the caller's allowlist

/**
 * A global the pickle named and the caller allowed: `module.name`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { PickleGlobal } from "./pickle.ts";
 * assert.equal(new PickleGlobal("torch", "HalfStorage").qualifiedName, "torch.HalfStorage");
 * ```
 */
export class PickleGlobal {
  /** Make a reference to `module.name`. */
  constructor(readonly module: string, readonly name: string) {}

  /** `module.name`. */
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A value the unpickler produces (the caller's functions may return objects of their own). */
export type PickleValue =
  | null
  | boolean
  | number
  | string
  | PickleValue[]
  | Map<PickleKey, PickleValue>
  | PickleGlobal
  | object;

/** What may be a dict key. */
export type PickleKey = null | boolean | number | string;

/**
 * What REDUCE (or NEWOBJ) of an allowed global does: a pure function of the arguments, written
 * in TypeScript by the caller. `at` is the opcode's byte offset, for error messages.
 */
export type PickleCallable = (args: readonly PickleValue[], at: number) => PickleValue;

/** Options of {@linkcode unpickle}. */
export interface UnpickleOptions {
  /**
   * The globals the pickle may name, by `module.name`: a function (REDUCE and NEWOBJ call it)
   * or `null` (the global may only be referred to, e.g. passed as an argument).
   */
  globals: ReadonlyMap<string, PickleCallable | null>;
  /** What BINPERSID turns a persistent id into (torch: a storage reference). */
  persistentLoad: (pid: PickleValue, at: number) => PickleValue;
  /** The file the pickle came from, named by every error. */
  file: string;
  /** How the pickle is named inside the file in messages. Default `"pickle"`. */
  label?: string;
}

// ---------------------------------------------------------------------------
// Opcodes

/** The opcodes accepted (those protocol 2 pickles of tensors and dicts use), by byte. */
const OP = {
  PROTO: 0x80,
  GLOBAL: 0x63, // c
  BINPUT: 0x71, // q
  LONG_BINPUT: 0x72, // r
  BINGET: 0x68, // h
  LONG_BINGET: 0x6a, // j
  MARK: 0x28, // (
  EMPTY_TUPLE: 0x29, // )
  TUPLE: 0x74, // t
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  REDUCE: 0x52, // R
  BUILD: 0x62, // b
  NEWOBJ: 0x81,
  BINPERSID: 0x51, // Q
  BININT: 0x4a, // J
  BININT1: 0x4b, // K
  BININT2: 0x4d, // M
  LONG1: 0x8a,
  BINFLOAT: 0x47, // G
  BINUNICODE: 0x58, // X
  SHORT_BINUNICODE: 0x8c,
  NONE: 0x4e, // N
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  EMPTY_DICT: 0x7d, // }
  DICT: 0x64, // d
  SETITEM: 0x73, // s
  SETITEMS: 0x75, // u
  EMPTY_LIST: 0x5d, // ]
  APPEND: 0x61, // a
  APPENDS: 0x65, // e
  STOP: 0x2e, // .
} as const;

/** Names of the opcodes refused, for messages (a pickle that executes code uses these). */
const REFUSED_NAMES: Record<number, string> = {
  0x69: "INST",
  0x6f: "OBJ",
  0x93: "STACK_GLOBAL",
  0x92: "NEWOBJ_EX",
  0x50: "PERSID",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x49: "INT",
  0x4c: "LONG",
  0x8b: "LONG4",
  0x46: "FLOAT",
  0x53: "STRING",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x56: "UNICODE",
  0x8d: "BINUNICODE8",
  0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES",
  0x8e: "BINBYTES8",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
  0x8f: "EMPTY_SET",
  0x90: "ADDITEMS",
  0x91: "FROZENSET",
  0x94: "MEMOIZE",
  0x95: "FRAME",
  0x70: "PUT",
  0x67: "GET",
  0x6c: "LIST",
  0x30: "POP",
  0x31: "POP_MARK",
  0x32: "DUP",
};

/** The opcode's name: its Python name if known, else its byte in hex. */
function opcodeName(byte: number): string {
  const known = Object.entries(OP).find(([, b]) => b === byte)?.[0] ?? REFUSED_NAMES[byte];
  const hex = `0x${byte.toString(16).padStart(2, "0")}`;
  return known === undefined ? `opcode ${hex}` : `opcode ${known} (${hex})`;
}

// ---------------------------------------------------------------------------
// The machine

/** Marks the MARK opcode's place on the stack. */
const MARK = Symbol("mark");
type Slot = PickleValue | typeof MARK;

/**
 * Unpickle `bytes` without executing anything: opcodes outside the protocol-2 subset torch.save
 * uses and globals not in `options.globals` are refused.
 *
 * @param bytes The pickle (e.g. a checkpoint's `data.pkl`).
 * @param options The allowed globals, the persistent-id handler and the file to name.
 * @returns The value the pickle's STOP leaves.
 * @throws {FlashlmError} naming `options.file`, the opcode or global and its byte offset.
 *
 * @example A dict of a list and a tuple, and a refused global
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { unpickle } from "./pickle.ts";
 * const text = (s: string) => [...new TextEncoder().encode(s)];
 * // pickle.dumps({"a": [1, (2, None)]}, protocol=2)
 * const bytes = new Uint8Array([0x80, 2, 0x7d, 0x58, 1, 0, 0, 0, ...text("a"), 0x5d, 0x28,
 *   0x4b, 1, 0x4b, 2, 0x4e, 0x86, 0x65, 0x73, 0x2e]);
 * const options = { globals: new Map(), persistentLoad: () => null, file: "x.bin" };
 * const value = unpickle(bytes, options) as Map<string, unknown>;
 * assert.deepEqual(value.get("a"), [1, [2, null]]);
 * const evil = new Uint8Array([0x80, 2, 0x63, ...text("os\nsystem\n"), 0x2e]);
 * assert.throws(() => unpickle(evil, options), /refused global os\.system at byte 2/);
 * ```
 */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions): PickleValue {
  const label = options.label ?? "pickle";
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const stack: Slot[] = [];
  const memo = new Map<number, PickleValue>();
  let at = 0; // the current opcode's offset
  let p = 0; // the read position

  const fail = (what: string, kind: "format" | "config" = "format"): FlashlmError =>
    new FlashlmError(`${label}: ${what} at byte ${at}`, { file: options.file, kind });
  const need = (n: number): number => {
    if (p + n > bytes.length) {
      throw fail(at < bytes.length ? `${opcodeName(bytes[at])} is cut short` : "no STOP opcode");
    }
    const start = p;
    p += n;
    return start;
  };
  const pop = (): PickleValue => {
    const value = stack.pop();
    if (value === undefined || value === MARK) {
      throw fail(`${opcodeName(bytes[at])} on an empty stack`);
    }
    return value;
  };
  const top = (): PickleValue => {
    const value = stack[stack.length - 1];
    if (value === undefined || value === MARK) {
      throw fail(`${opcodeName(bytes[at])} on an empty stack`);
    }
    return value;
  };
  /** Pop everything down to the last MARK (and the MARK). */
  const popMark = (): PickleValue[] => {
    const m = stack.lastIndexOf(MARK);
    if (m < 0) throw fail(`${opcodeName(bytes[at])} without a MARK`);
    const items = stack.splice(m) as PickleValue[];
    items.shift();
    return items;
  };
  const key = (value: PickleValue): PickleKey => {
    if (value === null || ["boolean", "number", "string"].includes(typeof value)) {
      return value as PickleKey;
    }
    throw fail(`a dict key must be None, a bool, a number or a string, not ${showValue(value)}`);
  };
  const setItems = (dict: PickleValue, items: PickleValue[]): void => {
    if (!(dict instanceof Map)) throw fail(`${opcodeName(bytes[at])} on a ${kindOf(dict)}`);
    if (items.length % 2 !== 0) throw fail(`${opcodeName(bytes[at])} with an odd number of items`);
    for (let i = 0; i < items.length; i += 2) dict.set(key(items[i]), items[i + 1]);
  };
  const appendTo = (list: PickleValue, items: PickleValue[]): void => {
    if (!Array.isArray(list) || Object.isFrozen(list)) {
      throw fail(`${opcodeName(bytes[at])} on a ${kindOf(list)}`);
    }
    for (const item of items) list.push(item);
  };
  const call = (callee: PickleValue, args: PickleValue): PickleValue => {
    if (!(callee instanceof PickleGlobal)) throw fail(`calling a ${kindOf(callee)}`);
    const fn = options.globals.get(callee.qualifiedName);
    if (!fn) throw fail(`calling ${callee.qualifiedName}, which may only be referred to`, "config");
    if (!Array.isArray(args) || !Object.isFrozen(args)) {
      throw fail(`calling ${callee.qualifiedName} with a ${kindOf(args)} for arguments`);
    }
    return fn(args, at);
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, p);
    if (end < 0 || end - p > 256) throw fail(`GLOBAL's name has no end`);
    const text = new TextDecoder().decode(bytes.subarray(p, end));
    p = end + 1;
    return text;
  };
  const text = (n: number): string => {
    const start = need(n);
    try {
      return decoder.decode(bytes.subarray(start, start + n));
    } catch {
      throw fail("a string that is not UTF-8");
    }
  };

  while (true) {
    at = p;
    const op = bytes[need(1)];
    switch (op) {
      case OP.PROTO: {
        const version = bytes[need(1)];
        if (version > 5) throw fail(`pickle protocol ${version} is not known`, "config");
        break;
      }
      case OP.GLOBAL: {
        const module = line();
        const name = line();
        const qualified = `${module}.${name}`;
        if (!options.globals.has(qualified)) {
          throw fail(`refused global ${showValue(qualified).slice(1, -1)}`, "config");
        }
        stack.push(new PickleGlobal(module, name));
        break;
      }
      case OP.BINPUT:
        memo.set(bytes[need(1)], top());
        break;
      case OP.LONG_BINPUT:
        memo.set(view.getUint32(need(4), true), top());
        break;
      case OP.BINGET:
      case OP.LONG_BINGET: {
        const index = op === OP.BINGET ? bytes[need(1)] : view.getUint32(need(4), true);
        if (!memo.has(index)) throw fail(`memo ${index} was never stored`);
        stack.push(memo.get(index)!);
        break;
      }
      case OP.MARK:
        stack.push(MARK);
        break;
      case OP.EMPTY_TUPLE:
        stack.push(Object.freeze([]));
        break;
      case OP.TUPLE:
        stack.push(Object.freeze(popMark()));
        break;
      case OP.TUPLE1:
      case OP.TUPLE2:
      case OP.TUPLE3: {
        const n = op - OP.TUPLE1 + 1;
        const items: PickleValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        stack.push(Object.freeze(items));
        break;
      }
      case OP.REDUCE:
      case OP.NEWOBJ: {
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case OP.BUILD: {
        const state = pop();
        // An OrderedDict's attributes (HF state dicts carry `_metadata`): kept nowhere.
        if (!(top() instanceof Map) || !(state instanceof Map || state === null)) {
          throw fail(`BUILD of a ${kindOf(top())} with a ${kindOf(state)}`);
        }
        break;
      }
      case OP.BINPERSID:
        stack.push(options.persistentLoad(pop(), at));
        break;
      case OP.BININT:
        stack.push(view.getInt32(need(4), true));
        break;
      case OP.BININT1:
        stack.push(bytes[need(1)]);
        break;
      case OP.BININT2:
        stack.push(view.getUint16(need(2), true));
        break;
      case OP.LONG1: {
        const n = bytes[need(1)];
        const start = need(n);
        let value = 0n;
        for (let i = n - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[start + i]);
        if (n > 0 && bytes[start + n - 1] & 0x80) value -= 1n << BigInt(8 * n);
        if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < -BigInt(Number.MAX_SAFE_INTEGER)) {
          throw fail(`the integer ${value} is too large`);
        }
        stack.push(Number(value));
        break;
      }
      case OP.BINFLOAT:
        stack.push(view.getFloat64(need(8), false));
        break;
      case OP.BINUNICODE:
        stack.push(text(view.getUint32(need(4), true)));
        break;
      case OP.SHORT_BINUNICODE:
        stack.push(text(bytes[need(1)]));
        break;
      case OP.NONE:
        stack.push(null);
        break;
      case OP.NEWTRUE:
      case OP.NEWFALSE:
        stack.push(op === OP.NEWTRUE);
        break;
      case OP.EMPTY_DICT:
        stack.push(new Map());
        break;
      case OP.DICT: {
        const dict = new Map<PickleKey, PickleValue>();
        setItems(dict, popMark());
        stack.push(dict);
        break;
      }
      case OP.SETITEM: {
        const value = pop();
        const k = pop();
        setItems(top(), [k, value]);
        break;
      }
      case OP.SETITEMS: {
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case OP.EMPTY_LIST:
        stack.push([]);
        break;
      case OP.APPEND: {
        const item = pop();
        appendTo(top(), [item]);
        break;
      }
      case OP.APPENDS: {
        const items = popMark();
        appendTo(top(), items);
        break;
      }
      case OP.STOP: {
        const value = pop();
        if (stack.length !== 0) throw fail(`STOP leaves ${stack.length} more values on the stack`);
        return value;
      }
      default:
        throw fail(`refused ${opcodeName(op)}`, "config");
    }
  }
}

/** A short description of a value's type, for messages. */
function kindOf(value: PickleValue): string {
  if (value === null) return "None";
  if (Array.isArray(value)) return Object.isFrozen(value) ? "tuple" : "list";
  if (value instanceof Map) return "dict";
  if (value instanceof PickleGlobal) return value.qualifiedName;
  if (typeof value === "object") return value.constructor?.name ?? "object";
  return typeof value;
}
