import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Llm from "../src/Llm.js"
import * as LlmRequest from "../src/LlmRequest.js"
import * as StrictSchema from "../src/StrictSchema.js"
import * as TestKit from "../src/TestKit.js"
import * as Tool from "../src/Tool.js"

const user = { role: "user" as const, content: "Score this listing." }

/** A schema OpenAI accepts in strict mode: nested object, nullable field, enum, array, `$defs` and `$ref`. */
const accepted = () => ({
  type: "object",
  properties: {
    title: { type: "string", description: "Job title" },
    seniority: { type: "string", enum: ["junior", "mid", "senior"] },
    salary: { anyOf: [{ type: "number", minimum: 0 }, { type: "null" }] },
    skills: { type: "array", items: { type: "string" }, maxItems: 10 },
    location: { $ref: "#/$defs/location" }
  },
  required: ["title", "seniority", "salary", "skills", "location"],
  additionalProperties: false,
  $defs: {
    location: {
      type: "object",
      properties: { city: { type: ["string", "null"] }, remote: { type: "boolean" } },
      required: ["city", "remote"],
      additionalProperties: false
    }
  }
})

/** Sends `request` through the pipeline to a scripted model; returns the failure (if any) and what the model saw. */
const generate = (request: LlmRequest.Input) =>
  Effect.gen(function*() {
    const model = TestKit.scripted([], { otherwise: TestKit.response() })
    const result = yield* Effect.either(
      Llm.generate(request).pipe(Effect.provide(Llm.layer({ defaultModel: "m" })), Effect.provide(model.layer))
    )
    return { error: result._tag === "Left" ? result.left : undefined, sent: model.requests.length }
  })

const nested = (depth: number): Record<string, unknown> =>
  depth === 0
    ? { type: "string" }
    : { type: "object", properties: { a: nested(depth - 1) }, required: ["a"], additionalProperties: false }

