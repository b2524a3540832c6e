/**
 * Integration: 10,000 calls through `Llm.generate` → `RetryPolicy` → `OpenAiLanguageModel` → undici →
 * the simulator over real HTTP on 127.0.0.1, with 20% of attempts spoiled by every kind of fault.
 * Every call must end in a decoded answer or a typed `LlmError` (no defects), `insufficient_quota`
 * must never be retried, and a retry after a hint must wait at least the hint (measured here).
 * Real time (it.live): the server runs on the real clock; zero latency and small hints keep it short.
 */
import { assert, describe, it } from "@effect/vitest"
import * as LanguageModel from "@keel/core/LanguageModel"
import * as Llm from "@keel/core/Llm"
import * as LlmError from "@keel/core/LlmError"
import type * as LlmRequest from "@keel/core/LlmRequest"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { performance } from "node:perf_hooks"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../src/OpenAiLanguageModel.js"
import * as Simulator from "../src/Simulator.js"
import { fakeKey } from "./utils/fakeKey.js"
import { everyFault, fastPolicy, scoreTool } from "./utils/faultRun.js"

const CALLS = 10_000
const HINT_MS = 50
const apiKey = fakeKey("faults-0123456789abcdefghijklmnopqr")

const faults = everyFault(0.2)

interface Attempt {
  readonly start: number
  end: number
  /** "ok", an error tag (a hang ends in the transport's own attempt `Timeout`), or "interrupted" */
  outcome: string
  hintMs: number | undefined
}

const attempts = new Map<string, Array<Attempt>>()

/** The OpenAI model, with every attempt recorded per call (the call id travels in the request metadata). */
const counting = Layer.effect(
  LanguageModel.LanguageModel,
  Effect.map(OpenAiLanguageModel.make(), (inner) =>
    LanguageModel.make({
      provider: inner.provider,
      timesOut: true,
      complete: (request, timeout) =>
        Effect.suspend(() => {
          const id = request.metadata!.call!
          const attempt: Attempt = { start: performance.now(), end: 0, outcome: "pending", hintMs: undefined }
          const list = attempts.get(id)
          if (list === undefined) attempts.set(id, [attempt])
          else list.push(attempt)
          return Effect.onExit(inner.complete(request, timeout), (exit) =>
            Effect.sync(() => {
              attempt.end = performance.now()
              if (Exit.isSuccess(exit)) {
                attempt.outcome = "ok"
                return
              }
              const error = Cause.failureOption(exit.cause)
              if (Option.isSome(error)) {
                attempt.outcome = error.value._tag
                const hint = LlmError.retryAfter(error.value)
                attempt.hintMs = hint === undefined ? undefined : Duration.toMillis(hint)
              } else {
                attempt.outcome = Cause.isInterruptedOnly(exit.cause) ? "interrupted" : "defect"
              }
            }))
        })
    }))
)

const stack = Layer.unwrapEffect(
  Effect.map(Simulator.Simulator, (simulator) =>
    Llm.layer({ defaultModel: "gpt-4.1-mini" }).pipe(
      Layer.provide(counting),
      Layer.provide(OpenAiClient.layerUndici({ apiKey: Redacted.make(apiKey), baseUrl: simulator.url }))
    ))
).pipe(Layer.provideMerge(Simulator.layer({ seed: 7, apiKey, faults, retryAfterMs: HINT_MS })))

const request = (i: number): LlmRequest.Input => ({
  messages: [{ role: "user", content: `Score listing ${i}` }],
  tools: [scoreTool],
  toolChoice: { tool: "score" },
  metadata: { call: String(i) }
})

