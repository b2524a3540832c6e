import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Schema from "effect/Schema"
import * as LlmError from "../src/LlmError.js"

const all: Array<[LlmError.LlmError, boolean]> = [
  [new LlmError.RateLimited({ retryAfter: Duration.seconds(2) }), true],
  [new LlmError.ProviderUnavailable({ status: 503 }), true],
  [new LlmError.Timeout({ after: Duration.seconds(60), scope: "attempt" }), true],
  [new LlmError.Transport({ reason: "ECONNRESET" }), true],
  [new LlmError.ProtocolError({ reason: "not JSON" }), true],
  [new LlmError.QuotaExhausted({ code: "insufficient_quota" }), false],
  [new LlmError.InvalidRequest({ field: "messages", reason: "empty" }), false],
  [new LlmError.AuthenticationFailed({ status: 401 }), false],
  [new LlmError.Refused({ refusal: "no" }), false],
  [new LlmError.Truncated({ outputTokens: 10 }), false],
  [new LlmError.OutputInvalid({ reason: "missing", path: "score", raw: "{}" }), false],
  [
    new LlmError.BudgetExceeded({
      scope: "global",
      window: "total",
      limit: "1",
      spent: "0.5",
      reserved: "0.4",
      requested: "0.2"
    }),
    false
  ],
  [new LlmError.PricingUnknown({ model: "mystery" }), false],
  [new LlmError.CircuitOpen({ model: "gpt-4o" }), false]
]

describe("LlmError", () => {
  it("retryability is a property of the error: only transient failures retry", () => {
    for (const [error, retryable] of all) {
      assert.strictEqual(LlmError.isRetryable(error), retryable, error._tag)
      assert.isTrue(LlmError.isLlmError(error))
    }
    assert.isFalse(LlmError.isLlmError(new Error("x")))
    assert.isFalse(LlmError.isLlmError({ _tag: "Other" }))
  })

  it("every error has a message a person can act on", () => {
    for (const [error] of all) assert.isAbove(error.message.length, 10, error._tag)
    assert.strictEqual(
      new LlmError.RateLimited({ retryAfter: Duration.millis(1500), model: "gpt-4o", requestId: "req_1" }).message,
      "Rate limited by the provider; retry after 1s 500ms (model gpt-4o) [request req_1]"
    )
  })

  it("errors round-trip through their Schema, e.g. for a record or a journal", () => {
    const codec = Schema.parseJson(LlmError.LlmError)
    for (const [error] of all) {
      const decoded = Schema.decodeSync(codec)(Schema.encodeSync(codec)(error))
      assert.strictEqual(decoded._tag, error._tag)
      assert.strictEqual(decoded.message, error.message)
    }
  })

  it("retryAfter reads the provider's hint where there is one", () => {
    assert.isTrue(Duration.equals(LlmError.retryAfter(all[0]![0])!, Duration.seconds(2)))
    assert.isUndefined(LlmError.retryAfter(all[1]![0]))
  })
})
