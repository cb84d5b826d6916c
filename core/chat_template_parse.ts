/**
 * Parsing chat templates (the Jinja subset core/chat_template.ts runs): the template text into
 * text and tags, with Jinja's whitespace rules as transformers sets them (`trim_blocks`,
 * `lstrip_blocks`, and `-` on a tag), then tags into statements and expressions.
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";

// ---------------------------------------------------------------------------
// The tree

/** An expression; `line` is where it starts in the template. */
export type Expr =
  & { line: number }
  & (
    | { kind: "literal"; value: unknown }
    | { kind: "name"; name: string }
    | { kind: "list"; items: Expr[] }
    | { kind: "dict"; entries: [Expr, Expr][] }
    | { kind: "attr"; object: Expr; name: string }
    | { kind: "index"; object: Expr; index: Expr }
    | { kind: "slice"; object: Expr; start: Expr | null; stop: Expr | null; step: Expr | null }
    | { kind: "unary"; op: "not" | "-"; operand: Expr }
    | { kind: "binary"; op: string; left: Expr; right: Expr }
    | { kind: "conditional"; test: Expr; then: Expr; otherwise: Expr | null }
    | { kind: "test"; name: string; operand: Expr; args: Expr[]; negated: boolean }
    | { kind: "filter"; name: string; operand: Expr; args: Expr[]; kwargs: [string, Expr][] }
    | { kind: "call"; callee: Expr; args: Expr[]; kwargs: [string, Expr][] }
  );

/** A statement of the template. */
export type Stmt =
  & { line: number }
  & (
    | { kind: "text"; text: string }
    | { kind: "output"; expr: Expr }
    | { kind: "if"; branches: { test: Expr | null; body: Stmt[] }[] }
    | {
      kind: "for";
      targets: string[];
      iterable: Expr;
      filter: Expr | null;
      body: Stmt[];
      orElse: Stmt[];
    }
    | { kind: "set"; target: string; attribute: string | null; value: Expr }
  );

// ---------------------------------------------------------------------------
// Text and tags

interface Segment {
  kind: "text" | "output" | "block";
  text: string;
  line: number;
}

