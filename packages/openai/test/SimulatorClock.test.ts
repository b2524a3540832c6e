/**
 * The simulator on Effect's `Clock`, over real HTTP on 127.0.0.1 but with time moved by `TestClock`:
 * a requests/min window filling and resetting, latency, scheduled outages, the serving capacity and
 * per-100 ms arrival counts. No test waits for real time to pass.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import { request } from "undici"
import * as Simulator from "../src/Simulator.js"

interface Answer {
  readonly status: number
  readonly headers: Record<string, string | Array<string> | undefined>
  readonly json: any
}

const chat = (sim: Simulator.Simulator["Type"], content = "Say something.", model = "gpt-4o-mini") =>
  Effect.promise(async (): Promise<Answer> => {
    const res = await request(`${sim.url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-test-0000" },
      body: JSON.stringify({ model, messages: [{ role: "user", content }] })
    })
    return { status: res.statusCode, headers: res.headers, json: await res.body.json() }
  })

const withSim = <A>(options: Simulator.Options, f: (sim: Simulator.Simulator["Type"]) => Effect.Effect<A>) =>
  Effect.flatMap(Simulator.Simulator, f).pipe(Effect.provide(Simulator.layer(options)))

/** Waits (without moving the test clock) until the simulator has put `n` answers to sleep on it. */
const sleepers = (n: number) =>
  Effect.gen(function*() {
    while ((yield* TestClock.sleeps()).length < n) yield* Effect.promise(() => new Promise((r) => setTimeout(r, 1)))
  })

