/**
 * Reads OpenAI's `x-ratelimit-*` response headers into the core `RateLimitSnapshot`. Reset values are
 * Go `time.Duration` strings (`6m0s`, `1.5s`, `12ms`, `1h2m3.5s`), parsed here to milliseconds.
 */
import type { RateLimitSnapshot } from "@keel/core/LlmResponse"
import type { Headers } from "./errors.js"

const unitMillis: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3,
  "μs": 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000
}

const component = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y

/**
 * Parses a Go duration (`[-+]?(number unit)+`, or `0`) to milliseconds, as Go's `time.ParseDuration`
 * accepts it; anything else is `undefined`.
 */
export const parseGoDuration = (text: string): number | undefined => {
  let s = text.trim()
  let sign = 1
  if (s.startsWith("-") || s.startsWith("+")) {
    sign = s.startsWith("-") ? -1 : 1
    s = s.slice(1)
  }
  if (s === "0") return 0
  if (s === "") return undefined
  component.lastIndex = 0
  let total = 0
  while (component.lastIndex < s.length) {
    const match = component.exec(s)
    if (match === null) return undefined
    total += Number(match[1]) * unitMillis[match[2]!]!
  }
  // Floating point sums such as 3.5 * 1000 + 2 * 60000 are exact enough; round away binary noise below a nanosecond.
  return sign * Math.round(total * 1e6) / 1e6
}

const count = (value: string | undefined): number | undefined => {
  if (value === undefined) return undefined
  const n = Number(value)
  return value.trim() !== "" && Number.isFinite(n) ? n : undefined
}

const duration = (value: string | undefined): number | undefined =>
  value === undefined ? undefined : parseGoDuration(value)

/** The snapshot in the headers, or `undefined` when the provider sent none of them. */
export const fromHeaders = (headers: Headers): RateLimitSnapshot | undefined => {
  const limitRequests = count(headers["x-ratelimit-limit-requests"])
  const remainingRequests = count(headers["x-ratelimit-remaining-requests"])
  const resetRequestsMs = duration(headers["x-ratelimit-reset-requests"])
  const limitTokens = count(headers["x-ratelimit-limit-tokens"])
  const remainingTokens = count(headers["x-ratelimit-remaining-tokens"])
  const resetTokensMs = duration(headers["x-ratelimit-reset-tokens"])
  if (
    limitRequests === undefined && remainingRequests === undefined && resetRequestsMs === undefined &&
    limitTokens === undefined && remainingTokens === undefined && resetTokensMs === undefined
  ) return undefined
  const snapshot: { -readonly [K in keyof RateLimitSnapshot]: RateLimitSnapshot[K] } = {}
  if (limitRequests !== undefined) snapshot.limitRequests = limitRequests
  if (remainingRequests !== undefined) snapshot.remainingRequests = remainingRequests
  if (resetRequestsMs !== undefined) snapshot.resetRequestsMs = resetRequestsMs
  if (limitTokens !== undefined) snapshot.limitTokens = limitTokens
  if (remainingTokens !== undefined) snapshot.remainingTokens = remainingTokens
  if (resetTokensMs !== undefined) snapshot.resetTokensMs = resetTokensMs
  return snapshot
}
