import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Schema from "effect/Schema"
import * as LlmError from "../src/LlmError.js"

const all: Array<[LlmError.LlmError, boolean]> = [
  [new LlmError.RateLimited({ retryAfter: Duration.seconds(2) }), true],
  [new LlmError.ProviderUnavailable({ status: 503 }), true],
  [new LlmError.Timeout({ after: Duration.seconds(60), level: "attempt" }), true],
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
  [new LlmError.CircuitOpen({ model: "gpt-4o" }), false],
  // The call's own deadline is final: retrying it would run past the deadline the caller set.
  [new LlmError.Timeout({ after: Duration.minutes(3), level: "call" }), false],
  // The provider said not to retry (x-should-retry: false).
  [new LlmError.ProviderUnavailable({ status: 503, shouldRetry: false }), false],
  [new LlmError.ProviderUnavailable({ status: 503, shouldRetry: true }), true],
  [new LlmError.Transport({ reason: "body cut", afterResponse: true }), true],
  [new LlmError.BudgetUnavailable({ operation: "reserve", reason: "connection refused" }), false]
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
    // A 503 may carry retry-after too: the hint counts there as on a 429.
    const hinted = new LlmError.ProviderUnavailable({ status: 503, retryAfter: Duration.millis(1500) })
    assert.isTrue(Duration.equals(LlmError.retryAfter(hinted)!, Duration.millis(1500)))
    assert.isUndefined(LlmError.retryAfter(new LlmError.Timeout({ after: Duration.seconds(1), level: "attempt" })))
  })

  it("mayHaveBeenBilled: a timeout, an unreadable answer or a body cut after the response, nothing else", () => {
    const billed = (error: LlmError.LlmError) => LlmError.mayHaveBeenBilled(error)
    assert.isTrue(billed(new LlmError.Timeout({ after: Duration.seconds(1), level: "attempt" })))
    assert.isTrue(billed(new LlmError.Timeout({ after: Duration.seconds(1), level: "call" })))
    assert.isTrue(billed(new LlmError.ProtocolError({ reason: "not JSON" })))
    assert.isTrue(billed(new LlmError.Transport({ reason: "cut", afterResponse: true })))
    assert.isFalse(billed(new LlmError.Transport({ reason: "ECONNREFUSED" })))
    assert.isFalse(billed(new LlmError.Transport({ reason: "ECONNRESET", afterResponse: false })))
    for (const [error] of all) {
      if (error._tag !== "Timeout" && error._tag !== "ProtocolError" && error._tag !== "Transport") {
        assert.isFalse(billed(error), error._tag)
      }
    }
  })

  it("messages say what happened, with the model and request id when known", () => {
    const c = { model: "gpt-4o", requestId: "req_1" }
    const cases: Array<[LlmError.LlmError, string]> = [
      [
        new LlmError.RateLimited({ ...c, detail: "slow down" }),
        "Rate limited by the provider: slow down (model gpt-4o) [request req_1]"
      ],
      [
        new LlmError.QuotaExhausted({ ...c, code: "insufficient_quota" }),
        "Provider quota exhausted (insufficient_quota): check the plan and billing (model gpt-4o) [request req_1]"
      ],
      [
        new LlmError.ProviderUnavailable({ ...c, status: 503, detail: "overloaded" }),
        "Provider unavailable (HTTP 503): overloaded (model gpt-4o) [request req_1]"
      ],
      [new LlmError.ProviderUnavailable({ status: 502 }), "Provider unavailable (HTTP 502)"],
      [
        new LlmError.Timeout({ ...c, after: Duration.seconds(60), level: "attempt" }),
        "The attempt timed out after 1m (model gpt-4o) [request req_1]"
      ],
      [new LlmError.Timeout({ after: Duration.minutes(3), level: "call" }), "The call timed out after 3m"],
      [
        new LlmError.Transport({ ...c, reason: "ECONNRESET" }),
        "Transport failure: ECONNRESET (model gpt-4o) [request req_1]"
      ],
      [
        new LlmError.ProtocolError({ ...c, reason: "not JSON" }),
        "The provider's response could not be read: not JSON (model gpt-4o) [request req_1]"
      ],
      [
        new LlmError.InvalidRequest({ ...c, field: "messages", reason: "empty" }),
        "Invalid request at messages: empty (model gpt-4o) [request req_1]"
      ],
      [new LlmError.InvalidRequest({ reason: "bad" }), "Invalid request: bad"],
      [
        new LlmError.AuthenticationFailed({ ...c, status: 401 }),
        "Authentication failed (HTTP 401): check the API key and its permissions (model gpt-4o) [request req_1]"
      ],
      [new LlmError.Refused({ ...c, refusal: "no" }), "The model refused: no (model gpt-4o) [request req_1]"],
      [
        new LlmError.Truncated({ ...c, outputTokens: 10, maxOutputTokens: 10 }),
        "The answer was cut at 10 output tokens (limit 10): raise maxOutputTokens or shorten the task (model gpt-4o) [request req_1]"
      ],
      [
        new LlmError.Truncated({ outputTokens: 10 }),
        "The answer was cut at 10 output tokens: raise maxOutputTokens or shorten the task"
      ],
      [
        new LlmError.OutputInvalid({ ...c, reason: "missing", path: "score", raw: "{}" }),
        "The model's output is invalid at score: missing (model gpt-4o) [request req_1]"
      ],
      [
        new LlmError.OutputInvalid({ reason: "not JSON", path: "", raw: "x" }),
        "The model's output is invalid at the root: not JSON"
      ],
      [
        new LlmError.BudgetExceeded({
          ...c,
          scope: "global",
          window: "total",
          limit: "1",
          spent: "0.5",
          reserved: "0.4",
          requested: "0.2"
        }),
        "Budget global (total) would be exceeded: limit $1, spent $0.5, reserved $0.4, requested $0.2"
      ],
      [
        new LlmError.BudgetUnavailable({ ...c, operation: "reserve", reason: "connection refused" }),
        "Budget unavailable (reserve): connection refused; nothing was sent past this point (model gpt-4o) [request req_1]"
      ],
      [
        new LlmError.PricingUnknown({ model: "mystery" }),
        "No price is known for model \"mystery\": add it to the pricing file or configure a fallback price"
      ],
      [new LlmError.CircuitOpen({ model: "gpt-4o" }), "The circuit for model gpt-4o is open after repeated failures"]
    ]
    for (const [error, message] of cases) assert.strictEqual(error.message, message)
  })
})
