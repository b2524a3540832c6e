/**
 * The circuit breaker under `TestClock`: every transition (closed → open at the threshold, open →
 * half-open after the cool-down, half-open → closed or open by the probe), what counts as a failure,
 * the gauge and the log lines, bad options, and the breaker in the pipeline with a `Router` falling
 * back to a second model while the first one is down.
 */
import { assert, describe, it } from "@effect/vitest"
import * as DateTime from "effect/DateTime"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as TestClock from "effect/TestClock"
import * as CallLog from "../src/CallLog.js"
import * as CircuitBreaker from "../src/CircuitBreaker.js"
import * as Llm from "../src/Llm.js"
import {
  AuthenticationFailed,
  InvalidRequest,
  ProtocolError,
  ProviderUnavailable,
  RateLimited,
  Timeout,
  Transport
} from "../src/LlmError.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as Router from "../src/Router.js"
import * as Telemetry from "../src/Telemetry.js"
import * as TestKit from "../src/TestKit.js"

const down = new ProviderUnavailable({ status: 503 })
const fails = Effect.fail(down)
const ok = Effect.succeed("ok")

/** Runs `self` with a logger that keeps every message. */
const withLogs = <A, E, R>(self: Effect.Effect<A, E, R>) => {
  const logs: Array<string> = []
  const logger = Logger.make<unknown, void>(({ message }) => {
    logs.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
  })
  return Effect.map(Effect.provide(self, Logger.replace(Logger.defaultLogger, logger)), (result) => ({ result, logs }))
}

const gauge = (model: string) =>
  Effect.map(
    Metric.value(Telemetry.circuitBreakerState.pipe(Metric.tagged(Telemetry.Attributes.requestModel, model))),
    (state) => state.value
  )

const options = { threshold: 0.5, minimumRequests: 4, window: "10 seconds", cooldown: "30 seconds" } as const

