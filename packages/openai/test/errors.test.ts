import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Redacted from "effect/Redacted"
import * as Errors from "../src/internal/errors.js"
import { fakeKey } from "./utils/fakeKey.js"

const now = Date.parse("2026-11-29T08:00:00Z")
const key = Redacted.make(fakeKey("abcdefghijklmnopqrstuvwxyz0123456789"))

const body = (code: string | null, type = "invalid_request_error", param: string | null = null, message = "boom") =>
  JSON.stringify({ error: { message, type, param, code } })

const map = (status: number, text: string, headers: Record<string, string> = {}) =>
  Errors.fromResponse({ model: "gpt-4.1-mini", apiKey: key }, { status, headers, body: text }, now)

const millis = (d: Duration.Duration | undefined) => d === undefined ? undefined : Duration.toMillis(d)

describe("error mapping", () => {
  // [status, body, headers, expected tag, retryable]
  const table: ReadonlyArray<readonly [number, string, Record<string, string>, string, boolean]> = [
    [429, body("rate_limit_exceeded", "requests"), {}, "RateLimited", true],
    [429, body(null, "tokens"), {}, "RateLimited", true],
    [429, "", {}, "RateLimited", true],
    [429, body("insufficient_quota", "insufficient_quota"), {}, "QuotaExhausted", false],
    [429, body(null, "insufficient_quota"), {}, "QuotaExhausted", false],
    [429, body("credit_balance_exhausted", "insufficient_quota"), {}, "QuotaExhausted", false],
    [429, body("organization_spend_limit_exceeded"), {}, "QuotaExhausted", false],
    [429, body("project_spend_limit_exceeded"), {}, "QuotaExhausted", false],
    [403, body("organization_usage_limit_exceeded"), {}, "QuotaExhausted", false],
    [403, body("insufficient_quota", "insufficient_quota"), {}, "QuotaExhausted", false],
    [500, body(null, "server_error"), {}, "ProviderUnavailable", true],
    [502, "<html>Bad gateway</html>", {}, "ProviderUnavailable", true],
    [503, body(null, "server_error"), {}, "ProviderUnavailable", true],
    [504, "", {}, "ProviderUnavailable", true],
    [408, "", {}, "ProviderUnavailable", true],
    [409, body(null), {}, "ProviderUnavailable", true],
    [400, body(null, "invalid_request_error", "messages"), {}, "InvalidRequest", false],
    [404, body("model_not_found"), {}, "InvalidRequest", false],
    [422, body(null), {}, "InvalidRequest", false],
    [413, "", {}, "InvalidRequest", false],
    [401, body("invalid_api_key"), {}, "AuthenticationFailed", false],
    [403, body("unsupported_country_region_territory"), {}, "AuthenticationFailed", false],
    // x-should-retry overrides the status rule, but not billing; a provider that is down keeps its tag
    [400, body(null), { "x-should-retry": "true" }, "ProviderUnavailable", true],
    [401, body(null), { "x-should-retry": "true" }, "ProviderUnavailable", true],
    [500, body(null), { "x-should-retry": "false" }, "ProviderUnavailable", false],
    [503, "", { "x-should-retry": "false" }, "ProviderUnavailable", false],
    [408, "", { "x-should-retry": "false" }, "ProviderUnavailable", false],
    [429, body("rate_limit_exceeded"), { "x-should-retry": "false" }, "InvalidRequest", false],
    [429, body("insufficient_quota"), { "x-should-retry": "true" }, "QuotaExhausted", false],
    [302, "", {}, "ProtocolError", true]
  ]
  for (const [status, text, headers, tag, retryable] of table) {
    it(`${status} ${text.slice(0, 60)} ${JSON.stringify(headers)} → ${tag}`, () => {
      const error = map(status, text, { "x-request-id": "req_1", ...headers })
      assert.strictEqual(error._tag, tag)
      assert.strictEqual(error.retryable, retryable)
      assert.strictEqual(error.model, "gpt-4.1-mini")
      assert.strictEqual(error.requestId, "req_1")
    })
  }

  it("a quota error keeps the billing code", () => {
    const error = map(429, body("project_spend_limit_exceeded", "insufficient_quota"))
    assert(error._tag === "QuotaExhausted")
    assert.strictEqual(error.code, "project_spend_limit_exceeded")
  })

  it("InvalidRequest names the field from error.param and keeps the status", () => {
    const error = map(400, body(null, "invalid_request_error", "messages[0].content", "Invalid content"))
    assert(error._tag === "InvalidRequest")
    assert.strictEqual(error.field, "messages[0].content")
    assert.strictEqual(error.status, 400)
    assert.include(error.message, "Invalid content")
  })

  it("the hint is retry-after-ms first, then retry-after in seconds, then an HTTP date", () => {
    const rateLimited = (headers: Record<string, string>) => {
      const error = map(429, body("rate_limit_exceeded"), headers)
      assert(error._tag === "RateLimited")
      return millis(error.retryAfter)
    }
    assert.strictEqual(rateLimited({ "retry-after-ms": "1500.5", "retry-after": "9" }), 1500.5)
    assert.strictEqual(rateLimited({ "retry-after": "2" }), 2000)
    assert.strictEqual(rateLimited({ "retry-after": new Date(now + 30_000).toUTCString() }), 30_000)
    assert.strictEqual(rateLimited({ "retry-after-ms": "soon", "retry-after": "3" }), 3000)
    assert.strictEqual(rateLimited({ "retry-after": "later" }), undefined)
    assert.strictEqual(rateLimited({}), undefined)
    const unavailable = map(503, "", { "retry-after": "4" })
    assert(unavailable._tag === "ProviderUnavailable")
    assert.strictEqual(millis(unavailable.retryAfter), 4000)
  })

  it("scrubs the configured key and any sk- token from every text it keeps", () => {
    const leaked = `Incorrect API key provided: ${Redacted.value(key)}. Also sk-proj-ZZZZZZZZZZ and Bearer abc.def`
    for (const status of [400, 401, 429, 500]) {
      const error = map(status, body(null, "invalid_request_error", null, leaked))
      const text = `${error.message} ${JSON.stringify(error)}`
      assert.notInclude(text, Redacted.value(key))
      assert.notInclude(text, "sk-proj-ZZZZ")
      assert.notInclude(text, "abc.def")
    }
    const transport = Errors.transport({ apiKey: Redacted.make("plainsecret") }, new Error("failed with plainsecret"))
    assert.notInclude(transport.message, "plainsecret")
  })

  it("a transport failure keeps the error code", () => {
    const cause = Object.assign(new Error("socket hang up"), { code: "ECONNRESET" })
    const error = Errors.transport({ model: "m" }, cause)
    assert.strictEqual(error.reason, "ECONNRESET: socket hang up")
    assert.isTrue(error.retryable)
  })
})
