/**
 * Chat templates: `tokenizer_config.json`'s `chat_template`, the Jinja program that turns a list
 * of messages into the prompt text a chat model was trained on (Llama 2 and 3, Qwen2's ChatML,
 * SmolLM2, TinyLlama/Zephyr).
 *
 * This is a small Jinja interpreter for the subset such templates use, with the settings
 * transformers renders them with (`trim_blocks` and `lstrip_blocks`: a block tag's line break and
 * indentation are not output):
 * - text, `{{ expression }}`, `{% statement %}`, `{# comments #}`, and `-` whitespace control;
 * - `for` (over lists, strings and dicts' `items()`, with `loop.index`, `index0`, `first`,
 *   `last`, `length`, and an optional `if` filter), `if`/`elif`/`else`, `set` (also
 *   `ns.attr` of a `namespace()`);
 * - expressions: string, number, list and dict literals, `true`/`false`/`none`, attributes,
 *   subscripts and slices, `+ - * / // %`, `~`, comparisons, `in`, `and`/`or`/`not`,
 *   `x if c else y`, tests (`is defined`, `is none`, `is string`, …), filters (`trim`, `length`,
 *   `upper`, `lower`, `tojson`, `join`, `default`, `first`, `last`, `string`, `int`, `list`,
 *   `items`, `capitalize`, `replace`), string and dict methods (`strip`, `startswith`, `split`,
 *   `items`, `get`, …) and the globals `raise_exception`, `namespace` and `range`.
 *
 * A template is parsed once ({@linkcode ChatTemplate.parse}); a syntax error or an unsupported
 * construct is a one-line error naming the file and the line.
 *
 * @example ChatML, as Qwen2 and SmolLM2 write it
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ChatTemplate } from "./chat_template.ts";
 * const template = ChatTemplate.parse(
 *   "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']" +
 *     " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
 *   "tokenizer_config.json",
 * );
 * const text = template.render({ messages: [{ role: "user", content: "Hi" }], add_generation_prompt: true });
 * assert.equal(text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
 * ```
 *
 * @module
 */

import { FlashlmError, showValue } from "../io/errors.ts";
import { type Expr, parseTemplate, type Stmt } from "./chat_template_parse.ts";
import {
  applyFilter,
  applyTest,
  attributeOf,
  callMethod,
  equal,
  Namespace,
  show,
  strftime,
  toNumber,
  truthy,
  UNDEFINED,
} from "./chat_template_values.ts";

// ---------------------------------------------------------------------------
// Values

/** A chat message: a role and its content (other fields are passed through to the template). */
export interface ChatMessage {
  /** "system", "user", "assistant", … */
  role: string;
  /** The message's text. */
  content: string;
  [key: string]: unknown;
}

/** What a template is rendered with: the messages and any other variables. */
export interface ChatContext {
  /** The conversation. */
  messages: ChatMessage[];
  /** End with the start of an assistant turn (default false). */
  add_generation_prompt?: boolean;
  /** The BOS token's text, as templates use it. */
  bos_token?: string;
  /** The EOS token's text. */
  eos_token?: string;
  [key: string]: unknown;
}

// ---------------------------------------------------------------------------
// The interpreter

/** The longest list `range` makes and the longest string `*` repeats: a template is small. */
const MAX_ITEMS = 1 << 20;

/** Thrown by `raise_exception` (and turned into a FlashlmError naming the template). */
class TemplateRaise extends Error {}

/** A scope: variables visible in a block, falling back to the enclosing one. */
class Scope {
  private readonly vars = new Map<string, unknown>();
  constructor(private readonly parent: Scope | null) {}
  get(name: string): unknown {
    if (this.vars.has(name)) return this.vars.get(name);
    return this.parent === null ? UNDEFINED : this.parent.get(name);
  }
  set(name: string, value: unknown): void {
    this.vars.set(name, value);
  }
}

/**
 * A parsed chat template.
 */
export class ChatTemplate {
  private constructor(private readonly body: Stmt[], private readonly file: string) {}

