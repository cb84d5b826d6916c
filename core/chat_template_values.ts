/**
 * The values of chat templates (core/chat_template.ts) and what can be done with them: Jinja's
 * `undefined`, `namespace()`, Python's truthiness, printing and JSON, and the built-in tests,
 * filters and string/dict methods that chat templates use.
 *
 * @module
 */

import { showValue } from "../io/errors.ts";

/** Jinja's `undefined`: renders as "", is false, and yields itself for attributes. */
export const UNDEFINED = Symbol("undefined");

/** A `namespace()` object: attributes that `set ns.x = …` may change inside loops. */
export class Namespace {
  constructor(readonly values: Map<string, unknown>) {}
}

/**
 * A value as a number: numbers as they are, booleans as 0 and 1, numeric strings parsed, and
 * NaN for anything else (so arithmetic on `undefined` gives NaN, never a thrown TypeError).
 */
export function toNumber(value: unknown): number {
  if (typeof value === "number") return value;
  if (typeof value === "boolean") return value ? 1 : 0;
  if (typeof value === "string" && value.trim() !== "") return Number(value);
  return NaN;
}

/** Python's truthiness. */
export function truthy(value: unknown): boolean {
  if (value === UNDEFINED || value === null || value === undefined) return false;
  if (typeof value === "string" || Array.isArray(value)) return value.length > 0;
  if (typeof value === "number") return value !== 0;
  if (value instanceof Map) return value.size > 0;
  if (typeof value === "object" && !(value instanceof Namespace)) {
    return Object.keys(value as object).length > 0;
  }
  return Boolean(value);
}

/** A value as Jinja prints it (Python's `str`). */
export function show(value: unknown): string {
  if (value === UNDEFINED || value === undefined) return "";
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "string") return value;
  if (typeof value === "number") return String(value);
  return toJson(value);
}

/** JSON as Python's `json.dumps` writes it (`, ` and `: ` separators, or indented). */
export function toJson(value: unknown, indent?: number): string {
  const plain = JSON.parse(
    JSON.stringify(
      value,
      (_, v) => (v === UNDEFINED ? null : v instanceof Map ? Object.fromEntries(v) : v),
    ) ??
      "null",
  );
  if (indent !== undefined) return JSON.stringify(plain, null, indent);
  const write = (v: unknown): string => {
    if (Array.isArray(v)) return `[${v.map(write).join(", ")}]`;
    if (v !== null && typeof v === "object") {
      return `{${
        Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${write(x)}`).join(", ")
      }}`;
    }
    return JSON.stringify(v);
  };
  return write(plain);
}

/** Python's `==` on template values. */
export function equal(a: unknown, b: unknown): boolean {
  if (a === UNDEFINED || b === UNDEFINED) return a === b;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => equal(x, b[i]));
  }
  return a === b;
}

/** `object.name` or `object[name]` as Jinja looks it up; `undefined` when there is none. */
export function attributeOf(object: unknown, name: string): unknown {
  if (object instanceof Namespace) {
    return object.values.has(name) ? object.values.get(name) : UNDEFINED;
  }
  if (object instanceof Map) return object.has(name) ? object.get(name) : UNDEFINED;
  if (object !== null && typeof object === "object" && Object.hasOwn(object, name)) {
    return (object as Record<string, unknown>)[name];
  }
  return UNDEFINED;
}

/** A list as filters take it: a list as is, a string's characters, else nothing. */
function listOf(value: unknown): unknown[] {
  return Array.isArray(value) ? value : typeof value === "string" ? Array.from(value) : [];
}

const MONTHS = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];
const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/**
 * The date `now` formatted as Python's `strftime` does for the common codes (`%d %m %Y %y %b
 * %B %a %A %H %I %M %S %p %j %%`): what transformers' `strftime_now` gives templates (Llama 3.1
 * writes today's date into its system prompt). Local time.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { strftime } from "./chat_template_values.ts";
 * assert.equal(strftime("%d %b %Y, %A %H:%M %%", new Date(2024, 6, 26, 9, 5)), "26 Jul 2024, Friday 09:05 %");
 * ```
 */
export function strftime(format: string, now: Date): string {
  const two = (n: number): string => String(n).padStart(2, "0");
  const start = new Date(now.getFullYear(), 0, 1);
  const day = Math.floor((now.getTime() - start.getTime()) / 86_400_000) + 1;
  const codes: Record<string, string> = {
    d: two(now.getDate()),
    m: two(now.getMonth() + 1),
    Y: String(now.getFullYear()),
    y: two(now.getFullYear() % 100),
    b: MONTHS[now.getMonth()].slice(0, 3),
    B: MONTHS[now.getMonth()],
    a: DAYS[now.getDay()].slice(0, 3),
    A: DAYS[now.getDay()],
    H: two(now.getHours()),
    I: two(now.getHours() % 12 || 12),
    M: two(now.getMinutes()),
    S: two(now.getSeconds()),
    p: now.getHours() < 12 ? "AM" : "PM",
    j: String(day).padStart(3, "0"),
    "%": "%",
  };
  return format.replace(/%(.)/g, (whole, code: string) => codes[code] ?? whole);
}

// ---------------------------------------------------------------------------
// Tests, filters and methods

