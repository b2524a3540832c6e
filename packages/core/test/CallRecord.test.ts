import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as FastCheck from "effect/FastCheck"
import * as Crypto from "node:crypto"
import * as CallRecord from "../src/CallRecord.js"
import type * as LlmRequest from "../src/LlmRequest.js"

const request: LlmRequest.LlmRequest = {
  model: "gpt-4o-mini",
  messages: [{ role: "system", content: "Score the listing" }, { role: "user", content: "Senior Rust engineer" }],
  tools: [{ name: "score", parameters: { type: "object", properties: { score: { type: "number" } } }, strict: true }],
  toolChoice: { tool: "score" },
  maxOutputTokens: 200,
  temperature: 0,
  task: "score",
  scope: "run:1"
}

const validRecord: CallRecord.CallRecord = {
  ts: "2026-11-29T05:00:00.000Z",
  callId: "c0ffee",
  scope: "run:1",
  task: "score",
  route: { reason: "request" },
  provider: "openai",
  model: "gpt-4o-mini",
  mode: "sync",
  promptHash: CallRecord.promptHash(request),
  attempts: 2,
  latencyMs: 812.5,
  inputTokens: 120,
  cachedInputTokens: 64,
  outputTokens: 30,
  reasoningTokens: 0,
  costUsd: "0.0000342",
  outcome: "error",
  errorTag: "RateLimited",
  errorMessage: "Rate limited by the provider",
  requestId: "req_1"
}

describe("CallRecord.promptHash", () => {
  it("is sha256 of the canonical JSON of the model-independent parts", () => {
    const canonical = "{\"maxOutputTokens\":200," +
      "\"messages\":[{\"content\":\"Score the listing\",\"role\":\"system\"},{\"content\":\"Senior Rust engineer\",\"role\":\"user\"}]," +
      "\"temperature\":0,\"toolChoice\":{\"tool\":\"score\"}," +
      "\"tools\":[{\"name\":\"score\",\"parameters\":{\"properties\":{\"score\":{\"type\":\"number\"}},\"type\":\"object\"},\"strict\":true}]}"
    const expected = "sha256:" + Crypto.createHash("sha256").update(canonical).digest("hex")
    assert.strictEqual(CallRecord.promptHash(request), expected)
  })

  it("ignores the model, keel's own fields and key order; changes with the prompt", () => {
    const other: LlmRequest.LlmRequest = {
      scope: "tenant:acme",
      temperature: 0,
      maxOutputTokens: 200,
      toolChoice: { tool: "score" },
      tools: request.tools!,
      messages: request.messages,
      model: "gpt-4.1",
      task: "other"
    }
    assert.strictEqual(CallRecord.promptHash(other), CallRecord.promptHash(request))
    assert.notStrictEqual(
      CallRecord.promptHash({ ...request, messages: [{ role: "user", content: "Junior Rust engineer" }] }),
      CallRecord.promptHash(request)
    )
    assert.notStrictEqual(CallRecord.promptHash({ ...request, seed: 7 }), CallRecord.promptHash(request))
  })

  it("canonical JSON is JSON.stringify with every object's keys sorted, small objects and large", () => {
    // (an object cannot hold its keys sorted: integer-like ones always come first)
    const sorted = (value: unknown): string =>
      Array.isArray(value)
        ? `[${value.map(sorted).join(",")}]`
        : typeof value === "object" && value !== null
        ? `{${
          Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${sorted((value as any)[key])}`).join(",")
        }}`
        : JSON.stringify(value)
    const wide = FastCheck.dictionary(FastCheck.string({ maxLength: 3 }), FastCheck.jsonValue({ maxDepth: 1 }), {
      minKeys: 10,
      maxKeys: 40
    })
    FastCheck.assert(
      FastCheck.property(FastCheck.oneof(FastCheck.jsonValue(), wide), (value) => {
        assert.strictEqual(CallRecord.canonicalJson(value), sorted(value))
      }),
      { numRuns: 1_000 }
    )
  })
})

describe("CallRecord schema", () => {
  it.effect("decodes a record that went through JSON", () =>
    Effect.gen(function*() {
      const decoded = yield* CallRecord.decodeUnknown(JSON.parse(JSON.stringify(validRecord)))
      assert.deepStrictEqual(decoded, validRecord)
    }))

  it.effect("rejects a float cost, a bad hash, an unknown outcome and unknown fields", () =>
    Effect.gen(function*() {
      for (
        const bad of [
          { ...validRecord, costUsd: 0.1 },
          { ...validRecord, costUsd: "1e-7" },
          { ...validRecord, promptHash: "md5:abc" },
          { ...validRecord, outcome: "maybe" },
          { ...validRecord, ts: "yesterday" },
          { ...validRecord, apiKey: "sk-123" }
        ]
      ) {
        const result = yield* Effect.either(CallRecord.decodeUnknown(bad))
        assert.strictEqual(result._tag, "Left", JSON.stringify(bad))
      }
    }))
})