describe("CircuitBreaker", () => {
  it.effect("opens when the failed share reaches the threshold with enough requests, then fails fast", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make(options)
      // 3 failures and 1 success: 75% failed, but only 4 requests once the success is in.
      for (let i = 0; i < 3; i++) yield* Effect.exit(breaker.protect("cb-open", fails))
      assert.strictEqual(yield* breaker.state("cb-open"), "closed") // 3 < minimumRequests
      yield* breaker.protect("cb-open", ok)
      assert.strictEqual(yield* breaker.state("cb-open"), "closed") // 4 requests, 3 failed: crosses only on a failure
      yield* TestClock.adjust("1 second")
      yield* Effect.exit(breaker.protect("cb-open", fails)) // 4 of 5 failed
      assert.strictEqual(yield* breaker.state("cb-open"), "open")
      let ran = 0
      const error = yield* Effect.flip(breaker.protect("cb-open", Effect.sync(() => ran++)))
      assert.strictEqual(ran, 0)
      assert.strictEqual(error._tag, "CircuitOpen")
      assert.strictEqual(error.model, "cb-open")
      // It reopens 30 s after it opened (at 1 s of virtual time).
      assert.strictEqual(DateTime.toEpochMillis(error.retryAt!), 31_000)
      assert.strictEqual((yield* Effect.flip(breaker.check("cb-open")))._tag, "CircuitOpen")
      assert.strictEqual(yield* gauge("cb-open"), 2)
    }))

  it.effect("failures older than the window no longer count", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make(options)
      for (let i = 0; i < 3; i++) yield* Effect.exit(breaker.protect("cb-window", fails))
      yield* TestClock.adjust("11 seconds")
      // 3 old failures have left the window: 1 failure and 3 successes now is 25%.
      yield* Effect.exit(breaker.protect("cb-window", fails))
      for (let i = 0; i < 3; i++) yield* breaker.protect("cb-window", ok)
      assert.strictEqual(yield* breaker.state("cb-window"), "closed")
      // The same four again, inside one window, all failing: open.
      for (let i = 0; i < 4; i++) yield* Effect.exit(breaker.protect("cb-window-2", fails))
      assert.strictEqual(yield* breaker.state("cb-window-2"), "open")
    }))

  it.effect("after the cool-down one probe goes through; its success closes the circuit", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make(options)
      const { logs } = yield* withLogs(Effect.gen(function*() {
        for (let i = 0; i < 4; i++) yield* Effect.exit(breaker.protect("cb-probe", fails))
        yield* TestClock.adjust("29999 millis")
        assert.strictEqual((yield* Effect.flip(breaker.protect("cb-probe", ok)))._tag, "CircuitOpen")
        yield* TestClock.adjust("1 millis")
        assert.strictEqual(yield* breaker.state("cb-probe"), "half-open")
        // The probe is slow: a second request meanwhile is turned away, the probe holds the only slot.
        const probe = yield* Effect.fork(breaker.protect("cb-probe", Effect.delay(ok, "1 second")))
        yield* TestClock.adjust(0)
        assert.strictEqual(yield* gauge("cb-probe"), 1)
        assert.strictEqual((yield* Effect.flip(breaker.protect("cb-probe", ok)))._tag, "CircuitOpen")
        yield* TestClock.adjust("1 second")
        assert.strictEqual(yield* probe.await.pipe(Effect.map(Exit.isSuccess)), true)
        assert.strictEqual(yield* breaker.state("cb-probe"), "closed")
        assert.strictEqual(yield* breaker.protect("cb-probe", ok), "ok")
        assert.strictEqual(yield* gauge("cb-probe"), 0)
      }))
      assert.deepStrictEqual(logs, [
        "CircuitBreaker: cb-probe open: 4 of 4 requests failed in 10s (threshold 50%); failing fast for 30s",
        "CircuitBreaker: cb-probe half-open: cool-down of 30s over; letting 1 probe through",
        "CircuitBreaker: cb-probe closed: 1 probe succeeded"
      ])
    }))

  it.effect("a failed probe reopens the circuit for another cool-down", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make(options)
      for (let i = 0; i < 4; i++) yield* Effect.exit(breaker.protect("cb-reopen", fails))
      yield* TestClock.adjust("30 seconds")
      yield* Effect.exit(breaker.protect("cb-reopen", fails))
      assert.strictEqual(yield* breaker.state("cb-reopen"), "open")
      assert.strictEqual(yield* gauge("cb-reopen"), 2)
      yield* TestClock.adjust("29 seconds")
      assert.strictEqual((yield* Effect.flip(breaker.protect("cb-reopen", ok)))._tag, "CircuitOpen")
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* breaker.protect("cb-reopen", ok), "ok")
      assert.strictEqual(yield* breaker.state("cb-reopen"), "closed")
    }))

  it.effect("with several probes, all must succeed before it closes", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ ...options, probes: 2 })
      for (let i = 0; i < 4; i++) yield* Effect.exit(breaker.protect("cb-probes", fails))
      yield* TestClock.adjust("30 seconds")
      yield* breaker.protect("cb-probes", ok)
      assert.strictEqual(yield* breaker.state("cb-probes"), "half-open")
      yield* breaker.protect("cb-probes", ok)
      assert.strictEqual(yield* breaker.state("cb-probes"), "closed")
    }))

  it.effect("only provider-health failures count: 429, 400, 401 and interruptions do not open it", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make(options)
      const answered = [
        new RateLimited({}),
        new InvalidRequest({ reason: "bad", status: 400 }),
        new AuthenticationFailed({ status: 401 })
      ]
      for (let i = 0; i < 10; i++) {
        for (const error of answered) yield* Effect.exit(breaker.protect("cb-health", Effect.fail(error)))
        yield* Effect.exit(breaker.protect("cb-health", Effect.interrupt))
      }
      assert.strictEqual(yield* breaker.state("cb-health"), "closed")
      const health = [
        new Timeout({ after: Duration.seconds(1), level: "attempt" }),
        new Transport({ reason: "ECONNRESET" }),
        new ProtocolError({ reason: "not JSON" }),
        down
      ]
      for (const error of health) yield* Effect.exit(breaker.protect("cb-health-2", Effect.fail(error)))
      assert.strictEqual(yield* breaker.state("cb-health-2"), "open")
      // Counting 429s is a choice.
      const strict = yield* CircuitBreaker.make({ ...options, failures: ["RateLimited"] })
      for (let i = 0; i < 4; i++) yield* Effect.exit(strict.protect("cb-health-3", Effect.fail(new RateLimited({}))))
      assert.strictEqual(yield* strict.state("cb-health-3"), "open")
    }))

  describe("bad options are rejected when the layer is built, naming the field", () => {
    const cases: Array<[string, CircuitBreaker.Options, string, RegExp]> = [
      ["a threshold of 0", { threshold: 0 }, "threshold", /must be a share in \(0, 1\]/],
      ["a threshold above 1", { threshold: 1.5 }, "threshold", /1\.5: must be a share in \(0, 1\]/],
      ["a zero window", { window: 0 }, "window", /must be longer than zero/],
      ["a negative window", { window: -5 }, "window", /-5 ms: must be longer than zero/],
      ["a window that is not a duration", { window: "soon" as never }, "window", /not a duration/],
      ["a zero cool-down", { cooldown: "0 seconds" }, "cooldown", /must be longer than zero/],
      ["no minimum", { minimumRequests: 0 }, "minimumRequests", /at least 1/],
      ["fractional probes", { probes: 1.5 }, "probes", /whole number/],
      ["an unknown error tag", { failures: ["Oops" as never] }, "failures[0]", /"Oops" is not an LlmError tag/]
    ]
    for (const [name, bad, field, reason] of cases) {
      it.effect(name, () =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(Layer.build(CircuitBreaker.layer(bad)).pipe(Effect.scoped))
          assert.strictEqual(error._tag, "CircuitBreakerConfigError")
          assert.strictEqual(error.field, field)
          assert.match(error.message, reason)
          assert.match(
            error.message,
            new RegExp(`^Invalid circuit breaker configuration at ${field.replace(/[[\]]/g, "\\$&")}`)
          )
        }))
    }
  })
})

