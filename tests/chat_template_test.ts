import { strict as assert } from "node:assert";
import { type ChatMessage, ChatTemplate, chatTemplateFromConfig } from "../core/chat_template.ts";
import { FlashlmError } from "../io/errors.ts";

// The templates below are the ones the models' tokenizer_config.json files hold; the expected
// prompts are the formats their model cards document.

const CHATML_SMOLLM2 =
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}" +
  "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}" +
  "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const LLAMA3 =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = " +
  "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + " +
  "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}" +
  "{{ content }}{% endfor %}{% if add_generation_prompt %}" +
  "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

const LLAMA2 = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}" +
  "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}" +
  "{% set system_message = false %}{% endif %}{% for message in loop_messages %}" +
  "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}" +
  "{% endif %}{% if loop.index0 == 0 and system_message != false %}" +
  "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}" +
  "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}" +
  "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}" +
  "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

const ZEPHYR = `{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}`;

const CHAT: ChatMessage[] = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi " },
  { role: "assistant", content: "Hello!" },
  { role: "user", content: "Bye" },
];

function render(
  template: string,
  messages: ChatMessage[],
  extra: Record<string, unknown> = {},
): string {
  return ChatTemplate.parse(template, "tokenizer_config.json").render({ messages, ...extra });
}

Deno.test("ChatML (SmolLM2, Qwen2) renders each turn and the generation prompt", () => {
  assert.equal(
    render(CHATML_SMOLLM2, [{ role: "user", content: "Hi" }], { add_generation_prompt: true }),
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" +
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
  );
  assert.equal(
    render(CHATML_SMOLLM2, CHAT.slice(0, 2)),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi <|im_end|>\n",
  );
});

Deno.test("Llama 3's template puts BOS first, trims contents and opens the assistant header", () => {
  assert.equal(
    render(LLAMA3, CHAT.slice(0, 2), {
      bos_token: "<|begin_of_text|>",
      add_generation_prompt: true,
    }),
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\n",
  );
});

Deno.test("Llama 2's template folds the system prompt into the first turn and refuses roles out of order", () => {
  const special = { bos_token: "<s>", eos_token: "</s>" };
  assert.equal(
    render(LLAMA2, CHAT, special),
    "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]",
  );
  assert.equal(render(LLAMA2, [{ role: "user", content: " x " }], special), "<s>[INST] x [/INST]");
  assert.throws(
    () => render(LLAMA2, [{ role: "user", content: "a" }, { role: "user", content: "b" }], special),
    (err: unknown) => {
      assert.ok(err instanceof FlashlmError);
      assert.equal(err.kind, "usage");
      assert.equal(
        err.message,
        "tokenizer_config.json: chat template: Conversation roles must alternate " +
          "user/assistant/user/assistant/...",
      );
      return true;
    },
  );
});

Deno.test("a template written over many lines (TinyLlama, Zephyr) loses its block tags' line breaks", () => {
  assert.equal(
    render(ZEPHYR, [{ role: "user", content: "Hi" }], {
      eos_token: "</s>",
      add_generation_prompt: true,
    }),
    "<|user|>\nHi</s>\n<|assistant|>\n",
  );
  assert.equal(
    render(ZEPHYR, CHAT.slice(0, 3), { eos_token: "</s>" }),
    "<|system|>\nBe brief.</s>\n<|user|>\nHi </s>\n<|assistant|>\nHello!</s>\n",
  );
});