  /**
   * Parse a template's text; `file` names it in errors.
   *
   * @throws {FlashlmError} naming `file` and the line for a syntax error or an unsupported tag.
   */
  static parse(text: string, file: string): ChatTemplate {
    return new ChatTemplate(parseTemplate(text, file), file);
  }

  /**
   * The prompt text for `context` (messages, `add_generation_prompt`, `bos_token`, …).
   *
   * @throws {FlashlmError} (kind "usage") with the template's message when it calls
   *   `raise_exception` (e.g. roles that do not alternate), or naming the file for an
   *   operation the values do not support.
   */
  render(context: ChatContext): string {
    const globals = new Scope(null);
    globals.set("raise_exception", (message: unknown) => {
      throw new TemplateRaise(show(message));
    });
    globals.set(
      "namespace",
      (_: unknown[], kwargs: Map<string, unknown>) => new Namespace(new Map(kwargs)),
    );
    globals.set("range", (...args: unknown[]) => {
      const [start, stop, step] = args.length === 1
        ? [0, toNumber(args[0]), 1]
        : [toNumber(args[0]), toNumber(args[1]), toNumber(args[2] ?? 1)];
      const count = step === 0 ? NaN : Math.max(0, Math.ceil((stop - start) / step));
      if (!(count <= MAX_ITEMS)) {
        throw new TemplateRaise(`range(${args.map(show).join(", ")}) is too long or not a range`);
      }
      return Array.from({ length: count }, (_, k) => start + k * step);
    });
    globals.set("strftime_now", (format: unknown) => strftime(show(format), new Date()));
    globals.set("add_generation_prompt", false);
    for (const [key, value] of Object.entries(context)) globals.set(key, value);
    const out: string[] = [];
    try {
      this.run(this.body, new Scope(globals), out);
    } catch (err) {
      if (err instanceof TemplateRaise) {
        throw new FlashlmError(`chat template: ${err.message}`, { file: this.file, kind: "usage" });
      }
      throw err;
    }
    return out.join("");
  }

  private fail(what: string, line: number): never {
    throw new FlashlmError(`chat_template line ${line}: ${what}`, {
      file: this.file,
      kind: "config",
    });
  }

  private run(body: Stmt[], scope: Scope, out: string[]): void {
    for (const stmt of body) {
      switch (stmt.kind) {
        case "text":
          out.push(stmt.text);
          break;
        case "output":
          out.push(show(this.eval(stmt.expr, scope)));
          break;
        case "if": {
          const branch = stmt.branches.find((b) =>
            b.test === null || truthy(this.eval(b.test, scope))
          );
          if (branch !== undefined) this.run(branch.body, scope, out);
          break;
        }
        case "set": {
          const value = this.eval(stmt.value, scope);
          if (stmt.attribute === null) scope.set(stmt.target, value);
          else {
            const ns = scope.get(stmt.target);
            if (!(ns instanceof Namespace)) {
              this.fail(`${stmt.target} is not a namespace()`, stmt.line);
            }
            (ns as Namespace).values.set(stmt.attribute, value);
          }
          break;
        }
        case "for": {
          const iterable = this.eval(stmt.iterable, scope);
          let items: unknown[];
          if (Array.isArray(iterable)) items = iterable;
          else if (typeof iterable === "string") items = Array.from(iterable);
          else if (iterable instanceof Map) items = [...iterable.keys()];
          else if (iterable === UNDEFINED || iterable === null) items = [];
          else if (typeof iterable === "object") items = Object.keys(iterable as object);
          else return this.fail(`cannot loop over ${showValue(iterable)}`, stmt.line);
          const inner = new Scope(scope);
          const bind = (item: unknown): void => {
            if (stmt.targets.length === 1) inner.set(stmt.targets[0], item);
            else if (Array.isArray(item) && item.length === stmt.targets.length) {
              stmt.targets.forEach((t, k) => inner.set(t, item[k]));
            } else {this.fail(
                `cannot unpack ${showValue(show(item))} into ${stmt.targets.join(", ")}`,
                stmt.line,
              );}
          };
          if (stmt.filter !== null) {
            items = items.filter((item) => {
              bind(item);
              return truthy(this.eval(stmt.filter!, inner));
            });
          }
          if (items.length === 0 && stmt.orElse.length > 0) this.run(stmt.orElse, scope, out);
          items.forEach((item, i) => {
            bind(item);
            inner.set("loop", {
              index: i + 1,
              index0: i,
              revindex: items.length - i,
              revindex0: items.length - i - 1,
              first: i === 0,
              last: i === items.length - 1,
              length: items.length,
              previtem: i > 0 ? items[i - 1] : UNDEFINED,
              nextitem: i + 1 < items.length ? items[i + 1] : UNDEFINED,
            });
            this.run(stmt.body, inner, out);
          });
          break;
        }
      }
    }
  }