describe("CircuitBreaker in the pipeline, with a Router", () => {
  const user = (content: string) => ({ role: "user" as const, content })

  /** Model A answers 503 until `healthy` is set; model B always answers. */
  const setup = () => {
    const a = { healthy: false }
    const model = TestKit.scripted([], {
      otherwise: (request) =>
        request.model === "model-a" && !a.healthy
          ? Effect.fail(new ProviderUnavailable({ status: 503, model: request.model }))
          : Effect.succeed(TestKit.response({ model: request.model }))
    })
    const log = CallLog.memory()
    const llm = Llm.layer().pipe(
      Layer.provide(Layer.mergeAll(
        model.layer,
        log.layer,
        Router.layer({
          tiers: { simple: { model: "model-a", fallbacks: ["model-b"] }, complex: { model: "model-c" } },
          models: { "model-a": { contextWindow: 100_000 }, "model-b": { contextWindow: 100_000 } }
        }),
        Layer.succeed(RetryPolicy.RetryPolicy, RetryPolicy.make({ maxAttempts: 2 }))
      )),
      // The same breaker is given to the test, to read its state.
      Layer.provideMerge(CircuitBreaker.layer(options))
    )
    const call = Llm.generate({ tier: "simple", messages: [user("hi")] }).pipe(TestKit.runWithTestClock)
    const sentTo = (name: string) => model.requests.filter((request) => request.model === name).length
    return { a, model, log, llm, call, sentTo }
  }

  it.effect("with A failing, after the threshold nothing reaches A until its cool-down; calls complete on B", () =>
    Effect.gen(function*() {
      const { a, call, llm, log, sentTo } = setup()
      yield* Effect.gen(function*() {
        // Calls 1 and 2: two attempts each on A (the 4 failures open the circuit), then B answers.
        for (let i = 0; i < 10; i++) assert.strictEqual((yield* call).model, "model-b")
        assert.strictEqual(sentTo("model-a"), 4)
        assert.strictEqual(sentTo("model-b"), 10)
        assert.strictEqual(yield* CircuitBreaker.state("model-a"), "open")
        yield* TestClock.adjust("29 seconds")
        yield* call
        assert.strictEqual(sentTo("model-a"), 4)
        // The cool-down is over and A has recovered: the next call is the probe, it closes the circuit.
        yield* TestClock.adjust("2 seconds")
        a.healthy = true
        assert.strictEqual((yield* call).model, "model-a")
        assert.strictEqual(yield* CircuitBreaker.state("model-a"), "closed")
        assert.strictEqual((yield* call).model, "model-a")
        assert.strictEqual(sentTo("model-a"), 6)
      }).pipe(Effect.provide(llm))
      const records = log.records
      assert.strictEqual(records.length, 13)
      // The first call failed over after its retries on A; the third found the circuit open.
      assert.deepStrictEqual(records[0]!.route.models, ["model-a", "model-b"])
      assert.strictEqual(records[0]!.route.hops![0]!.model, "model-a")
      assert.match(records[0]!.route.hops![0]!.reason, /^ProviderUnavailable: Provider unavailable \(HTTP 503\)/)
      assert.strictEqual(records[0]!.attempts, 3)
      assert.match(records[2]!.route.hops![0]!.reason, /^CircuitOpen: The circuit for model model-a is open/)
      assert.strictEqual(records[2]!.attempts, 1)
      assert.strictEqual(records[2]!.model, "model-b")
      assert.deepStrictEqual(records[11]!.route, { reason: `tier "simple" named in the request`, models: ["model-a"] })
    }))

  it.effect("a probe that fails reopens the circuit, and the call still completes on B", () =>
    Effect.gen(function*() {
      const { call, llm, sentTo } = setup()
      yield* Effect.gen(function*() {
        for (let i = 0; i < 3; i++) yield* call
        assert.strictEqual(sentTo("model-a"), 4)
        yield* TestClock.adjust("30 seconds")
        // The probe's one attempt fails: open again, so its retry is refused and B takes the call.
        assert.strictEqual((yield* call).model, "model-b")
        assert.strictEqual(sentTo("model-a"), 5)
        yield* TestClock.adjust("20 seconds")
        yield* call
        assert.strictEqual(sentTo("model-a"), 5)
      }).pipe(Effect.provide(llm))
    }))
})