/** Cut the template into text, `{{ }}` and `{% %}` (comments dropped), whitespace applied. */
function segments(template: string, fail: (what: string, line: number) => never): Segment[] {
  const out: Segment[] = [];
  let pos = 0;
  let line = 1;
  let trimNext: "none" | "newline" | "all" = "none";
  const lineAt = (text: string): number => text.split("\n").length - 1;
  while (pos < template.length) {
    const open = template.slice(pos).search(/\{[{%#]/);
    let text = open < 0 ? template.slice(pos) : template.slice(pos, pos + open);
    // Whether the text starts a line (so indentation before a block tag may be stripped).
    let atLineStart = pos === 0 || template[pos - 1] === "\n";
    if (trimNext === "all") text = text.replace(/^\s+/, "");
    else if (trimNext === "newline" && text.startsWith("\n")) {
      text = text.slice(1);
      atLineStart = true;
    }
    trimNext = "none";
    const textLine = line;
    line += lineAt(template.slice(pos, open < 0 ? template.length : pos + open));
    if (open < 0) {
      if (text !== "") out.push({ kind: "text", text, line: textLine });
      break;
    }
    const start = pos + open;
    const kind = template[start + 1];
    const close = kind === "{" ? "}}" : kind === "%" ? "%}" : "#}";
    const end = template.indexOf(close, start + 2);
    if (end < 0) fail(`the tag opened here is never closed with ${close}`, line);
    let inner = template.slice(start + 2, end);
    // Whitespace control: "-" strips all whitespace on that side; block tags also lose the
    // indentation before them (lstrip_blocks) and the line break after them (trim_blocks).
    if (inner.startsWith("-")) {
      text = text.replace(/\s+$/, "");
      inner = inner.slice(1);
    } else if (kind !== "{" && !inner.startsWith("+")) {
      text = text.replace(atLineStart ? /(^|\n)[ \t]+$/ : /(\n)[ \t]+$/, "$1");
    }
    if (inner.startsWith("+")) inner = inner.slice(1);
    if (inner.endsWith("-")) {
      trimNext = "all";
      inner = inner.slice(0, -1);
    } else if (inner.endsWith("+")) {
      inner = inner.slice(0, -1);
    } else if (kind !== "{") {
      trimNext = "newline";
    }
    if (text !== "") out.push({ kind: "text", text, line: textLine });
    if (kind !== "#") out.push({ kind: kind === "{" ? "output" : "block", text: inner, line });
    line += lineAt(template.slice(start, end + 2));
    pos = end + 2;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Expression tokens

interface Token {
  type: "name" | "number" | "string" | "op" | "end";
  value: string;
}

const OPERATORS = ["==", "!=", "<=", ">=", "//", "**", ..."+-*/%~<>()[]{}.,:|="];

function tokenize(
  source: string,
  line: number,
  fail: (what: string, line: number) => never,
): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < source.length) {
    const ch = source[i];
    if (/\s/.test(ch)) {
      i++;
    } else if (/[A-Za-z_]/.test(ch)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(source.slice(i))!;
      tokens.push({ type: "name", value: m[0] });
      i += m[0].length;
    } else if (/[0-9]/.test(ch)) {
      const m = /^[0-9]+(\.[0-9]+)?/.exec(source.slice(i))!;
      tokens.push({ type: "number", value: m[0] });
      i += m[0].length;
    } else if (ch === "'" || ch === '"') {
      let value = "";
      let j = i + 1;
      for (; j < source.length && source[j] !== ch; j++) {
        if (source[j] === "\\" && j + 1 < source.length) {
          const e = source[++j];
          value += e === "n" ? "\n" : e === "t" ? "\t" : e === "r" ? "\r" : e;
        } else value += source[j];
      }
      if (j >= source.length) {
        fail(`a string is not closed: ${JSON.stringify(source.slice(i, i + 30))}`, line);
      }
      tokens.push({ type: "string", value });
      i = j + 1;
    } else {
      const op = OPERATORS.find((o) => source.startsWith(o, i));
      if (op === undefined) fail(`unexpected character ${JSON.stringify(ch)}`, line);
      tokens.push({ type: "op", value: op! });
      i += op!.length;
    }
  }
  tokens.push({ type: "end", value: "" });
  return tokens;
}

// ---------------------------------------------------------------------------
// Expressions

class ExprParser {
  private i = 0;
  constructor(
    private readonly tokens: Token[],
    private readonly line: number,
    private readonly fail: (what: string, line: number) => never,
  ) {}

  peek(offset = 0): Token {
    return this.tokens[Math.min(this.i + offset, this.tokens.length - 1)];
  }
  private is(value: string, type: Token["type"] = "op"): boolean {
    const t = this.peek();
    return t.type === type && t.value === value;
  }
  accept(value: string, type: Token["type"] = "op"): boolean {
    if (!this.is(value, type)) return false;
    this.i++;
    return true;
  }
  expect(value: string, type: Token["type"] = "op"): void {
    if (!this.accept(value, type)) this.error(`expected "${value}"`);
  }
  name(): string {
    const t = this.peek();
    if (t.type !== "name") this.error("expected a name");
    this.i++;
    return t.value;
  }
  atEnd(): boolean {
    return this.peek().type === "end";
  }
  error(what: string): never {
    const t = this.peek();
    return this.fail(
      `${what}, found ${t.type === "end" ? "the end of the tag" : JSON.stringify(t.value)}`,
      this.line,
    );
  }
  private node<T extends object>(fields: T): T & { line: number } {
    return { ...fields, line: this.line };
  }

  expression(): Expr {
    const value = this.or();
    if (this.accept("if", "name")) {
      const test = this.or();
      const otherwise = this.accept("else", "name") ? this.expression() : null;
      return this.node({ kind: "conditional", test, then: value, otherwise });
    }
    return value;
  }
  /** An expression without a trailing `if` (a for loop's iterable, before its filter). */
  orExpression(): Expr {
    return this.or();
  }
  private or(): Expr {
    let left = this.and();
    while (this.accept("or", "name")) {
      left = this.node({ kind: "binary", op: "or", left, right: this.and() });
    }
    return left;
  }
  private and(): Expr {
    let left = this.not();
    while (this.accept("and", "name")) {
      left = this.node({ kind: "binary", op: "and", left, right: this.not() });
    }
    return left;
  }
  private not(): Expr {
    if (this.accept("not", "name")) {
      return this.node({ kind: "unary", op: "not", operand: this.not() });
    }
    return this.compare();
  }
  private compare(): Expr {
    let left = this.math1();
    for (;;) {
      const t = this.peek();
      let op: string | null = null;
      if (t.type === "op" && ["==", "!=", "<", ">", "<=", ">="].includes(t.value)) op = t.value;
      else if (t.type === "name" && t.value === "in") op = "in";
      else if (t.type === "name" && t.value === "not" && this.peek(1).value === "in") op = "not in";
      if (op === null) return left;
      this.i += op === "not in" ? 2 : 1;
      left = this.node({ kind: "binary", op, left, right: this.math1() });
    }
  }
  private math1(): Expr {
    let left = this.concat();
    while (this.is("+") || this.is("-")) {
      const op = this.peek().value;
      this.i++;
      left = this.node({ kind: "binary", op, left, right: this.concat() });
    }
    return left;
  }
  private concat(): Expr {
    let left = this.math2();
    while (this.accept("~")) {
      left = this.node({ kind: "binary", op: "~", left, right: this.math2() });
    }
    return left;
  }
  private math2(): Expr {
    let left = this.unary();
    while (["*", "/", "//", "%"].some((o) => this.is(o))) {
      const op = this.peek().value;
      this.i++;
      left = this.node({ kind: "binary", op, left, right: this.unary() });
    }
    return left;
  }
  private unary(): Expr {
    if (this.accept("-")) return this.node({ kind: "unary", op: "-", operand: this.unary() });
    this.accept("+");
    let value = this.postfix(this.primary());
    for (;;) {
      if (this.accept("|")) {
        const name = this.name();
        const { args, kwargs } = this.is("(") ? this.callArgs() : { args: [], kwargs: [] };
        value = this.node({ kind: "filter", name, operand: value, args, kwargs });
      } else if (this.accept("is", "name")) {
        const negated = this.accept("not", "name");
        const name = this.peek().type === "name" ? this.name() : this.error("expected a test name");
        let args: Expr[] = [];
        if (this.is("(")) args = this.callArgs().args;
        else if (!this.atEnd() && ["string", "number"].includes(this.peek().type)) {
          args = [this.primary()];
        }
        value = this.node({ kind: "test", name, operand: value, args, negated });
      } else return value;
    }
  }
  private postfix(value: Expr): Expr {
    for (;;) {
      if (this.accept(".")) {
        value = this.node({ kind: "attr", object: value, name: this.name() });
      } else if (this.accept("[")) {
        const part = (): Expr | null => (this.is(":") || this.is("]") ? null : this.expression());
        const start = part();
        if (this.accept(":")) {
          const stop = part();
          const step = this.accept(":") ? part() : null;
          value = this.node({ kind: "slice", object: value, start, stop, step });
        } else {
          if (start === null) this.error("expected an index");
          value = this.node({ kind: "index", object: value, index: start! });
        }
        this.expect("]");
      } else if (this.is("(")) {
        const { args, kwargs } = this.callArgs();
        value = this.node({ kind: "call", callee: value, args, kwargs });
      } else return value;
    }
  }
  private callArgs(): { args: Expr[]; kwargs: [string, Expr][] } {
    this.expect("(");
    const args: Expr[] = [];
    const kwargs: [string, Expr][] = [];
    while (!this.accept(")")) {
      if (this.peek().type === "name" && this.peek(1).value === "=" && this.peek(1).type === "op") {
        const key = this.name();
        this.i++;
        kwargs.push([key, this.expression()]);
      } else args.push(this.expression());
      if (!this.accept(",")) {
        this.expect(")");
        break;
      }
    }
    return { args, kwargs };
  }
  private primary(): Expr {
    const t = this.peek();
    if (t.type === "string") {
      let value = "";
      while (this.peek().type === "string") value += this.tokens[this.i++].value; // "a" "b" joins
      return this.node({ kind: "literal", value });
    }
    if (t.type === "number") {
      this.i++;
      return this.node({ kind: "literal", value: Number(t.value) });
    }
    if (t.type === "name") {
      this.i++;
      const literals: Record<string, unknown> = {
        true: true,
        True: true,
        false: false,
        False: false,
        none: null,
        None: null,
      };
      if (Object.hasOwn(literals, t.value)) {
        return this.node({ kind: "literal", value: literals[t.value] });
      }
      return this.node({ kind: "name", name: t.value });
    }
    if (this.accept("(")) {
      const value = this.expression();
      this.expect(")");
      return value;
    }
    if (this.accept("[")) {
      const items: Expr[] = [];
      while (!this.accept("]")) {
        items.push(this.expression());
        if (!this.accept(",")) {
          this.expect("]");
          break;
        }
      }
      return this.node({ kind: "list", items });
    }
    if (this.accept("{")) {
      const entries: [Expr, Expr][] = [];
      while (!this.accept("}")) {
        const key = this.expression();
        this.expect(":");
        entries.push([key, this.expression()]);
        if (!this.accept(",")) {
          this.expect("}");
          break;
        }
      }
      return this.node({ kind: "dict", entries });
    }
    return this.error("expected a value");
  }
}

// ---------------------------------------------------------------------------
// Statements

/**
 * Parse a chat template into statements.
 *
 * @throws {FlashlmError} naming `file` and the line for a syntax error or an unsupported tag.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseTemplate } from "./chat_template_parse.ts";
 * assert.equal(parseTemplate("a{% if x %}b{% endif %}", "t")[1].kind, "if");
 * assert.throws(() => parseTemplate("{% macro m() %}{% endmacro %}", "t.json"),
 *   /^FlashlmError: t\.json: chat_template line 1: the tag "macro" is not supported/);
 * ```
 */
export function parseTemplate(template: string, file: string): Stmt[] {
  const fail = (what: string, line: number): never => {
    throw new FlashlmError(`chat_template line ${line}: ${what}`, { file, kind: "config" });
  };
  const parts = segments(template, fail);
  let k = 0;
  const parser = (s: Segment): ExprParser =>
    new ExprParser(tokenize(s.text, s.line, fail), s.line, fail);
  const done = (p: ExprParser): void => {
    if (!p.atEnd()) p.error("expected the end of the tag");
  };

  /** Statements up to one of the `ends` tags; returns them and that tag's parser. */
  const body = (ends: string[]): { stmts: Stmt[]; end: string; p: ExprParser | null } => {
    const stmts: Stmt[] = [];
    while (k < parts.length) {
      const s = parts[k++];
      if (s.kind === "text") {
        stmts.push({ kind: "text", text: s.text, line: s.line });
        continue;
      }
      const p = parser(s);
      if (s.kind === "output") {
        const expr = p.expression();
        done(p);
        stmts.push({ kind: "output", expr, line: s.line });
        continue;
      }
      const tag = p.peek().type === "name" ? p.name() : p.error("expected a tag name");
      if (ends.includes(tag)) return { stmts, end: tag, p };
      if (tag === "if") {
        const branches: { test: Expr | null; body: Stmt[] }[] = [];
        let test: Expr | null = p.expression();
        done(p);
        for (;;) {
          const next = body(["elif", "else", "endif"]);
          branches.push({ test, body: next.stmts });
          if (next.end === "endif") break;
          if (next.end === "elif") test = next.p!.expression();
          else test = null;
          done(next.p!);
          if (next.end === "else") {
            const last = body(["endif"]);
            branches.push({ test: null, body: last.stmts });
            break;
          }
        }
        stmts.push({ kind: "if", branches, line: s.line });
      } else if (tag === "for") {
        const targets = [p.name()];
        while (p.accept(",")) targets.push(p.name());
        p.expect("in", "name");
        const iterable = p.orExpression();
        const filter = p.accept("if", "name") ? p.expression() : null;
        done(p);
        const loop = body(["else", "endfor"]);
        const orElse = loop.end === "else" ? body(["endfor"]).stmts : [];
        stmts.push({
          kind: "for",
          targets,
          iterable,
          filter,
          body: loop.stmts,
          orElse,
          line: s.line,
        });
      } else if (tag === "set") {
        const target = p.name();
        const attribute = p.accept(".") ? p.name() : null;
        if (!p.accept("=")) fail('only "set name = value" is supported (not set blocks)', s.line);
        const value = p.expression();
        done(p);
        stmts.push({ kind: "set", target, attribute, value, line: s.line });
      } else if (tag === "generation") {
        // transformers' marker of the assistant's part: its content renders as is.
        done(p);
        stmts.push(...body(["endgeneration"]).stmts);
      } else {
        fail(`the tag "${tag}" is not supported`, s.line);
      }
    }
    if (ends.length > 0) {
      fail(`the template ends before {% ${ends.at(-1)} %}`, parts.at(-1)?.line ?? 1);
    }
    return { stmts, end: "", p: null };
  };
  return body([]).stmts;
}
