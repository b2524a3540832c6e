import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as CallLog from "../src/CallLog.js"
import * as Llm from "../src/Llm.js"
import { OutputInvalid, ProviderUnavailable } from "../src/LlmError.js"
import type * as LlmRequest from "../src/LlmRequest.js"
import * as Pricing from "../src/Pricing.js"
import * as TestKit from "../src/TestKit.js"
import * as Tool from "../src/Tool.js"

const JobScore = Schema.Struct({
  score: Schema.Int.pipe(Schema.between(0, 100)),
  reason: Schema.String,
  remote: Schema.optional(Schema.Boolean)
}).annotations({ identifier: "JobScore" })

const messages = [{ role: "user" as const, content: "score this job" }]

const toolAnswer = (args: string, name = "JobScore") =>
  TestKit.response({
    text: undefined,
    finishReason: "tool_calls",
    toolCalls: [{ id: "call_1", name, arguments: args }],
    usage: { inputTokens: 100, outputTokens: 20 }
  })

const contentAnswer = (text: string) => TestKit.response({ text, usage: { inputTokens: 100, outputTokens: 20 } })

const run = <A>(model: TestKit.Scripted, effect: Effect.Effect<A, any, Llm.Llm>) =>
  effect.pipe(Effect.provide(Llm.layer({ defaultModel: "test-model" })), Effect.provide(model.layer))

const generate = (model: TestKit.Scripted, options: Partial<Llm.GenerateObjectOptions<any, any>> = {}) =>
  run(model, Llm.generateObject({ schema: JobScore, messages, repair: 0, ...options }))

/** Runs with a memory call log and a price for the test model; returns the outcome and the one record. */
const observed = <A>(model: TestKit.Scripted, effect: Effect.Effect<A, any, Llm.Llm>) =>
  Effect.gen(function*() {
    const log = CallLog.memory()
    const layer = Llm.layer({ defaultModel: "test-model" }).pipe(
      Layer.provide(Layer.mergeAll(log.layer, Pricing.layer({ models: { "test-model": { input: 1, output: 2 } } }))),
      Layer.provide(model.layer)
    )
    const exit = yield* Effect.exit(Effect.provide(effect, layer))
    assert.strictEqual(log.records.length, 1)
    return { exit, record: log.records[0]! }
  })

const failure = (model: TestKit.Scripted, options: Partial<Llm.GenerateObjectOptions<any, any>> = {}) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(generate(model, options))
    // A typed failure, never a defect and never a value.
    if (Exit.isFailure(exit) && exit.cause._tag === "Fail") return exit.cause.error
    return assert.fail(`expected a typed failure, got ${String(exit)}`)
  })

