import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Llm from "../src/Llm.js"
import type * as LlmRequest from "../src/LlmRequest.js"
import * as TestKit from "../src/TestKit.js"

const user = (content: string) => ({ role: "user" as const, content })

const generate = (model: TestKit.Scripted, request: LlmRequest.Input, options: Llm.Options = {}) =>
  Llm.generate(request).pipe(Effect.provide(Llm.layer(options)), Effect.provide(model.layer))

describe("Llm.generate", () => {
  it.effect("sends the validated request to the model and returns its answer", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([TestKit.response({ text: "hello" })])
      const response = yield* generate(model, { model: "gpt-4o-mini", messages: [user("hi")], temperature: 0.2 })
      assert.strictEqual(response.text, "hello")
      assert.deepStrictEqual(model.requests, [{ model: "gpt-4o-mini", messages: [user("hi")], temperature: 0.2 }])
    }))

  it.effect("chooses the model: the request's, then withModel's, then the default", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], { otherwise: TestKit.response() })
      yield* generate(model, { messages: [user("a")] }, { defaultModel: "default-model" })
      yield* Llm.withModel(
        generate(model, { messages: [user("b")] }, { defaultModel: "default-model" }),
        "scoped-model"
      )
      yield* generate(model, { model: "own-model", messages: [user("c")] }, { defaultModel: "default-model" }).pipe(
        Llm.withModel("scoped-model")
      )
      assert.deepStrictEqual(model.requests.map((r) => r.model), ["default-model", "scoped-model", "own-model"])
    }))

  it.effect("without any model it fails with InvalidRequest naming `model`, sending nothing", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([])
      const error = yield* Effect.flip(generate(model, { messages: [user("a")] }))
      assert.isTrue(error._tag === "InvalidRequest" && error.field === "model")
      assert.strictEqual(model.requests.length, 0)
    }))

  it.effect("a refusal is Refused and a cut answer is Truncated", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([
        TestKit.response({ text: undefined, refusal: "I can't help with that" }),
        TestKit.response({ finishReason: "length", usage: { outputTokens: 64 } })
      ])
      const refused = yield* Effect.flip(generate(model, { model: "m", messages: [user("a")] }))
      assert.isTrue(refused._tag === "Refused" && refused.refusal === "I can't help with that")
      const truncated = yield* Effect.flip(generate(model, { model: "m", messages: [user("a")], maxOutputTokens: 64 }))
      assert.isTrue(truncated._tag === "Truncated" && truncated.outputTokens === 64 && truncated.maxOutputTokens === 64)
      assert.match(truncated.message, /raise maxOutputTokens/)
    }))

  describe("bad input fails with InvalidRequest naming the field, before anything is sent", () => {
    const cases: Array<[string, unknown, string, RegExp]> = [
      ["empty messages", { model: "m", messages: [] }, "messages", /at least one message/],
      ["an unknown role", { model: "m", messages: [{ role: "wizard", content: "x" }] }, "messages.0.role", /"wizard"/],
      [
        "negative max tokens",
        { model: "m", messages: [user("x")], maxOutputTokens: -5 },
        "maxOutputTokens",
        /positive/
      ],
      [
        "fractional max tokens",
        { model: "m", messages: [user("x")], maxOutputTokens: 1.5 },
        "maxOutputTokens",
        /integer/
      ],
      [
        "temperature out of range",
        { model: "m", messages: [user("x")], temperature: 3 },
        "temperature",
        /between 0 and 2/
      ],
      ["a model name with spaces", { model: "gpt 4o", messages: [user("x")] }, "model", /without spaces/],
      [
        "a tool with a bad name",
        {
          model: "m",
          messages: [user("x")],
          tools: [{ name: "no spaces allowed", parameters: {} }]
        },
        "tools.0.name",
        /letters, digits/
      ],
      [
        "a tool message without its call id",
        {
          model: "m",
          messages: [{ role: "tool", toolCallId: "", content: "x" }]
        },
        "messages.0.toolCallId",
        /must not be empty/
      ],
      ["a bad scope", { model: "m", messages: [user("x")], scope: "tenant:a b" }, "scope", /segments/],
      ["an unknown field", { model: "m", messages: [user("x")], maxTokens: 5 }, "maxTokens", /unexpected/],
      ["not an object", "hello", "request", /Expected/]
    ]
    for (const [name, input, field, reason] of cases) {
      it.effect(name, () =>
        Effect.gen(function*() {
          const model = TestKit.scripted([])
          const error = yield* Effect.flip(generate(model, input as LlmRequest.Input))
          assert.strictEqual(error._tag, "InvalidRequest")
          assert.isTrue(error._tag === "InvalidRequest" && error.field === field, `field: ${error.message}`)
          assert.match(error.message, reason)
          assert.include(error.message, field)
          assert.strictEqual(model.requests.length, 0)
        }))
    }
  })
})
