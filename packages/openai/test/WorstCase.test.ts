/**
 * The budget's worst case must be a worst case: for any request, the o200k tokenizer's input estimate
 * (what a reservation is priced at) is never below the prompt tokens the simulator bills for the same
 * wire body (the simulator counts like OpenAI: messages with their overhead, the tools array and the
 * response format as sent, JSON escaping included).
 */
import { assert, describe, it } from "@effect/vitest"
import type * as LlmRequest from "@keel/core/LlmRequest"
import * as Effect from "effect/Effect"
import * as FastCheck from "effect/FastCheck"
import { Engine } from "../src/internal/simulator/engine.js"
import { loadCounter } from "../src/internal/simulator/tokens.js"
import * as OpenAiLanguageModel from "../src/OpenAiLanguageModel.js"
import * as OpenAiTokenizer from "../src/OpenAiTokenizer.js"

const fc = FastCheck

/** Text as prompts carry it: ASCII words, any Unicode (astral planes too), JSON-hostile characters. */
const text = (maxLength: number) =>
  fc.oneof(
    fc.lorem({ maxCount: Math.max(1, Math.floor(maxLength / 8)) }),
    fc.fullUnicodeString({ maxLength }),
    fc.string({ maxLength }),
    fc.stringOf(fc.constantFrom("\"", "\\", "\n", "\t", "\u0000", "\u001f", "</", "{}", "é", "日本", "🙂"), {
      maxLength
    })
  )

const name = fc.stringMatching(/^[a-zA-Z0-9_-]{1,64}$/)

/** A strict JSON Schema: closed objects with every property required, nested up to three levels. */
const schema: FastCheck.Arbitrary<Record<string, unknown>> = fc.letrec<{ value: unknown; object: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.record({ type: fc.constant("string"), description: text(40) }, { requiredKeys: ["type"] }),
    fc.constant({ type: "integer" }),
    fc.constant({ type: "number", minimum: 0, maximum: 100 }),
    fc.constant({ type: "boolean" }),
    fc.uniqueArray(text(20), { minLength: 1, maxLength: 20 }).map((values) => ({ type: "string", enum: values })),
    fc.record({ type: fc.constant("array"), items: tie("value") }),
    fc.record({ anyOf: fc.tuple(tie("value"), fc.constant({ type: "null" })) }),
    tie("object")
  ),
  object: fc.dictionary(fc.oneof(name, text(16).filter((key) => key !== "__proto__")), tie("value"), {
    maxKeys: 6
  }).map((properties) => ({
    type: "object",
    properties,
    required: Object.keys(properties),
    additionalProperties: false
  }))
})).object as FastCheck.Arbitrary<Record<string, unknown>>

const tool = fc.record({
  name,
  description: fc.option(text(200), { nil: undefined }),
  parameters: schema,
  strict: fc.constant(true)
}, { requiredKeys: ["name", "parameters", "strict"] })

const toolCall = fc.record({ id: name, name, arguments: text(200) })

const message: FastCheck.Arbitrary<LlmRequest.Message> = fc.oneof(
  fc.record({ role: fc.constant("system" as const), content: text(4_000) }),
  fc.record({ role: fc.constant("developer" as const), content: text(500) }),
  fc.record({ role: fc.constant("user" as const), content: text(1_000), name }, {
    requiredKeys: ["role", "content"]
  }),
  fc.record({
    role: fc.constant("assistant" as const),
    content: text(500),
    toolCalls: fc.array(toolCall, { minLength: 1, maxLength: 3 })
  }, { requiredKeys: ["role"] }),
  fc.record({ role: fc.constant("tool" as const), toolCallId: name, content: text(500) })
)

const request: FastCheck.Arbitrary<LlmRequest.Resolved> = fc.record({
  model: fc.constant("gpt-4o-mini"),
  messages: fc.array(message, { minLength: 1, maxLength: 30 }),
  tools: fc.array(tool, { maxLength: 4 }),
  responseFormat: fc.option(
    fc.record({
      _tag: fc.constant("json_schema" as const),
      name,
      description: fc.option(text(200), { nil: undefined }),
      schema,
      strict: fc.constant(true)
    }, { requiredKeys: ["_tag", "name", "schema", "strict"] }),
    { nil: undefined }
  ),
  maxOutputTokens: fc.option(fc.integer({ min: 1, max: 4_096 }), { nil: undefined })
}, { requiredKeys: ["model", "messages"] }).map((r) => (r.tools?.length === 0 ? { ...r, tools: undefined } : r))

/** Drops absent optional fields, as a decoded request has none set to undefined. */
const defined = <A>(value: A): A => JSON.parse(JSON.stringify(value))

describe("OpenAiTokenizer: the reserved input estimate is a worst case", () => {
  // The estimate counts `tools` and `response_format` as the JSON that is sent; counting them as their
  // parts plus a fixed overhead fell below it (`{"type":"json_schema","json_schema":{"name":"A",…}}`
  // bills 42 where that estimate was 33).
  it.effect(
    "over 1,000 generated requests it is never below the simulator's prompt_tokens for the same body",
    () =>
      Effect.gen(function*() {
        const count = yield* loadCounter
        yield* OpenAiTokenizer.load
        const engine = new Engine({
          seed: 1,
          now: () => 0,
          nonce: 0,
          models: ["gpt-4o-mini"],
          outages: [],
          capacityPerSecond: undefined,
          baseMs: 0,
          perOutputTokenMs: 0,
          jitterMs: 0,
          limits: {},
          limitsByModel: {},
          faults: {},
          faultsByModel: {},
          retryAfterMs: 0
        }, count)
        const billed = (r: LlmRequest.Resolved): number => {
          const answer = engine.complete(OpenAiLanguageModel.toWire(r))
          assert.strictEqual(answer.status, 200, JSON.stringify(answer.body))
          return (answer.body as { usage: { prompt_tokens: number } }).usage.prompt_tokens
        }
        let runs = 0
        let withTools = 0
        let withFormat = 0
        let over = 0
        FastCheck.assert(
          FastCheck.property(request, (generated) => {
            const r = defined(generated)
            const estimate = Effect.runSync(OpenAiTokenizer.input(r))
            const prompt = billed(r)
            assert.isAtLeast(estimate, prompt, JSON.stringify(OpenAiLanguageModel.toWire(r)).slice(0, 2_000))
            runs++
            if (r.tools !== undefined) withTools++
            if (r.responseFormat !== undefined) withFormat++
            over = Math.max(over, estimate - prompt)
          }),
          { numRuns: 1_000, seed: 20261201 }
        )
        assert.strictEqual(runs, 1_000)
        // The shapes the property is about were generated.
        assert.isAbove(withTools, 300)
        assert.isAbove(withFormat, 300)
        // A worst case, but not a wild one: never more than 100 tokens above what is billed.
        assert.isAtMost(over, 100)
      }),
    120_000
  )
})