  private eval(expr: Expr, scope: Scope): unknown {
    const line = expr.line;
    switch (expr.kind) {
      case "literal":
        return expr.value;
      case "name":
        return scope.get(expr.name);
      case "list":
        return expr.items.map((e) => this.eval(e, scope));
      case "dict":
        return Object.fromEntries(
          expr.entries.map(([k, v]) => [show(this.eval(k, scope)), this.eval(v, scope)]),
        );
      case "attr":
        return attributeOf(this.eval(expr.object, scope), expr.name);
      case "index": {
        const object = this.eval(expr.object, scope);
        const key = this.eval(expr.index, scope);
        if (typeof key === "number" && (Array.isArray(object) || typeof object === "string")) {
          const at = key < 0 ? object.length + key : key;
          return at >= 0 && at < object.length ? object[at] : UNDEFINED;
        }
        return attributeOf(object, show(key));
      }
      case "slice": {
        const object = this.eval(expr.object, scope);
        if (!Array.isArray(object) && typeof object !== "string") {
          this.fail(`cannot slice ${showValue(object)}`, line);
        }
        const value = object as unknown[] | string;
        const bound = (
          e: Expr | null,
        ): number | undefined => (e === null ? undefined : toNumber(this.eval(e, scope)));
        const step = bound(expr.step) ?? 1;
        if (step === 1) return value.slice(bound(expr.start), bound(expr.stop));
        if (step === -1 && expr.start === null && expr.stop === null) {
          return typeof value === "string"
            ? Array.from(value).reverse().join("")
            : [...value].reverse();
        }
        return this.fail("slices with a step other than 1 or [::-1] are not supported", line);
      }
      case "unary": {
        const value = this.eval(expr.operand, scope);
        return expr.op === "not" ? !truthy(value) : -toNumber(value);
      }
      case "binary":
        return this.binary(expr.op, expr.left, expr.right, scope, line);
      case "conditional":
        return truthy(this.eval(expr.test, scope))
          ? this.eval(expr.then, scope)
          : expr.otherwise === null
          ? UNDEFINED
          : this.eval(expr.otherwise, scope);
      case "test": {
        const result = applyTest(
          expr.name,
          this.eval(expr.operand, scope),
          expr.args.map((a) => this.eval(a, scope)),
          (what) => this.fail(what, line),
        );
        return expr.negated ? !result : result;
      }
      case "filter":
        return applyFilter(
          expr.name,
          this.eval(expr.operand, scope),
          expr.args.map((a) => this.eval(a, scope)),
          this.kwargs(expr.kwargs, scope),
          (what) => this.fail(what, line),
        );
      case "call": {
        const args = expr.args.map((a) => this.eval(a, scope));
        const kwargs = this.kwargs(expr.kwargs, scope);
        if (expr.callee.kind === "attr") {
          const object = this.eval(expr.callee.object, scope);
          return callMethod(object, expr.callee.name, args, (what) => this.fail(what, line));
        }
        const callee = this.eval(expr.callee, scope);
        if (typeof callee !== "function") {
          this.fail(
            `${showValue(callee === UNDEFINED ? "undefined" : callee)} is not callable`,
            line,
          );
        }
        if (expr.callee.kind === "name" && expr.callee.name === "namespace") {
          return (callee as (a: unknown[], k: Map<string, unknown>) => unknown)(args, kwargs);
        }
        return (callee as (...a: unknown[]) => unknown)(...args);
      }
    }
  }

  private kwargs(entries: [string, Expr][], scope: Scope): Map<string, unknown> {
    return new Map(entries.map(([k, v]) => [k, this.eval(v, scope)]));
  }

