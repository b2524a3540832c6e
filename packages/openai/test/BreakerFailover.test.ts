/**
 * The circuit breaker over real HTTP: a `Router` chain of model A (gpt-4o-mini) with fallback B
 * (gpt-4.1-mini) against the simulator on 127.0.0.1, where A answers every request 503
 * (`faultsByModel`). Requests are counted at the simulator. After the breaker's threshold no request
 * reaches A until its cool-down, every call completes on B; when A has recovered (the simulator is
 * started again on the same port without A's fault), the first call after the cool-down is a
 * half-open probe to A, and its success closes the breaker.
 *
 * Time is `TestClock` (the simulator runs on it too): the cool-down passes with `TestClock.adjust`
 * between calls, while no request is in flight. The policy makes one attempt per model, so no call
 * sleeps: each failure on A moves the call on to B at once.
 */
import { assert, describe, it } from "@effect/vitest"
import * as CallLog from "@keel/core/CallLog"
import * as CircuitBreaker from "@keel/core/CircuitBreaker"
import * as Llm from "@keel/core/Llm"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Router from "@keel/core/Router"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../src/OpenAiLanguageModel.js"
import * as Simulator from "../src/Simulator.js"
import { fakeKey } from "./utils/fakeKey.js"

const A = "gpt-4o-mini"
const B = "gpt-4.1-mini"
const breakerOptions = { threshold: 0.5, minimumRequests: 4, window: "10 seconds", cooldown: "30 seconds" } as const

/** The pipeline against `url`: the default tiers (simple: A, then B), a breaker, one attempt per model. */
const pipeline = (url: string, log: CallLog.Memory) =>
  Llm.layer().pipe(
    Layer.provide(Layer.mergeAll(
      OpenAiLanguageModel.layer().pipe(
        Layer.provide(OpenAiClient.layerUndici({ apiKey: Redacted.make(fakeKey("breaker")), baseUrl: url }))
      ),
      log.layer,
      Router.layer(),
      Layer.succeed(RetryPolicy.RetryPolicy, RetryPolicy.make({ maxAttempts: 1 }))
    )),
    // The same breaker is given to the test, to read its state.
    Layer.provideMerge(CircuitBreaker.layer(breakerOptions))
  )

const call = Llm.generate({ tier: "simple", messages: [{ role: "user", content: "Say something." }] })

/** Lets the client's event loop see the first simulator's sockets close before the next request. */
const realPause = Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 50)))

describe("CircuitBreaker over HTTP, with the simulator", () => {
  it.scoped("A failing 100%: after the threshold nothing reaches A until its cool-down; B serves; a probe closes it", () =>
    Effect.gen(function*() {
      // The first simulator, A down, in a scope of its own so it can be stopped half-way.
      const downScope = yield* Scope.make()
      const down = yield* Simulator.make({ seed: 1, faultsByModel: { [A]: { "503": 1 } } }).pipe(
        Scope.extend(downScope)
      )
      const log = CallLog.memory()
      yield* Effect.gen(function*() {
        // Calls 1–4 each try A once (503), then B answers; the 4th failure of 4 opens A's circuit.
        for (let i = 0; i < 4; i++) assert.strictEqual((yield* call).model, B)
        assert.strictEqual(yield* CircuitBreaker.state(A), "open")
        let stats = yield* down.stats
        assert.strictEqual(stats.faults["503"], 4, "requests that reached A")
        assert.strictEqual(stats.completions, 4, "requests B answered")

        // Open: calls go straight to B; nothing reaches A, also just before the cool-down ends.
        for (let i = 0; i < 6; i++) assert.strictEqual((yield* call).model, B)
        yield* TestClock.adjust("29 seconds")
        assert.strictEqual((yield* call).model, B)
        stats = yield* down.stats
        assert.strictEqual(stats.faults["503"], 4, "no request reached A while open")
        assert.strictEqual(stats.completions, 11)
        assert.strictEqual(stats.requests, 15)

        // A recovers: the simulator comes back on the same port without A's fault.
        yield* Scope.close(downScope, Exit.void)
        yield* realPause
        const up = yield* Simulator.make({ seed: 2, port: down.port })
        yield* TestClock.adjust("2 seconds")
        assert.strictEqual(yield* CircuitBreaker.state(A), "half-open")
        // The cool-down is over: the next call is the probe to A; its success closes the circuit.
        assert.strictEqual((yield* call).model, A)
        assert.strictEqual(yield* CircuitBreaker.state(A), "closed")
        assert.strictEqual((yield* call).model, A)
        const upStats = yield* up.stats
        assert.strictEqual(upStats.requests, 2, "one request per call: the probe, then A again, nothing to B")
        assert.strictEqual(upStats.completions, 2)
      }).pipe(Effect.provide(pipeline(down.url, log)))

      const records = log.records
      assert.strictEqual(records.length, 13)
      // Calls 1–4 failed over after A's 503; calls 5–11 found the circuit open; 12–13 were A's again.
      assert.match(records[0]!.route.hops![0]!.reason, /^ProviderUnavailable: .*503/)
      assert.deepStrictEqual(records[0]!.route.models, [A, B])
      for (const record of records.slice(4, 11)) {
        assert.match(record.route.hops![0]!.reason, /^CircuitOpen: /)
        assert.strictEqual(record.model, B)
      }
      assert.deepStrictEqual(records.slice(11).map((record) => record.route.models), [[A], [A]])
    }))
})
