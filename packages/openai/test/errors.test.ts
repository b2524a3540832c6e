import { assert, describe, it } from "@effect/vitest"
import type * as LlmError from "@keel/core/LlmError"
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

describe("error mapping: the edges", () => {
  const hint = (headers: Record<string, string>) => millis(Errors.retryAfter(headers, now))

  it("retry hints: zero is a hint, a blank or negative one is not; a past date means now", () => {
    assert.strictEqual(hint({ "retry-after-ms": "0", "retry-after": "5" }), 0)
    assert.strictEqual(hint({ "retry-after-ms": "", "retry-after": "5" }), 5000)
    assert.strictEqual(hint({ "retry-after-ms": "  ", "retry-after": "5" }), 5000)
    assert.strictEqual(hint({ "retry-after-ms": "-1", "retry-after": "5" }), 5000)
    assert.strictEqual(hint({ "retry-after-ms": "Infinity", "retry-after": "5" }), 5000)
    assert.strictEqual(hint({ "retry-after": "0" }), 0)
    assert.strictEqual(hint({ "retry-after": "1.5" }), 1500)
    assert.strictEqual(hint({ "retry-after": "-3" }), undefined)
    assert.strictEqual(hint({ "retry-after": " " }), undefined)
    assert.strictEqual(hint({ "retry-after": new Date(now - 60_000).toUTCString() }), 0)
  })

  it("billing is a 4xx matter: a 5xx naming insufficient_quota is the provider being down", () => {
    assert.strictEqual(map(499, body("insufficient_quota"))._tag, "QuotaExhausted")
    assert.strictEqual(map(400, body(null, "insufficient_quota"))._tag, "QuotaExhausted")
    assert.strictEqual(map(500, body("insufficient_quota")).retryable, true)
    assert.strictEqual(map(500, body("insufficient_quota"))._tag, "ProviderUnavailable")
    assert.strictEqual(map(399, body("insufficient_quota"))._tag, "ProtocolError")
    // A billing type with another code still names the billing value that matched.
    const typed = map(429, body("something_else", "insufficient_quota"))
    assert.isTrue(typed._tag === "QuotaExhausted" && typed.code === "insufficient_quota")
  })

  it("statuses at the edges of each rule", () => {
    const tags = [399, 400, 404, 407, 408, 409, 410, 428, 429, 430, 499, 500, 599, 600].map((status) =>
      map(status, "")._tag
    )
    assert.deepStrictEqual(tags, [
      "ProtocolError",
      "InvalidRequest",
      "InvalidRequest",
      "InvalidRequest",
      "ProviderUnavailable",
      "ProviderUnavailable",
      "InvalidRequest",
      "InvalidRequest",
      "RateLimited",
      "InvalidRequest",
      "InvalidRequest",
      "ProviderUnavailable",
      "ProviderUnavailable",
      "ProviderUnavailable"
    ])
    // x-should-retry: true on a status already retried changes nothing; on 429 it stays RateLimited.
    assert.strictEqual(map(429, "", { "x-should-retry": "true" })._tag, "RateLimited")
    assert.strictEqual(map(503, "", { "x-should-retry": "true" }).retryable, true)
    // Any other value of the header is ignored.
    assert.strictEqual(map(503, "", { "x-should-retry": "maybe" }).retryable, true)
    assert.strictEqual(map(400, "", { "x-should-retry": "maybe" })._tag, "InvalidRequest")
  })

  it("every mapped error keeps its hint and detail", () => {
    const headers = { "retry-after": "2" }
    const forced = map(400, body(null, "x", null, "try again"), { ...headers, "x-should-retry": "true" })
    assert.isTrue(forced._tag === "ProviderUnavailable" && forced.status === 400 && forced.detail === "try again")
    assert.strictEqual(millis((forced as LlmError.ProviderUnavailable).retryAfter), 2000)
    const limited = map(429, body(null, "x", null, "slow down"), { ...headers, "x-should-retry": "false" })
    assert.isTrue(limited._tag === "RateLimited" && limited.detail === "slow down")
    assert.strictEqual(millis((limited as LlmError.RateLimited).retryAfter), 2000)
    const down = map(503, body(null, "x", null, "down"), { ...headers, "x-should-retry": "false" })
    assert.isTrue(down._tag === "ProviderUnavailable" && down.status === 503 && down.detail === "down")
    assert.strictEqual(millis((down as LlmError.ProviderUnavailable).retryAfter), 2000)
    const plain = map(503, body(null, "x", null, "busy"), headers)
    assert.isTrue(plain._tag === "ProviderUnavailable" && plain.status === 503 && plain.detail === "busy")
    const auth = map(403, body(null, "x", null, "no"))
    assert.isTrue(auth._tag === "AuthenticationFailed" && auth.status === 403 && auth.detail === "no")
    const limitedDetail = map(429, body(null, "x", null, "wait"))
    assert.isTrue(limitedDetail._tag === "RateLimited" && limitedDetail.detail === "wait")
    const quota = map(429, body("insufficient_quota", "x", null, "pay"))
    assert.isTrue(quota._tag === "QuotaExhausted" && quota.detail === "pay" && quota.requestId === undefined)
  })

  it("an unexpected status says so, with the provider's text when there is one", () => {
    const bare = map(302, "")
    assert.isTrue(bare._tag === "ProtocolError" && bare.reason === "unexpected HTTP status 302", bare.message)
    const texted = map(302, "moved")
    assert.isTrue(texted._tag === "ProtocolError" && texted.reason === "unexpected HTTP status 302: moved")
  })

  it("error bodies of other shapes: a string error, empty JSON, a code given as a number, no message", () => {
    assert.deepStrictEqual(Errors.parseErrorBody(`{"error": "quota gone"}`), { message: "quota gone" })
    for (const empty of [`{}`, `null`, `""`, "", "  \n "]) assert.deepStrictEqual(Errors.parseErrorBody(empty), {})
    assert.deepStrictEqual(Errors.parseErrorBody(`[1,2]`), { message: "[1,2]" })
    assert.deepStrictEqual(Errors.parseErrorBody(`{"error": null, "x": 1}`), { message: `{"error":null,"x":1}` })
    assert.deepStrictEqual(Errors.parseErrorBody(`{"error": {"code": 42, "type": "t", "param": true}}`), {
      message: `{"code":42,"type":"t","param":true}`,
      type: "t",
      code: "42",
      param: undefined
    })
    assert.deepStrictEqual(Errors.parseErrorBody(`<!DOCTYPE html><html><script>x()</script><p>Down</p></html>`), {
      message: "Down"
    })
    assert.deepStrictEqual(Errors.parseErrorBody(`<?xml version="1.0"?><Error>Throttled</Error>`), {
      message: "Throttled"
    })
    // Any tag opens an HTML page, after leading whitespace too; tags and scripts become spaces between words.
    assert.deepStrictEqual(Errors.parseErrorBody(`\n  <div>Down</div>`), { message: "Down" })
    assert.deepStrictEqual(Errors.parseErrorBody(`<p>Down</p><p>now</p>`), { message: "Down now" })
    assert.deepStrictEqual(Errors.parseErrorBody(`<p class="e">Down<script>var a = 1;</script>now</p>`), {
      message: "Down now"
    })
    // Text that does not start with a tag is not HTML: its angle brackets stay.
    assert.deepStrictEqual(Errors.parseErrorBody(`upstream said <b>busy</b>`), { message: "upstream said <b>busy</b>" })
    // Text that merely starts with "<" and is not a tag keeps its angle brackets.
    assert.deepStrictEqual(Errors.parseErrorBody(`<3 is not a tag`), { message: "<3 is not a tag" })
    assert.deepStrictEqual(Errors.parseErrorBody(`a  \n\t b`), { message: "a b" })
  })

  it("a body of exactly 500 characters is kept whole; one more is cut", () => {
    assert.strictEqual(Errors.cut("x".repeat(500)), "x".repeat(500))
    assert.strictEqual(Errors.cut("x".repeat(501)), `${"x".repeat(500)}…`)
  })

  it("scrubbing: an empty configured key changes nothing; short sk- words are not keys; Bearer keeps its word", () => {
    assert.strictEqual(Errors.scrub("nothing secret here", Redacted.make("")), "nothing secret here")
    assert.strictEqual(Errors.scrub("task-list sk-abc", undefined), "task-list sk-abc")
    assert.strictEqual(Errors.scrub("key sk-abcdef_123-XYZ, done"), "key sk-[redacted], done")
    assert.strictEqual(Errors.scrub(`Authorization: bearer abc.def;next`), "Authorization: bearer [redacted];next")
    assert.strictEqual(
      Errors.scrub("the-secret and the-secret", Redacted.make("the-secret")),
      "[redacted] and [redacted]"
    )
  })

  it("a transport failure names its causes, in order, and says whether the answer had begun", () => {
    const inner = Object.assign(new Error("connect refused"), { code: "ECONNREFUSED" })
    const outer = new Error("fetch failed", { cause: inner })
    const error = Errors.transport({ model: "m" }, outer, "req_9")
    assert.strictEqual(error.reason, "fetch failed (ECONNREFUSED: connect refused)")
    assert.deepStrictEqual([error.model, error.requestId, error.afterResponse], ["m", "req_9", undefined])
    const selfCaused = new Error("loop")
    ;(selfCaused as { cause?: unknown }).cause = selfCaused
    assert.strictEqual(Errors.transport({}, selfCaused).reason, "loop")
    assert.strictEqual(Errors.transport({}, "plain string").reason, "plain string")
    assert.strictEqual(Errors.transport({}, new Error("cut"), undefined, false).afterResponse, undefined)
    assert.isTrue(Errors.transport({}, new Error("cut"), undefined, true).afterResponse)
  })

  it("keel's own faults: a malformed answer, a body that cannot be JSON, a throwing onRequest hook", () => {
    const secret = Redacted.value(key)
    const protocol = Errors.protocol({ model: "m", apiKey: key }, `no choices in ${secret}`, "req_2")
    assert.deepStrictEqual([protocol._tag, protocol.model, protocol.requestId, protocol.reason], [
      "ProtocolError",
      "m",
      "req_2",
      "no choices in [redacted]"
    ])
    const body = Errors.invalidBody({ model: "m", apiKey: key }, new TypeError(`cyclic ${secret}`))
    assert.deepStrictEqual([body._tag, body.field, body.reason, body.retryable], [
      "InvalidRequest",
      "request",
      "the request cannot be serialised to JSON: cyclic [redacted]",
      false
    ])
    const hook = Errors.hookFailed({ model: "m", apiKey: key }, new Error(`boom ${secret}`))
    assert.deepStrictEqual([hook._tag, hook.field, hook.reason, hook.retryable], [
      "InvalidRequest",
      "onRequest",
      "the onRequest hook threw, so nothing was sent: boom [redacted]",
      false
    ])
  })
})