Deno.test("whitespace control, indentation before block tags, namespaces, loops, tests and filters", () => {
  const two = [{ role: "user", content: "a" }, { role: "assistant", content: "b" }];
  assert.equal(render("{%- for m in messages -%}\n  {{- m.content -}}\n{%- endfor %}", two), "ab");
  assert.equal(
    render(
      "{% for m in messages %}\n    {% if true %}[{{ m.content }}]\n    {% endif %}\n{% endfor %}",
      two,
    ),
    "[a]\n[b]\n",
  );
  assert.equal(render("{% if true %}  {% endif %}|", two), "  |"); // not at a line start: kept
  const ns =
    "{% set ns = namespace(found=false) %}{% for m in messages %}{% if m.role == 'assistant' %}" +
    "{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }}";
  assert.equal(render(ns, two), "True");
  assert.equal(
    render(
      "{% for m in messages if m.role != 'user' %}{{ loop.index }}/{{ loop.length }}:{{ m.content }}{% endfor %}",
      two,
    ),
    "1/1:b",
  );
  assert.equal(
    render(
      "{{ messages | length }} {{ (messages | last).content | upper }} {{ x is defined }} {{ x | default('d') }}",
      two,
    ),
    "2 B False d",
  );
  assert.equal(
    render(
      "{{ messages[-1]['content'] ~ 3 }} {{ 7 // 2 }} {{ -7 % 3 }} {{ 'a' if none else 'b' }}",
      two,
    ),
    "b3 3 2 b",
  );
  assert.equal(
    render("{{ {'k': [1, 'x', none, true]} | tojson }}", two),
    '{"k": [1, "x", null, true]}',
  );
  assert.equal(
    render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}", two),
    "a=1;b=2;",
  );
  assert.equal(
    render("{{ 'x' in 'xyz' }} {{ 'q' not in ['a'] }} {{ ' a b '.split() | join(',') }}", two),
    "True True a,b",
  );
  assert.equal(render("{# a comment #}{{ 'é' + \"\\n\" }}", two), "é\n");
});

Deno.test("select, reject, selectattr, map and strftime_now work as Llama 3.1's template uses them", () => {
  const tools = { builtin_tools: ["brave_search", "code_interpreter", "wolfram_alpha"] };
  assert.equal(
    render("{{ builtin_tools | reject('equalto', 'code_interpreter') | join(', ') }}", [], tools),
    "brave_search, wolfram_alpha",
  );
  assert.equal(render("{{ [0, 1, 2, ''] | select | list | length }}", []), "2");
  assert.equal(
    render(
      "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join('|') }}",
      CHAT,
    ),
    "Hi |Bye",
  );
  assert.equal(
    render("{{ messages | rejectattr('role', 'equalto', 'user') | length }}", CHAT),
    "2",
  );
  assert.equal(render("{{ ['a', 'B'] | map('upper') | join }}", []), "AB");
  const dated = render(
    '{%- if strftime_now is defined %}{%- set date_string = strftime_now("%d %b %Y") %}' +
      '{%- else %}{%- set date_string = "26 Jul 2024" %}{%- endif %}Today Date: {{ date_string }}',
    [],
  );
  assert.match(dated, /^Today Date: \d\d [A-Z][a-z]{2} \d{4}$/);
});

Deno.test("a template that does not parse, or uses what is not supported, is one line naming the file and line", () => {
  const check = (template: string, message: RegExp): void => {
    assert.throws(() => ChatTemplate.parse(template, "m/tokenizer_config.json"), (err: unknown) => {
      assert.ok(err instanceof FlashlmError);
      assert.ok(!err.message.includes("\n"), err.message);
      assert.match(err.message, message);
      return true;
    });
  };
  check(
    "{{ x ",
    /^m\/tokenizer_config\.json: chat_template line 1: the tag opened here is never closed with \}\}$/,
  );
  check(
    "a\n{% for m in messages %}",
    /chat_template line 2: the template ends before \{% endfor %\}/,
  );
  check(
    "\n\n{% macro f() %}{% endmacro %}",
    /chat_template line 3: the tag "macro" is not supported/,
  );
  check("{{ 1 + }}", /chat_template line 1: expected a value, found the end of the tag/);
  check("{% if x y %}{% endif %}", /chat_template line 1: expected the end of the tag, found "y"/);
  assert.throws(
    () => render("{{ messages | shuffle }}", []),
    /tokenizer_config\.json: chat_template line 1: the filter "shuffle" is not supported/,
  );
  assert.throws(
    () => render("{{ 'a' + 1 }}", []),
    /cannot add "a" and "1" \(use ~ to join as text\)/,
  );
});

Deno.test("chatTemplateFromConfig reads a string or the default of a named list, and null when absent", () => {
  assert.equal(chatTemplateFromConfig("{}", "c.json"), null);
  const named = JSON.stringify({
    chat_template: [
      { name: "tool_use", template: "tools" },
      { name: "default", template: "{{ messages[0].content }}!" },
    ],
  });
  assert.equal(
    chatTemplateFromConfig(named, "c.json")?.render({ messages: CHAT.slice(1) }),
    "Hi !",
  );
  assert.throws(
    () => chatTemplateFromConfig('{"chat_template": 3}', "c.json"),
    /^FlashlmError: c\.json: chat_template is 3/,
  );
  assert.throws(() => chatTemplateFromConfig("{", "c.json"), /c\.json: not valid JSON/);
});
