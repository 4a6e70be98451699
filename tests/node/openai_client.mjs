// openai_client.mjs - drives `hearth serve` with the official openai npm
// client (v6): chat and completions, streamed and not, n > 1, stop strings,
// logprobs, include_usage, and the error classes the client maps statuses to.
// Usage: node openai_client.mjs BASE_URL [API_KEY]   (NODE_PATH has openai)
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(process.env.OPENAI_MODULE_DIR + '/');
const OpenAI = require('openai').default ?? require('openai');

const base = process.argv[2];
const client = new OpenAI({ baseURL: base + '/v1', apiKey: process.argv[3] || 'none', maxRetries: 0, timeout: 60000 });
const bad = new OpenAI({ baseURL: base + '/v1', apiKey: 'wrong-key', maxRetries: 0 });
const model = (await client.models.list()).data[0].id;

let passed = 0, failed = 0;
async function test(name, fn) {
  try { await fn(); passed++; } catch (e) { failed++; console.error(`FAIL ${name}:`, e?.stack || e); }
}

const msgs = [{ role: 'user', content: 'Tell me a story' }];

await test('models list', async () => {
  const list = await client.models.list();
  assert.equal(list.data.length, 1);
  assert.equal(list.data[0].object, 'model');
  assert.ok(list.data[0].context_length > 0);
});

let greedy;
await test('chat non-stream', async () => {
  const r = await client.chat.completions.create({ model, messages: msgs, max_tokens: 16, temperature: 0 });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 16);
  assert.equal(typeof r.usage.prompt_tokens_details.cached_tokens, 'number');
  greedy = r.choices[0].message.content;
  assert.ok(greedy.length > 0);
});

await test('chat stream + include_usage', async () => {
  const s = await client.chat.completions.create({
    model, messages: msgs, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '', usage = null, finish = null, role = null;
  for await (const ch of s) {
    if (ch.usage) { usage = ch.usage; assert.equal(ch.choices.length, 0); }
    for (const c of ch.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(role, 'assistant');
  assert.equal(text, greedy);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 16);
});

await test('chat n=3', async () => {
  const r = await client.chat.completions.create({ model, messages: msgs, max_tokens: 4, n: 3, seed: 1 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  assert.equal(r.usage.completion_tokens, 12);
});

await test('chat stream n=2', async () => {
  const s = await client.chat.completions.create({ model, messages: msgs, max_tokens: 6, n: 2, temperature: 0, stream: true });
  const texts = ['', ''], fin = [null, null];
  for await (const ch of s) for (const c of ch.choices) { texts[c.index] += c.delta.content ?? ''; if (c.finish_reason) fin[c.index] = c.finish_reason; }
  assert.equal(texts[0], texts[1]);
  assert.deepEqual(fin, ['length', 'length']);
});

await test('chat logprobs', async () => {
  const r = await client.chat.completions.create({ model, messages: msgs, max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2 });
  const lp = r.choices[0].logprobs.content;
  assert.equal(lp.length, 5);
  for (const t of lp) { assert.ok(t.logprob <= 0); assert.equal(t.top_logprobs.length, 2); assert.ok(Array.isArray(t.bytes)); }
});

await test('chat stop', async () => {
  const r = await client.chat.completions.create({ model, messages: msgs, max_tokens: 60, temperature: 0, stop: ['.', '!'] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(!r.choices[0].message.content.includes('.'));
});

let ctext;
await test('completions', async () => {
  const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 12, temperature: 0, logprobs: 1 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].logprobs.tokens.length, 12);
  ctext = r.choices[0].text;
});

await test('completions stream', async () => {
  const s = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '', usage = null;
  for await (const ch of s) { if (ch.usage) usage = ch.usage; for (const c of ch.choices) text += c.text; }
  assert.equal(text, ctext);
  assert.equal(usage.completion_tokens, 12);
});

await test('completions list prompt, n=2', async () => {
  const r = await client.completions.create({ model, prompt: ['Once upon a time', 'The dog'], max_tokens: 3, n: 2, temperature: 0 });
  assert.equal(r.choices.length, 4);
  assert.equal(r.choices[0].text, r.choices[1].text);
});

async function expectError(name, cls, status, fn) {
  await test(name, async () => {
    await assert.rejects(fn, (e) => {
      assert.ok(e instanceof cls, `${e?.constructor?.name} is not ${cls.name}`);
      assert.equal(e.status, status);
      assert.equal(typeof e.error?.message ?? e.message, 'string');
      return true;
    });
  });
}
await expectError('400 bad request', OpenAI.BadRequestError, 400, () =>
  client.chat.completions.create({ model, messages: msgs, max_tokens: -1 }));
await expectError('400 context', OpenAI.BadRequestError, 400, () =>
  client.chat.completions.create({ model, messages: msgs, max_tokens: 10000000 }));
await expectError('404 model', OpenAI.NotFoundError, 404, () =>
  client.chat.completions.create({ model: 'no-such-model', messages: msgs }));
await expectError('400 tools', OpenAI.BadRequestError, 400, () =>
  client.chat.completions.create({ model, messages: msgs, tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }));
if (process.argv[3])
  await expectError('401 key', OpenAI.AuthenticationError, 401, () =>
    bad.chat.completions.create({ model, messages: msgs, max_tokens: 1 }));

await test('abort mid-stream', async () => {
  const ac = new AbortController();
  const s = await client.completions.create({ model, prompt: 'Once', max_tokens: 400, ignore_eos: true, stream: true }, { signal: ac.signal });
  let n = 0;
  try { for await (const _ of s) { if (++n === 3) ac.abort(); } } catch (e) { assert.ok(e.name.includes('Abort'), e.name); }
  assert.ok(n >= 3);
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
