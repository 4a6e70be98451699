// openai_arch.mjs - one model served through its own chat template, driven
// by the official openai npm client (v6): a greedy chat completion streamed
// and not, with the token counts the caller worked out from `hearth
// template` + `hearth tokenize` (never the server's own numbers).
// Usage: node openai_arch.mjs BASE_URL MESSAGES.json PROMPT_TOKENS MAX_TOKENS [harmony]
// (OPENAI_MODULE_DIR names the node_modules folder that has openai)
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(process.env.OPENAI_MODULE_DIR + '/');
const OpenAI = require('openai').default ?? require('openai');

const [base, msgFile, promptArg, maxArg, flavour] = process.argv.slice(2);
const messages = JSON.parse(readFileSync(msgFile, 'utf8'));
const promptTokens = Number(promptArg), maxTokens = Number(maxArg);
const client = new OpenAI({ baseURL: base + '/v1', apiKey: 'none', maxRetries: 0, timeout: 60000 });
const model = (await client.models.list()).data[0].id;

let passed = 0, failed = 0;
async function test(name, fn) {
  try { await fn(); passed++; } catch (e) { failed++; console.error(`FAIL ${name}:`, e?.stack || e); }
}

// ignore_eos (a hearth extension, sent as is by the client): the random-weight
// fixtures may sample their end token early; the count must be exact
const req = { model, messages, max_tokens: maxTokens, temperature: 0, ignore_eos: true };

let text = null;
await test('chat non-stream', async () => {
  const r = await client.chat.completions.create({ ...req, logprobs: true });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.prompt_tokens, promptTokens);
  assert.equal(r.usage.completion_tokens, maxTokens);
  assert.equal(r.usage.total_tokens, promptTokens + maxTokens);
  assert.equal(r.choices[0].logprobs.content.length, maxTokens); // one entry per generated token
  text = r.choices[0].message.content;
  assert.equal(typeof text, 'string');
  assert.ok(text.length > 0, 'empty completion');
});

await test('chat stream + include_usage', async () => {
  const s = await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
  let got = '', usage = null, finish = null;
  for await (const ch of s) {
    if (ch.usage) usage = ch.usage;
    for (const c of ch.choices) {
      if (c.delta.content) got += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(got, text);
  assert.equal(finish, 'length');
  assert.equal(usage.prompt_tokens, promptTokens);
  assert.equal(usage.completion_tokens, maxTokens);
  // the same prompt a second time: served from the prefix cache, same text
  assert.ok(usage.prompt_tokens_details.cached_tokens > 0, 'no prefix-cache hit');
});

// TODO(harmony, not enabled): once the server splits gpt-oss's harmony
// channels (the tok slice of issue 13), a reply of the form
// "<|channel|>analysis<|message|>R<|end|><|start|>assistant<|channel|>final<|message|>C"
// must come back as reasoning_content R and content C, streamed and not.
// The stories260K vocabulary of the fixtures has no harmony tokens, so this
// needs a model (or a scripted reply) that produces them; then enable it by
// passing "harmony" as the fifth argument from serve_arch.sh (it does not yet).
if (flavour === 'harmony') {
  await test('harmony reasoning_content', async () => {
    const r = await client.chat.completions.create(req);
    assert.equal(typeof r.choices[0].message.reasoning_content, 'string');
    assert.ok(!r.choices[0].message.content.includes('<|channel|>'));
  });
}

console.log(`${model}: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