/** Jinja's test `name` (`value is name(args)`); `fail` reports an unknown test. */
export function applyTest(
  name: string,
  value: unknown,
  args: unknown[],
  fail: (what: string) => never,
): boolean {
  switch (name) {
    case "defined":
      return value !== UNDEFINED;
    case "undefined":
      return value === UNDEFINED;
    case "none":
      return value === null;
    case "string":
      return typeof value === "string";
    case "number":
    case "integer":
      return typeof value === "number";
    case "boolean":
      return typeof value === "boolean";
    case "true":
      return value === true;
    case "false":
      return value === false;
    case "mapping":
      return value !== null && typeof value === "object" && !Array.isArray(value);
    case "iterable":
    case "sequence":
      return Array.isArray(value) || typeof value === "string";
    case "equalto":
    case "eq":
      return equal(value, args[0]);
    case "even":
      return toNumber(value) % 2 === 0;
    case "odd":
      return toNumber(value) % 2 === 1;
  }
  return fail(`the test "${name}" is not supported`);
}

/** Jinja's filter `name` (`value | name(args, kwargs)`); `fail` reports an unknown filter. */
export function applyFilter(
  name: string,
  value: unknown,
  args: unknown[],
  kwargs: Map<string, unknown>,
  fail: (what: string) => never,
): unknown {
  switch (name) {
    case "trim":
      return show(value).trim();
    case "select":
    case "reject": {
      // items that pass the test named by args[0] (or are true), or that do not
      const test = (x: unknown): boolean =>
        args.length === 0 ? truthy(x) : applyTest(show(args[0]), x, args.slice(1), fail);
      return listOf(value).filter((x) => test(x) === (name === "select"));
    }
    case "selectattr":
    case "rejectattr": {
      const attr = show(args[0]);
      const test = (x: unknown): boolean =>
        args.length < 2 ? truthy(x) : applyTest(show(args[1]), x, args.slice(2), fail);
      return listOf(value).filter((x) => test(attributeOf(x, attr)) === (name === "selectattr"));
    }
    case "map":
      if (kwargs.has("attribute")) {
        return listOf(value).map((x) => attributeOf(x, show(kwargs.get("attribute"))));
      }
      if (args.length === 0) return fail('map needs a filter name or attribute="..."');
      return listOf(value).map((x) =>
        applyFilter(show(args[0]), x, args.slice(1), new Map(), fail)
      );
    case "abs":
      return Math.abs(toNumber(value));
    case "float":
      return toNumber(value) || 0;
    case "safe":
      return value;
    case "length":
    case "count":
      if (Array.isArray(value) || typeof value === "string") return value.length;
      return value !== null && typeof value === "object" ? Object.keys(value).length : 0;
    case "upper":
      return show(value).toUpperCase();
    case "lower":
      return show(value).toLowerCase();
    case "capitalize": {
      const s = show(value);
      return s.charAt(0).toUpperCase() + s.slice(1).toLowerCase();
    }
    case "string":
      return show(value);
    case "int":
      return Math.trunc(toNumber(value)) || 0;
    case "list":
      return Array.isArray(value) ? value : typeof value === "string" ? Array.from(value) : [];
    case "first":
      return Array.isArray(value) || typeof value === "string" ? value[0] ?? UNDEFINED : UNDEFINED;
    case "last":
      return Array.isArray(value) || typeof value === "string"
        ? value[value.length - 1] ?? UNDEFINED
        : UNDEFINED;
    case "join":
      return (Array.isArray(value) ? value : []).map(show).join(
        args.length > 0 ? show(args[0]) : "",
      );
    case "default":
    case "d": {
      const useForFalse = args[1] === true || kwargs.get("boolean") === true;
      return value === UNDEFINED || (useForFalse && !truthy(value)) ? args[0] ?? "" : value;
    }
    case "tojson": {
      const indent = kwargs.get("indent") ?? args[0];
      return toJson(value, typeof indent === "number" ? indent : undefined);
    }
    case "items":
      return callMethod(value, "items", [], fail);
    case "replace":
      return show(value).replaceAll(show(args[0]), show(args[1]));
  }
  return fail(`the filter "${name}" is not supported`);
}

/** The string or dict method `name` called on `object`; `fail` reports an unknown one. */
export function callMethod(
  object: unknown,
  name: string,
  args: unknown[],
  fail: (what: string) => never,
): unknown {
  if (typeof object === "string") {
    const chars = args.length > 0 && args[0] !== null ? show(args[0]) : null;
    const strip = (s: string, start: boolean, end: boolean): string => {
      if (chars === null) return start && end ? s.trim() : start ? s.trimStart() : s.trimEnd();
      let a = 0, b = s.length;
      while (start && a < b && chars.includes(s[a])) a++;
      while (end && b > a && chars.includes(s[b - 1])) b--;
      return s.slice(a, b);
    };
    switch (name) {
      case "strip":
        return strip(object, true, true);
      case "lstrip":
        return strip(object, true, false);
      case "rstrip":
        return strip(object, false, true);
      case "startswith":
        return object.startsWith(show(args[0]));
      case "endswith":
        return object.endsWith(show(args[0]));
      case "upper":
        return object.toUpperCase();
      case "lower":
        return object.toLowerCase();
      case "title":
        return object.replace(/\w\S*/g, (w) => w[0].toUpperCase() + w.slice(1).toLowerCase());
      case "replace":
        return object.replaceAll(show(args[0]), show(args[1]));
      case "split":
        return chars === null
          ? object.trim().split(/\s+/).filter((s) => s !== "")
          : object.split(chars);
    }
  } else if (object !== null && typeof object === "object" && !Array.isArray(object)) {
    const entries = object instanceof Map ? [...object.entries()] : Object.entries(object);
    switch (name) {
      case "items":
        return entries.map(([k, v]) => [k, v]);
      case "keys":
        return entries.map(([k]) => k);
      case "values":
        return entries.map(([, v]) => v);
      case "get": {
        const found = entries.find(([k]) => k === show(args[0]));
        return found !== undefined ? found[1] : args[1] ?? null;
      }
    }
  }
  return fail(`${showValue(show(object))} has no method ${name}()`);
}
