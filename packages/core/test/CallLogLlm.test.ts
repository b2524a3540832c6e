import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as TestClock from "effect/TestClock"
import * as Fs from "node:fs"
import * as Budget from "../src/Budget.js"
import * as CallLog from "../src/CallLog.js"
import * as JsonLines from "../src/CallLog/JsonLines.js"
import * as CallRecord from "../src/CallRecord.js"
import * as Llm from "../src/Llm.js"
import { ProtocolError, ProviderUnavailable, QuotaExhausted, RateLimited } from "../src/LlmError.js"
import * as Money from "../src/Money.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as TestKit from "../src/TestKit.js"
import * as Usage from "../src/Usage.js"
import * as TestPrices from "./utils/prices.js"

const user = (content: string) => ({ role: "user" as const, content })

const pricing = TestPrices.layer({ models: { "log-model": { input: "1", cachedInput: "0.5", output: "2" } } })

/** The pipeline over a scripted model, with the given call log and a price for `log-model`. */
const pipeline = (model: TestKit.Scripted, callLog: Layer.Layer<CallLog.CallLog, any>, options: Llm.Options = {}) =>
  Llm.layer(options).pipe(Layer.provide(Layer.mergeAll(model.layer, callLog, pricing)))

describe("Llm with a CallLog", () => {
  it.effect("a call retried once writes one record with both attempts, tokens, exact cost and the request id", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.parse("2026-11-29T05:00:00Z"))
      const model = TestKit.scripted([
        new ProviderUnavailable({ status: 503 }),
        TestKit.response({
          requestId: "req_9",
          usage: { inputTokens: 1000, cachedInputTokens: 200, outputTokens: 100, reasoningTokens: 10 }
        })
      ])
      const log = CallLog.memory()
      yield* TestKit.runWithTestClock(
        Llm.generate({ model: "log-model", messages: [user("hi")], task: "score", tier: "simple", scope: "run:7" })
      ).pipe(
        RetryPolicy.withPolicy(RetryPolicy.make({ jitter: "none", base: "1 second" })),
        Effect.provide(pipeline(model, log.layer))
      )
      assert.strictEqual(log.records.length, 1)
      const { callId, promptHash, ...record } = log.records[0]!
      assert.match(callId, /^[0-9a-f-]{36}$/)
      assert.strictEqual(promptHash, CallRecord.promptHash({ messages: [user("hi")] }))
      assert.deepStrictEqual(record, {
        ts: "2026-11-29T05:00:00.000Z",
        scope: "run:7",
        task: "score",
        tier: "simple",
        route: { reason: "request" },
        provider: "scripted",
        model: "log-model",
        mode: "sync",
        attempts: 2,
        latencyMs: 1000,
        inputTokens: 1000,
        cachedInputTokens: 200,
        outputTokens: 100,
        reasoningTokens: 10,
        // 800 × $1/M + 200 × $0.5/M + 100 × $2/M
        costUsd: "0.0011",
        outcome: "ok",
        requestId: "req_9"
      })
      CallRecord.decodeUnknownSync(log.records[0])
    }))

  it.effect("a failed call writes one record with the error's tag and message; a hang's cost is estimated", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.hang, new ProviderUnavailable({ status: 502, requestId: "req_x" })])
      const log = CallLog.memory()
      const error = yield* TestKit.runWithTestClock(
        Effect.flip(Llm.generate({ model: "log-model", messages: [user("hi")], maxOutputTokens: 50 }))
      ).pipe(
        RetryPolicy.withPolicy(RetryPolicy.make({ maxAttempts: 2, attemptTimeout: "1 second", base: "10 millis" })),
        Effect.provide(pipeline(model, log.layer))
      )
      assert.strictEqual(error._tag, "ProviderUnavailable")
      assert.strictEqual(log.records.length, 1)
      const record = log.records[0]!
      assert.strictEqual(record.outcome, "error")
      assert.strictEqual(record.errorTag, "ProviderUnavailable")
      assert.strictEqual(record.errorMessage, error.message)
      assert.strictEqual(record.requestId, "req_x")
      assert.strictEqual(record.attempts, 2)
      assert.strictEqual(record.estimated, true)
      assert.notStrictEqual(record.costUsd, "0")
    }))

  it.effect("an interrupted call still writes its record", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.hang])
      const log = CallLog.memory()
      const fiber = yield* Effect.fork(
        Llm.generate({ model: "log-model", messages: [user("hi")] }).pipe(Effect.provide(pipeline(model, log.layer)))
      )
      yield* TestClock.adjust(Duration.seconds(1))
      yield* Fiber.interrupt(fiber)
      assert.strictEqual(log.records.length, 1)
      assert.strictEqual(log.records[0]!.errorTag, "Interrupted")
      assert.strictEqual(log.records[0]!.attempts, 1)
    }))

  it.effect("prompt and output are recorded only when the call log opts in", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: TestKit.response({ text: "SECRET ANSWER" }) })
      const quiet = CallLog.memory()
      const verbose = CallLog.memory({ content: true })
      const input = { model: "log-model", messages: [user("SECRET PROMPT")] }
      yield* Llm.generate(input).pipe(Effect.provide(pipeline(model, quiet.layer)))
      yield* Llm.generate(input).pipe(Effect.provide(pipeline(model, verbose.layer)))
      assert.notInclude(JSON.stringify(quiet.records), "SECRET")
      assert.deepStrictEqual(verbose.records[0]!.prompt, [user("SECRET PROMPT")])
      assert.deepStrictEqual(verbose.records[0]!.output, { text: "SECRET ANSWER" })
    }))

  it.effect("the route reason says where the model came from", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: TestKit.response() })
      const log = CallLog.memory()
      yield* Effect.gen(function*() {
        yield* Llm.generate({ model: "log-model", messages: [user("a")] })
        yield* Llm.generate({ messages: [user("b")] })
        yield* Llm.withModel(Llm.generate({ messages: [user("c")] }), "other-model")
        yield* Llm.withModel(Llm.generate({ messages: [user("d")] }), "log-model")
      }).pipe(
        Effect.provide(
          Llm.layer({ defaultModel: "log-model" }).pipe(
            Layer.provide(
              Layer.mergeAll(model.layer, log.layer, TestPrices.layer({ fallback: { input: 1, output: 1 } }))
            )
          )
        )
      )
      assert.deepStrictEqual(log.records.map((r) => [r.model, r.route.reason]), [
        ["log-model", "request"],
        ["log-model", "default"],
        ["other-model", "withModel"],
        ["log-model", "withModel"]
      ])
    }))

  it.effect("an invalid request is refused before anything is sent and writes no record", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([])
      const log = CallLog.memory()
      const error = yield* Effect.flip(
        Llm.generate({ model: "log-model", messages: [] }).pipe(Effect.provide(pipeline(model, log.layer)))
      )
      assert.strictEqual(error._tag, "InvalidRequest")
      assert.strictEqual(log.records.length, 0)
    }))

  it.effect.skipIf(!Fs.existsSync("/dev/full"))(
    "a call log that cannot write never fails the call",
    () =>
      Effect.gen(function*() {
        const model = TestKit.scripted([], { otherwise: TestKit.response({ text: "fine" }) })
        const answers = yield* Effect.forEach(
          [1, 2, 3],
          () => Llm.generate({ model: "log-model", messages: [user("hi")] }),
          { concurrency: 1 }
        ).pipe(
          Effect.provide(pipeline(model, JsonLines.layer({ path: "/dev/full" }))),
          Effect.provide(Logger.remove(Logger.defaultLogger))
        )
        assert.deepStrictEqual(answers.map((a) => a.text), ["fine", "fine", "fine"])
      })
  )
})

