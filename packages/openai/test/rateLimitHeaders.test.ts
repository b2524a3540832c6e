import { assert, describe, it } from "@effect/vitest"
import * as RateLimitHeaders from "../src/internal/rateLimitHeaders.js"

describe("Go durations", () => {
  const cases: ReadonlyArray<readonly [string, number | undefined]> = [
    ["6m0s", 360_000],
    ["1.5s", 1500],
    ["12ms", 12],
    ["1h2m3.5s", 3_723_500],
    ["0", 0],
    ["0s", 0],
    ["20ms", 20],
    ["1s", 1000],
    ["250us", 0.25],
    ["250µs", 0.25],
    ["100ns", 0.0001],
    [".5s", 500],
    ["-1m", -60_000],
    ["1m30s", 90_000],
    ["", undefined],
    ["12", undefined],
    ["1x", undefined],
    ["s", undefined],
    ["1.5", undefined],
    ["1s ", 1000]
  ]
  for (const [text, expected] of cases) {
    it(`${JSON.stringify(text)} → ${expected}`, () => {
      assert.strictEqual(RateLimitHeaders.parseGoDuration(text), expected)
    })
  }
})

describe("rate-limit snapshot", () => {
  it("reads every x-ratelimit-* header", () => {
    assert.deepStrictEqual(
      RateLimitHeaders.fromHeaders({
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-reset-requests": "12ms",
        "x-ratelimit-limit-tokens": "160000",
        "x-ratelimit-remaining-tokens": "159976",
        "x-ratelimit-reset-tokens": "6m0s"
      }),
      {
        limitRequests: 5000,
        remainingRequests: 4999,
        resetRequestsMs: 12,
        limitTokens: 160_000,
        remainingTokens: 159_976,
        resetTokensMs: 360_000
      }
    )
  })

  it("is absent when no header is there, and skips unreadable values", () => {
    assert.isUndefined(RateLimitHeaders.fromHeaders({ "x-request-id": "req" }))
    assert.deepStrictEqual(
      RateLimitHeaders.fromHeaders({ "x-ratelimit-limit-requests": "lots", "x-ratelimit-reset-tokens": "2s" }),
      { resetTokensMs: 2000 }
    )
  })
})