describe("Simulator on the Effect clock", () => {
  it.effect("a requests/min window fills, answers 429 with the hint and x-ratelimit headers, and resets", () =>
    withSim({ limits: { requestsPerMinute: 3 } }, (sim) =>
      Effect.gen(function*() {
        const answers = [yield* chat(sim), yield* chat(sim), yield* chat(sim)]
        assert.deepStrictEqual(answers.map((a) => a.status), [200, 200, 200])
        assert.deepStrictEqual(answers.map((a) => a.headers["x-ratelimit-remaining-requests"]), ["2", "1", "0"])
        assert.strictEqual(answers[2]!.headers["x-ratelimit-limit-requests"], "3")
        // the bucket refills one request per 20 s: full again after 60 s
        assert.strictEqual(answers[2]!.headers["x-ratelimit-reset-requests"], "1m0s")

        yield* TestClock.adjust("5 seconds")
        const limited = yield* chat(sim)
        assert.strictEqual(limited.status, 429)
        assert.strictEqual(limited.json.error.code, "rate_limit_exceeded")
        assert.strictEqual(limited.json.error.type, "requests")
        // 20 s per request, 5 s of it passed
        assert.strictEqual(limited.headers["retry-after-ms"], "15000")
        assert.strictEqual(limited.headers["retry-after"], "15")
        assert.strictEqual(limited.headers["x-ratelimit-remaining-requests"], "0")
        assert.strictEqual(limited.headers["x-ratelimit-reset-requests"], "55s")
        assert.match(limited.json.error.message, /Please try again in 15s\./)

        // one millisecond before the hint: still limited; at the hint: served
        yield* TestClock.adjust("14999 millis")
        assert.strictEqual((yield* chat(sim)).status, 429)
        yield* TestClock.adjust("1 millis")
        assert.strictEqual((yield* chat(sim)).status, 200)

        // after a whole window of quiet the bucket is full again
        yield* TestClock.adjust("60 seconds")
        const reset = yield* chat(sim)
        assert.strictEqual(reset.status, 200)
        assert.strictEqual(reset.headers["x-ratelimit-remaining-requests"], "2")
        assert.strictEqual((yield* sim.stats).rateLimited, 2)
      })))

  it.effect("a tokens/min window refills on the clock too", () =>
    withSim({ limits: { tokensPerMinute: 60 } }, (sim) =>
      Effect.gen(function*() {
        const first = yield* chat(sim, "word ".repeat(20))
        assert.strictEqual(first.status, 200)
        const limited = yield* chat(sim, "word ".repeat(20))
        assert.strictEqual(limited.status, 429)
        assert.strictEqual(limited.json.error.type, "tokens")
        const wait = Number(limited.headers["retry-after-ms"])
        assert.isAbove(wait, 0)
        yield* TestClock.adjust(wait - 1)
        assert.strictEqual((yield* chat(sim, "word ".repeat(20))).status, 429)
        yield* TestClock.adjust("60 seconds")
        assert.strictEqual((yield* chat(sim, "word ".repeat(20))).status, 200)
      })))

  it.effect("latency: the answer comes after base + per output token on the clock, not before", () =>
    withSim({ latency: { baseMs: 200, perOutputTokenMs: 2 } }, (sim) =>
      Effect.gen(function*() {
        const fiber = yield* Effect.fork(chat(sim))
        yield* sleepers(1)
        // the clock starts at 0: the answer's wake-up time is its delay
        const delay = Chunk.unsafeHead(yield* TestClock.sleeps())
        assert.isAbove(delay, 200)
        yield* TestClock.adjust(delay - 1)
        assert.isTrue((yield* Fiber.poll(fiber))._tag === "None", "answered before its latency")
        yield* TestClock.adjust(1)
        const answer = yield* Fiber.join(fiber)
        assert.strictEqual(answer.status, 200)
        assert.strictEqual(answer.headers["openai-processing-ms"], String(delay))
        assert.strictEqual(delay, 200 + 2 * answer.json.usage.completion_tokens)
      })))

  it.effect("a scheduled outage answers its status for its duration, then the simulator serves again", () =>
    withSim(
      { outages: [{ atMs: 1_000, durationMs: 2_000, status: 503 }, { atMs: 5_000, durationMs: 100 }] },
      (sim) =>
        Effect.gen(function*() {
          assert.strictEqual((yield* chat(sim)).status, 200)
          yield* TestClock.adjust("999 millis")
          assert.strictEqual((yield* chat(sim)).status, 200)
          yield* TestClock.adjust("1 millis")
          const down = yield* chat(sim)
          assert.strictEqual(down.status, 503)
          assert.strictEqual(down.json.error.type, "server_error")
          assert.isUndefined(down.headers["retry-after"])
          yield* TestClock.adjust("1999 millis")
          assert.strictEqual((yield* chat(sim)).status, 503)
          yield* TestClock.adjust("1 millis")
          assert.strictEqual((yield* chat(sim)).status, 200)
          yield* TestClock.adjust("2 seconds")
          assert.strictEqual((yield* chat(sim)).status, 503) // the second outage, with the default status
          const stats = yield* sim.stats
          assert.strictEqual(stats.outage, 3)
          assert.strictEqual(stats.byStatus["503"], 3)
        })
    ))

  it.effect("past its serving capacity it answers 503 overloaded, and serves again as capacity refills", () =>
    withSim({ capacityPerSecond: 50 }, (sim) =>
      Effect.gen(function*() {
        // 100 ms of capacity at once: 5 served, the rest overloaded
        const burst = yield* Effect.forEach(Array.from({ length: 8 }, (_, i) => i), (i) => chat(sim, `q${i}`))
        assert.deepStrictEqual(burst.map((a) => a.status), [200, 200, 200, 200, 200, 503, 503, 503])
        assert.match(burst[7]!.json.error.message, /overloaded/)
        yield* TestClock.adjust("20 millis") // one request's worth at 50/s
        assert.strictEqual((yield* chat(sim, "again")).status, 200)
        assert.strictEqual((yield* chat(sim, "again 2")).status, 503)
        const stats = yield* sim.stats
        assert.strictEqual(stats.overloaded, 4)
        assert.strictEqual(stats.byStatus["503"], 4)
      })))

  it.effect("counts arrivals per 100 ms since the start", () =>
    withSim({}, (sim) =>
      Effect.gen(function*() {
        yield* chat(sim)
        yield* chat(sim)
        yield* TestClock.adjust("250 millis")
        yield* chat(sim)
        yield* TestClock.adjust("100 millis")
        yield* Effect.forEach([1, 2, 3], (i) => chat(sim, `q${i}`))
        const { arrivals } = yield* sim.stats
        assert.deepStrictEqual(arrivals, { startMs: 0, counts: [2, 0, 1, 3] })
      })))
})
