import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as Tool from "../src/Tool.js"
import { checkStrict } from "./utils/strictChecker.js"

const Parameters = Schema.Struct({
  city: Schema.String,
  unit: Schema.optional(Schema.Literal("C", "F"))
})

const thrown = (f: () => unknown): Tool.InvalidTool => {
  try {
    f()
  } catch (error) {
    assert.instanceOf(error, Tool.InvalidTool)
    return error as Tool.InvalidTool
  }
  return assert.fail("expected Tool.make to throw")
}

describe("Tool.make", () => {
  it("exposes a strict ToolDefinition with the converted parameters", () => {
    const tool = Tool.make("get_weather", { description: "Weather for a city", parameters: Parameters })
    assert.strictEqual(tool.definition.name, "get_weather")
    assert.strictEqual(tool.definition.description, "Weather for a city")
    assert.isTrue(tool.definition.strict)
    assert.deepStrictEqual(tool.definition.parameters, {
      type: "object",
      properties: {
        city: { type: "string" },
        unit: { anyOf: [{ type: "string", enum: ["C", "F"] }, { type: "null" }] }
      },
      required: ["city", "unit"],
      additionalProperties: false
    })
    assert.deepStrictEqual(checkStrict(tool.definition.parameters), [])
    assert.isTrue(Tool.isTool(tool))
  })

  it("decodes the model's arguments, null for an optional field meaning absent", () => {
    const tool = Tool.make("get_weather", { parameters: Parameters })
    assert.deepStrictEqual(tool.decode(`{"city":"Oslo","unit":null}`), Either.right({ city: "Oslo" }))
    assert.deepStrictEqual(
      tool.decode(`{"city":"Oslo","unit":"K"}`).pipe(Either.mapLeft((problem) => problem.path)),
      Either.left("unit")
    )
  })

  it("fails at definition on a bad name", () => {
    assert.strictEqual(thrown(() => Tool.make("get weather", { parameters: Parameters })).path, "name")
    assert.strictEqual(thrown(() => Tool.make("x".repeat(65), { parameters: Parameters })).path, "name")
  })

  it("fails at definition, naming the path, when the parameters cannot be expressed", () => {
    const error = thrown(() =>
      Tool.make("bulk", {
        parameters: Schema.Struct({
          rows: Schema.Array(Schema.Struct({ cells: Schema.Tuple(Schema.String, Schema.Number) }))
        })
      })
    )
    assert.strictEqual(error.path, "parameters.rows[].cells")
    assert.match(error.message, /Tool "bulk" cannot be defined: parameters\.rows\[\]\.cells: tuples/)
    assert.strictEqual(
      thrown(() => Tool.make("either", { parameters: Schema.Union(Parameters, Schema.Struct({ id: Schema.Number })) }))
        .path,
      "parameters"
    )
  })
})