  private binary(op: string, leftExpr: Expr, rightExpr: Expr, scope: Scope, line: number): unknown {
    const left = this.eval(leftExpr, scope);
    if (op === "and") return truthy(left) ? this.eval(rightExpr, scope) : left;
    if (op === "or") return truthy(left) ? left : this.eval(rightExpr, scope);
    const right = this.eval(rightExpr, scope);
    switch (op) {
      case "~":
        return show(left) + show(right);
      case "+":
        if (typeof left === "number" && typeof right === "number") return left + right;
        if (typeof left === "string" && typeof right === "string") return left + right;
        if (Array.isArray(left) && Array.isArray(right)) return [...left, ...right];
        return this.fail(
          `cannot add ${showValue(show(left))} and ${
            showValue(show(right))
          } (use ~ to join as text)`,
          line,
        );
      case "-":
        return toNumber(left) - toNumber(right);
      case "*":
        if (typeof left === "string" && typeof right === "number") {
          if (!(left.length * Math.max(0, right) <= MAX_ITEMS)) {
            this.fail("a string repeated too many times", line);
          }
          return left.repeat(Math.max(0, Math.trunc(right)));
        }
        return toNumber(left) * toNumber(right);
      case "/":
        return toNumber(left) / toNumber(right);
      case "//":
        return Math.floor(toNumber(left) / toNumber(right));
      case "%": {
        const m = toNumber(left) % toNumber(right);
        return m !== 0 && (m < 0) !== (toNumber(right) < 0) ? m + toNumber(right) : m;
      }
      case "==":
        return equal(left, right);
      case "!=":
        return !equal(left, right);
      case "<":
      case ">":
      case "<=":
      case ">=": {
        // Strings compare as strings, anything else as numbers (NaN compares false).
        const [a, b] = typeof left === "string" && typeof right === "string"
          ? [left, right]
          : [toNumber(left), toNumber(right)];
        return op === "<" ? a < b : op === ">" ? a > b : op === "<=" ? a <= b : a >= b;
      }
      case "in":
      case "not in": {
        let found: boolean;
        if (typeof right === "string") found = right.includes(show(left));
        else if (Array.isArray(right)) found = right.some((x) => equal(x, left));
        else if (right !== null && typeof right === "object") {
          found = Object.hasOwn(right, show(left));
        } else found = false;
        return op === "in" ? found : !found;
      }
    }
    return this.fail(`unknown operator ${op}`, line);
  }
}

/**
 * The chat template in a `tokenizer_config.json`'s text: its `chat_template` (a string, or a
 * list of `{name, template}` of which "default" is taken), or null when it has none.
 *
 * @throws {FlashlmError} naming `file` for invalid JSON or a template that does not parse.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { chatTemplateFromConfig } from "./chat_template.ts";
 * assert.equal(chatTemplateFromConfig('{"bos_token": "<s>"}', "tokenizer_config.json"), null);
 * const t = chatTemplateFromConfig('{"chat_template": "{{ bos_token }}{{ messages[0].content }}"}', "c.json");
 * assert.equal(t?.render({ messages: [{ role: "user", content: "hi" }], bos_token: "<s>" }), "<s>hi");
 * ```
 */
export function chatTemplateFromConfig(text: string, file: string): ChatTemplate | null {
  let config: unknown;
  try {
    config = JSON.parse(text.replace(/^\uFEFF/, ""));
  } catch (err) {
    const detail = (err as Error).message.replace(/\s+/g, " ").slice(0, 200);
    throw new FlashlmError(`not valid JSON (${detail})`, { file, cause: err });
  }
  const template = (config as { chat_template?: unknown } | null)?.chat_template;
  if (template === undefined || template === null) return null;
  if (typeof template === "string") return ChatTemplate.parse(template, file);
  if (Array.isArray(template)) {
    const named = template.find((t) => t?.name === "default") ?? template[0];
    if (typeof named?.template === "string") return ChatTemplate.parse(named.template, file);
  }
  throw new FlashlmError(
    `chat_template is ${showValue(template)}, expected a string or a list of {name, template}`,
    { file, kind: "config" },
  );
}