describe("Llm.generateObject", () => {
  it.effect("tool mode: sends a strict tool the model must call and returns the decoded arguments", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([toolAnswer(`{"score":87,"reason":"good fit","remote":null}`)])
      const value = yield* generate(model)
      assert.deepStrictEqual(value, { score: 87, reason: "good fit" })
      const [request] = model.requests
      assert.deepStrictEqual(request!.toolChoice, { tool: "JobScore" })
      assert.strictEqual(request!.tools!.length, 1)
      const tool = request!.tools![0]!
      assert.strictEqual(tool.name, "JobScore")
      assert.isTrue(tool.strict)
      assert.deepStrictEqual((tool.parameters as any).required, ["score", "reason", "remote"])
      assert.isUndefined(request!.responseFormat)
    }))

  it.effect("json_schema mode: sends a strict response format and decodes the content", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([contentAnswer(`{"score":3,"reason":"no","remote":true}`)])
      const value = yield* generate(model, { mode: "json_schema", name: "score" })
      assert.deepStrictEqual(value, { score: 3, reason: "no", remote: true })
      const format = model.requests[0]!.responseFormat
      assert.isTrue(format?._tag === "json_schema" && format.name === "score" && format.strict)
      assert.isUndefined(model.requests[0]!.tools)
    }))

  it.effect("a Tool passes its name, description and converted schema", () =>
    Effect.gen(function*() {
      const tool = Tool.make("score_job", { description: "Score a job listing", parameters: JobScore })
      const model = TestKit.scripted([toolAnswer(`{"score":50,"reason":"ok","remote":false}`, "score_job")])
      const value = yield* run(model, Llm.generateObject({ schema: tool, messages }))
      assert.deepStrictEqual(value, { score: 50, reason: "ok", remote: false })
      assert.deepStrictEqual(model.requests[0]!.tools, [tool.definition])
    }))

  describe("bad output ends in OutputInvalid with the path and the raw text", () => {
    const cases: ReadonlyArray<readonly [string, string, string, RegExp]> = [
      ["not JSON", `{"score": 87, "reason": "go`, "", /not valid JSON/],
      ["JSON of the wrong shape", `["score", 87]`, "", /Expected/],
      ["a wrong type", `{"score":"high","reason":"x","remote":null}`, "score", /Expected/],
      ["an extra property", `{"score":1,"reason":"x","remote":null,"salary":9}`, "salary", /is unexpected/],
      ["a missing required field", `{"score":1,"remote":null}`, "reason", /is missing/],
      ["an optional field left out instead of null", `{"score":1,"reason":"x"}`, "remote", /is missing/],
      ["a number out of bounds", `{"score":101,"reason":"x","remote":null}`, "score", /between 0 and 100/]
    ]
    for (const [name, raw, path, reason] of cases) {
      it.effect(name, () =>
        Effect.gen(function*() {
          const error = yield* failure(TestKit.scripted([toolAnswer(raw)]))
          assert.instanceOf(error, OutputInvalid)
          assert.strictEqual(error.path, path)
          assert.match(error.reason, reason)
          assert.strictEqual(error.raw, raw)
          const viaContent = yield* failure(TestKit.scripted([contentAnswer(raw)]), { mode: "json_schema" })
          assert.deepStrictEqual([viaContent._tag, viaContent.path, viaContent.raw], ["OutputInvalid", path, raw])
        }))
    }

    it.effect("an empty tool-call list", () =>
      Effect.gen(function*() {
        const error = yield* failure(TestKit.scripted([TestKit.response({ text: "I think 80" })]))
        assert.instanceOf(error, OutputInvalid)
        assert.match(error.reason, /got no tool call/)
        assert.strictEqual(error.raw, "I think 80")
      }))

    it.effect("a call to another tool", () =>
      Effect.gen(function*() {
        const error = yield* failure(TestKit.scripted([toolAnswer(`{"score":1,"reason":"x","remote":null}`, "other")]))
        assert.instanceOf(error, OutputInvalid)
        assert.match(error.reason, /got a call to "other"/)
      }))

    it.effect("several tool calls where one was asked", () =>
      Effect.gen(function*() {
        const args = `{"score":1,"reason":"x","remote":null}`
        const answer = TestKit.response({
          finishReason: "tool_calls",
          toolCalls: [{ id: "a", name: "JobScore", arguments: args }, { id: "b", name: "JobScore", arguments: args }]
        })
        const error = yield* failure(TestKit.scripted([answer]))
        assert.instanceOf(error, OutputInvalid)
        assert.match(error.reason, /got 2 calls/)
      }))

    it.effect("no content in json_schema mode", () =>
      Effect.gen(function*() {
        const error = yield* failure(TestKit.scripted([TestKit.response({ text: undefined })]), { mode: "json_schema" })
        assert.instanceOf(error, OutputInvalid)
      }))
  })

  it.effect("a refusal is Refused and a cut answer Truncated: neither is parsed nor repaired", () =>
    Effect.gen(function*() {
      const refused = TestKit.scripted([TestKit.response({ refusal: "I can't help with that", text: undefined })])
      assert.strictEqual((yield* failure(refused, { repair: 3 }))._tag, "Refused")
      assert.strictEqual(refused.requests.length, 1)
      const cut = TestKit.scripted([{ ...toolAnswer(`{"score":87,"rea`), finishReason: "length" as const }])
      assert.strictEqual((yield* failure(cut, { repair: 3 }))._tag, "Truncated")
      assert.strictEqual(cut.requests.length, 1)
    }))

  it.effect("a schema strict mode cannot express fails before anything is sent, naming the path", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([])
      const schema = Schema.Struct({ labels: Schema.Record({ key: Schema.String, value: Schema.Number }) })
      const error = yield* failure(model, { schema })
      assert.strictEqual(error._tag, "InvalidRequest")
      assert.strictEqual(error.field, "schema.labels")
      assert.strictEqual(model.requests.length, 0)
    }))

  describe("repair", () => {
    it.effect("re-asks with the invalid call and its error, and returns the repaired value; the record shows both rounds and their cost", () =>
      Effect.gen(function*() {
        const bad = `{"score":140,"reason":"great","remote":null}`
        const model = TestKit.scripted([toolAnswer(bad), toolAnswer(`{"score":90,"reason":"great","remote":null}`)])
        const { exit, record } = yield* observed(model, Llm.generateObject({ schema: JobScore, messages }))
        assert.deepStrictEqual(exit, Exit.succeed({ score: 90, reason: "great" }))
        assert.strictEqual(model.requests.length, 2)
        const [assistant, tool] = model.requests[1]!.messages.slice(-2) as [LlmRequest.Message, LlmRequest.Message]
        assert.deepStrictEqual(assistant, {
          role: "assistant",
          toolCalls: [{ id: "call_1", name: "JobScore", arguments: bad }]
        })
        assert.isTrue(tool.role === "tool" && tool.toolCallId === "call_1" && /at score/.test(tool.content))
        assert.deepStrictEqual(model.requests[1]!.messages.slice(0, 1), messages)
        assert.strictEqual(record.outcome, "ok")
        assert.strictEqual(record.attempts, 2)
        assert.strictEqual(record.repairs, 1)
        assert.strictEqual(record.inputTokens, 200)
        assert.strictEqual(record.outputTokens, 40)
        // 200 input tokens at $1/M + 40 output tokens at $2/M: both rounds are paid for.
        assert.strictEqual(Number(record.costUsd), 0.00028)
      }))

    it.effect("json_schema mode re-asks with the content as the assistant turn and the error as a user turn", () =>
      Effect.gen(function*() {
        const model = TestKit.scripted([
          contentAnswer(`{"score":1}`),
          contentAnswer(`{"score":1,"reason":"r","remote":null}`)
        ])
        const value = yield* generate(model, { mode: "json_schema", repair: 1 })
        assert.deepStrictEqual(value, { score: 1, reason: "r" })
        const [assistant, user] = model.requests[1]!.messages.slice(-2)
        assert.deepStrictEqual(assistant, { role: "assistant", content: `{"score":1}` })
        assert.isTrue(user!.role === "user" && /at reason: is missing/.test(user!.content))
      }))

    it.effect("is bounded: after `repair` re-asks the last OutputInvalid is the result, every round on the record", () =>
      Effect.gen(function*() {
        const model = TestKit.scripted([], { otherwise: toolAnswer(`{"score":-1,"reason":"x","remote":null}`) })
        const { exit, record } = yield* observed(model, Llm.generateObject({ schema: JobScore, messages, repair: 2 }))
        assert.isTrue(Exit.isFailure(exit))
        assert.strictEqual(model.requests.length, 3)
        assert.strictEqual(record.outcome, "error")
        assert.strictEqual(record.errorTag, "OutputInvalid")
        assert.strictEqual(record.attempts, 3)
        assert.strictEqual(record.repairs, 2)
        assert.strictEqual(record.inputTokens, 300)
      }))

    it.effect("a repair round runs under the retry policy, and its retries count as attempts", () =>
      Effect.gen(function*() {
        const model = TestKit.scripted([
          toolAnswer(`{"score":"x","reason":"x","remote":null}`),
          new ProviderUnavailable({ status: 503 }),
          toolAnswer(`{"score":5,"reason":"x","remote":null}`)
        ])
        const { exit, record } = yield* TestKit.runWithTestClock(
          observed(model, Llm.generateObject({ schema: JobScore, messages }))
        )
        assert.deepStrictEqual(exit, Exit.succeed({ score: 5, reason: "x" }))
        assert.strictEqual(record.attempts, 3)
        assert.strictEqual(record.repairs, 1)
        assert.deepStrictEqual(model.requests[1], model.requests[2])
      }))

    it.effect("repair 0 sends one request", () =>
      Effect.gen(function*() {
        const model = TestKit.scripted([toolAnswer(`{}`)])
        assert.strictEqual((yield* failure(model, { repair: 0 }))._tag, "OutputInvalid")
        assert.strictEqual(model.requests.length, 1)
      }))
  })
})
