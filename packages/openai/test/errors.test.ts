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
    [429, body("rate_limit_exceeded"), { "x-should-retry": "false" }, "RateLimited", false],
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

  it("a body that is not OpenAI's error shape keeps its text: problem+json, plain text, HTML", () => {
    const problem = JSON.stringify({
      type: "https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY",
      title: "Invalid request",
      status: 422,
      detail: "Your request is not valid and no HTTP validation response was found in the spec.",
      validation: [{ location: ["body"], severity: "Error", code: "required", message: "must have property 'model'" }]
    })
    const invalid = map(422, problem)
    assert(invalid._tag === "InvalidRequest")
    assert.include(invalid.reason, "must have property 'model'")
    assert.include(invalid.message, "Invalid request")
    assert.notInclude(invalid.message, "HTTP 422")

    const missing = map(404, "404 page not found\n")
    assert(missing._tag === "InvalidRequest")
    assert.strictEqual(missing.reason, "404 page not found")

    const html =
      "<html><head><style>h1{color:red}</style></head><body><h1>502 Bad Gateway</h1>\n<p>nginx</p></body></html>"
    const gateway = map(502, html)
    assert(gateway._tag === "ProviderUnavailable")
    assert.strictEqual(gateway.detail, "502 Bad Gateway nginx")

    const bare = map(404, "")
    assert(bare._tag === "InvalidRequest")
    assert.strictEqual(bare.reason, "HTTP 404")
  })

  it("a long body is cut to about 500 characters after the key is scrubbed, so no cut splits a key", () => {
    const secret = Redacted.value(key)
    const text = `${"x".repeat(480)} ${secret} ${"y".repeat(2000)}`
    const error = map(404, text)
    assert(error._tag === "InvalidRequest")
    assert.isAtMost(error.reason.length, Errors.maxDetail + 1)
    assert.include(error.reason, "[redacted]")
    assert.notInclude(error.reason, secret.slice(0, 12))
    assert.isTrue(error.reason.endsWith("…"))
  })

  it("error.param, x-request-id and a transport failure's request id are scrubbed of the key", () => {
    const secret = Redacted.value(key)
    const error = map(400, body(null, "invalid_request_error", `key ${secret}`), { "x-request-id": `req_${secret}` })
    assert(error._tag === "InvalidRequest")
    const text = `${error.message} ${JSON.stringify(error)} ${error.field} ${error.requestId}`
    assert.notInclude(text, secret)
    assert.notInclude(text, secret.slice(8))
    assert.include(error.field, "[redacted]")
    const transport = Errors.transport({ apiKey: key }, new Error("reset"), `req_${secret}`, true)
    assert.notInclude(JSON.stringify(transport), secret)
    assert.isTrue(transport.afterResponse)
  })
})