describe("LlmRequest.decode: strict tool schemas are checked before sending", () => {
  it.effect("a strict schema that follows the rules is sent, as is a Tool.make definition", () =>
    Effect.gen(function*() {
      const tool = Tool.make("score", {
        parameters: Schema.Struct({ score: Schema.Int, note: Schema.optional(Schema.String) })
      })
      const result = yield* generate({
        messages: [user],
        tools: [{ name: "score_listing", parameters: accepted() }, tool.definition],
        toolChoice: { tool: "score" }
      })
      assert.isUndefined(result.error)
      assert.strictEqual(result.sent, 1)
    }))

  // [case, parameters, field the error names, what the reason says]
  const refused: ReadonlyArray<readonly [string, unknown, string, RegExp]> = [
    [
      "a nested object without additionalProperties: false",
      (() => {
        const schema = accepted()
        delete (schema.$defs.location as { additionalProperties?: boolean }).additionalProperties
        return schema
      })(),
      "tools.0.parameters.$defs.location",
      /additionalProperties: false/
    ],
    [
      "a property left out of required",
      { ...accepted(), required: ["title", "seniority", "salary", "location"] },
      "tools.0.parameters",
      /every property must be in required, and "skills" is not/
    ],
    [
      "required naming no property",
      { ...accepted(), required: [...accepted().required, "extra"] },
      "tools.0.parameters",
      /required names "extra"/
    ],
    [
      "an unsupported keyword",
      {
        ...accepted(),
        properties: {
          ...accepted().properties,
          skills: { type: "array", items: { type: "string" }, uniqueItems: true }
        }
      },
      "tools.0.parameters.properties.skills",
      /"uniqueItems" is not supported/
    ],
    ["a root that is not an object", { type: "array", items: { type: "string" } }, "tools.0.parameters", /root/],
    [
      "a union at the root",
      { type: "object", anyOf: [accepted(), { type: "null" }] },
      "tools.0.parameters",
      /not anyOf/
    ],
    ["a bare object", { type: "object" }, "tools.0.parameters", /additionalProperties: false/],
    [
      "nesting deeper than 10 levels",
      nested(11),
      "tools.0.parameters.properties.a.properties.a.properties.a.properties.a.properties.a.properties.a.properties.a.properties.a.properties.a.properties.a.properties.a",
      /nesting depth 11 exceeds the limit of 10/
    ],
    [
      "more than 1,000 enum values",
      {
        type: "object",
        properties: {
          a: { type: "integer", enum: Array.from({ length: 600 }, (_, i) => i) },
          b: { type: "integer", enum: Array.from({ length: 600 }, (_, i) => i) }
        },
        required: ["a", "b"],
        additionalProperties: false
      },
      "tools.0.parameters.properties.b",
      /1200 enum values in all exceed the limit of 1000/
    ]
  ]
  for (const [name, parameters, field, reason] of refused) {
    it.effect(`${name}: InvalidRequest naming the tool and the path, nothing sent`, () =>
      Effect.gen(function*() {
        const { error, sent } = yield* generate({
          messages: [user],
          tools: [{ name: "score_listing", parameters: parameters as LlmRequest.JsonSchema }]
        })
        assert(error?._tag === "InvalidRequest", `expected InvalidRequest, got ${error?._tag}`)
        assert.strictEqual(error.field, field)
        assert.match(error.reason, reason)
        assert.include(error.message, "tool \"score_listing\" is strict")
        assert.strictEqual(sent, 0)
      }))
  }

  it.effect("strict is the default; strict: false sends any schema unchecked", () =>
    Effect.gen(function*() {
      const loose = { type: "object", properties: { a: { type: "string" } } }
      const strictByDefault = yield* generate({ messages: [user], tools: [{ name: "t", parameters: loose }] })
      assert.strictEqual(strictByDefault.error?._tag, "InvalidRequest")
      assert.strictEqual(strictByDefault.sent, 0)
      const notStrict = yield* generate({ messages: [user], tools: [{ name: "t", parameters: loose, strict: false }] })
      assert.isUndefined(notStrict.error)
      assert.strictEqual(notStrict.sent, 1)
    }))

  it.effect("the second tool is named by its index; a strict json_schema response format is checked too", () =>
    Effect.gen(function*() {
      const second = yield* generate({
        messages: [user],
        tools: [{ name: "a", parameters: accepted() }, { name: "b", parameters: { type: "object", properties: {} } }]
      })
      assert(second.error?._tag === "InvalidRequest")
      assert.strictEqual(second.error.field, "tools.1.parameters")
      assert.include(second.error.reason, "tool \"b\"")
      const format = yield* generate({
        messages: [user],
        responseFormat: { _tag: "json_schema", name: "score", schema: { type: "object", properties: {}, required: [] } }
      })
      assert(format.error?._tag === "InvalidRequest")
      assert.strictEqual(format.error.field, "responseFormat.schema")
      assert.include(format.error.reason, "response format \"score\"")
      assert.strictEqual(format.sent, 0)
    }))

  it("a schema is checked once: a schema object that passed is not walked again", () => {
    const schema = accepted()
    const request = { messages: [user], tools: [{ name: "t", parameters: schema }] }
    assert.strictEqual(Effect.runSync(Effect.either(LlmRequest.decode(request)))._tag, "Right") // Broken after it passed: the cache is keyed on the object, so it is not looked at again.
    ;(schema as { additionalProperties?: boolean }).additionalProperties = true
    assert.strictEqual(Effect.runSync(Effect.either(LlmRequest.decode(request)))._tag, "Right")
    // A fresh object with the same flaw is checked.
    const fresh = Effect.runSync(
      Effect.either(LlmRequest.decode({ ...request, tools: [{ name: "t", parameters: { ...schema } }] }))
    )
    assert.strictEqual(fresh._tag, "Left")
  })

  it("the limits are StrictSchema's", () => {
    const { maxDepth, maxEnumValues, maxProperties } = StrictSchema.defaultLimits
    assert.deepStrictEqual(LlmRequest.strictLimits, { maxDepth, maxProperties, maxEnumValues })
  })
})

describe("LlmRequest.decode: toolChoice", () => {
  it.effect("naming a tool that is not in tools fails at toolChoice, listing the tools, nothing sent", () =>
    Effect.gen(function*() {
      const missing = yield* generate({
        messages: [user],
        tools: [{ name: "score_listing", parameters: accepted() }],
        toolChoice: { tool: "score" }
      })
      assert(missing.error?._tag === "InvalidRequest")
      assert.strictEqual(missing.error.field, "toolChoice")
      assert.include(missing.error.reason, "\"score\", which is not in tools (\"score_listing\")")
      assert.strictEqual(missing.sent, 0)
      const none = yield* generate({ messages: [user], toolChoice: { tool: "score" } })
      assert(none.error?._tag === "InvalidRequest")
      assert.strictEqual(none.error.field, "toolChoice")
      assert.include(none.error.reason, "none given")
    }))

  it.effect("auto, none and required need no named tool", () =>
    Effect.gen(function*() {
      for (const toolChoice of ["auto", "none", "required"] as const) {
        const result = yield* generate({ messages: [user], tools: [{ name: "t", parameters: accepted() }], toolChoice })
        assert.isUndefined(result.error, toolChoice)
      }
    }))
})