describe("Llm with a CallLog and a Budget: 1,000 calls, 20% faulty attempts, under TestClock", () => {
  it.effect(
    "one record per call; every record decodes; tokens match the model's answers and cost the ledger's",
    () =>
      Effect.gen(function*() {
        // A deterministic fault mix (mulberry32): 20% of attempts fail in one of seven ways.
        let seed = 42
        const random = () => {
          seed = (seed + 0x6D2B79F5) | 0
          let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
          t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
          return ((t ^ (t >>> 14)) >>> 0) / 4294967296
        }
        let answered = Usage.empty
        const answer = (fields: Parameters<typeof TestKit.response>[0]) => {
          const response = TestKit.response({
            ...fields,
            usage: {
              inputTokens: 100 + Math.floor(random() * 900),
              cachedInputTokens: Math.floor(random() * 50),
              outputTokens: 10 + Math.floor(random() * 200),
              reasoningTokens: Math.floor(random() * 10)
            }
          })
          answered = Usage.add(answered, response.usage)
          return Effect.succeed(response)
        }
        const model = TestKit.scripted([], {
          otherwise: () => {
            const r = random()
            if (r >= 0.2) return answer({})
            switch (Math.floor(r / 0.2 * 7)) {
              case 0:
                return Effect.fail(new RateLimited({ retryAfter: Duration.seconds(1) }))
              case 1:
                return Effect.fail(new ProviderUnavailable({ status: 503 }))
              case 2:
                return Effect.never // the attempt timeout ends it; it may have been billed: estimated
              case 3:
                return Effect.fail(new QuotaExhausted({ code: "insufficient_quota" }))
              case 4:
                return Effect.fail(new ProtocolError({ reason: "not JSON" }))
              case 5:
                return answer({ refusal: "I can't help with that" })
              default:
                return answer({ finishReason: "length" })
            }
          }
        })
        const log = CallLog.memory()
        const layer = Llm.layer().pipe(
          Layer.provide(Layer.mergeAll(model.layer, log.layer, TestPrices.layer())),
          Layer.provideMerge(Budget.layerMemory())
        )
        const policy = RetryPolicy.make({ base: "100 millis", attemptTimeout: "2 seconds", deadline: "1 minute" })
        const { exits, ledger } = yield* TestKit.runWithTestClock(
          Effect.gen(function*() {
            const exits = yield* Effect.forEach(
              Array.from({ length: 1000 }, (_, i) => i),
              (i) =>
                Effect.exit(
                  Llm.generate({
                    model: "gpt-4o-mini",
                    messages: [user(`listing ${i}`)],
                    maxOutputTokens: 300,
                    scope: "run:ledger"
                  })
                ),
              { concurrency: 100 }
            )
            return { exits, ledger: yield* Budget.status("run:ledger") }
          }),
          { step: Duration.millis(100) }
        ).pipe(RetryPolicy.withPolicy(policy), Effect.provide(layer))

        const records = log.records.map((record) => CallRecord.decodeUnknownSync(record))
        assert.strictEqual(records.length, 1000)
        assert.strictEqual(new Set(records.map((r) => r.callId)).size, 1000)
        assert.strictEqual(
          records.filter((r) => r.outcome === "ok").length,
          exits.filter((e) => e._tag === "Success").length
        )
        const tags = new Set(records.map((r) => r.errorTag))
        for (const tag of ["QuotaExhausted", "Refused", "Truncated"]) assert.isTrue(tags.has(tag), tag)
        assert.isAbove(records.filter((r) => r.attempts > 1).length, 0)
        assert.isAbove(records.filter((r) => r.estimated).length, 0)

        const sum = (field: "inputTokens" | "cachedInputTokens" | "outputTokens" | "reasoningTokens") =>
          records.reduce((n, r) => n + r[field], 0)
        assert.deepStrictEqual(
          {
            inputTokens: sum("inputTokens"),
            cachedInputTokens: sum("cachedInputTokens"),
            outputTokens: sum("outputTokens"),
            reasoningTokens: sum("reasoningTokens")
          },
          answered
        )
        const total = ledger.find((s) => s.scope === "run:ledger" && s.window === "total")!
        const recorded = Money.sum(records.map((r) => Either.getOrThrow(Money.parse(r.costUsd!))))
        assert.isAbove(Number(recorded), 0)
        assert.strictEqual(recorded, total.spent)
        assert.strictEqual(total.reserved, 0n)
      }),
    60_000
  )
})