describe("faults: 10,000 calls against the simulator with 20% injected faults", () => {
  it.live(
    "every call ends in an answer or a typed LlmError; quota is never retried; hints are honoured",
    () =>
      Effect.gen(function*() {
        attempts.clear()
        const exits = yield* Effect.forEach(
          Array.from({ length: CALLS }, (_, i) => i),
          (i) => Effect.exit(Llm.generate(request(i))),
          { concurrency: 32 }
        )
        const stats = yield* Effect.flatMap(Simulator.Simulator, (s) => s.stats)

        // every call: an answer, or a typed LlmError; never a defect or an interruption
        const endings = new Map<string, number>()
        exits.forEach((exit, i) => {
          if (Exit.isSuccess(exit)) {
            assert.isTrue(exit.value.toolCalls.length === 1, `call ${i}: the answer has its tool call`)
            endings.set("ok", (endings.get("ok") ?? 0) + 1)
            return
          }
          const error = Cause.failureOption(exit.cause)
          assert.isFalse(Cause.isDie(exit.cause), `call ${i} died: ${Cause.pretty(exit.cause)}`)
          assert(Option.isSome(error) && LlmError.isLlmError(error.value), `call ${i}: ${Cause.pretty(exit.cause)}`)
          endings.set(error.value._tag, (endings.get(error.value._tag) ?? 0) + 1)
        })
        assert.strictEqual(attempts.size, CALLS)

        // every fault kind was injected, and each left its mark as the typed error it maps to
        for (const name of Simulator.faultNames) assert.isAbove(stats.faults[name], 0, `fault ${name} was injected`)
        const outcomes = new Set([...attempts.values()].flatMap((list) => list.map((a) => a.outcome)))
        for (
          const tag of [
            "ok",
            "RateLimited",
            "QuotaExhausted",
            "ProviderUnavailable",
            "Transport",
            "ProtocolError",
            "Timeout"
          ]
        ) assert.isTrue(outcomes.has(tag), `some attempt ended ${tag}: ${[...outcomes].join(", ")}`)
        assert.isFalse(outcomes.has("defect"))
        for (const tag of ["QuotaExhausted", "Truncated", "Refused"]) {
          assert.isAbove(endings.get(tag) ?? 0, 0, `some call ended ${tag}`)
        }

        let quotaCalls = 0
        const gapsOverHint: Array<number> = []
        for (const [id, list] of attempts) {
          list.forEach((attempt, n) => {
            // insufficient_quota: that attempt is the call's last one, and the call ends QuotaExhausted
            if (attempt.outcome === "QuotaExhausted") {
              quotaCalls++
              assert.strictEqual(n, list.length - 1, `call ${id} was retried after insufficient_quota`)
              const exit = exits[Number(id)]!
              assert(Exit.isFailure(exit))
              assert.strictEqual(Option.getOrUndefined(Cause.failureOption(exit.cause))?._tag, "QuotaExhausted")
              if (n === 0) assert.strictEqual(list.length, 1)
            }
            // A retry after a hinted failure waits for the hint, not the (≤ 5 ms) backoff. Node starts a timer from
            // the event loop's cached clock, which trails the real clock by up to the current loop turn, so a single
            // gap may read a little short of the hint on a busy loop: each gap may be 10 ms short, the median none.
            const next = list[n + 1]
            if (attempt.hintMs !== undefined && next !== undefined) {
              const gap = next.start - attempt.end
              gapsOverHint.push(gap - attempt.hintMs)
              assert.isAtLeast(
                gap,
                attempt.hintMs - 10,
                `call ${id}: retried ${gap} ms after a ${attempt.hintMs} ms hint`
              )
            }
          })
          assert.isAtMost(list.length, 4)
        }
        assert.isAbove(quotaCalls, 0)
        assert.isAbove(gapsOverHint.length, 0)
        gapsOverHint.sort((a, b) => a - b)
        const median = gapsOverHint[Math.floor(gapsOverHint.length / 2)]!
        assert.isAtLeast(median, 0, "the median retry gap is at least the hint")
        console.log(
          `faults: ${CALLS} calls, ${[...attempts.values()].reduce((n, l) => n + l.length, 0)} attempts; endings ${
            JSON.stringify(Object.fromEntries(endings))
          }; injected ${JSON.stringify(stats.faults)}; ${gapsOverHint.length} hinted retries, gap − hint: min ${
            gapsOverHint[0]!.toFixed(2)
          } ms, median ${median.toFixed(2)} ms`
        )
      }).pipe(RetryPolicy.withPolicy(fastPolicy), Effect.provide(stack)),
    240_000
  )
})
