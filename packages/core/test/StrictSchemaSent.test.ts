/**
 * What the model is shown: descriptions wherever a user wrote one (the model's only view of rules the JSON
 * Schema cannot carry), the names of recursive definitions, template literals as patterns, and optional fields
 * whose type already admits null sent once, not wrapped twice.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as StrictSchema from "../src/StrictSchema.js"
import { checkStrict } from "./utils/strictChecker.js"

const sent = (schema: Schema.Schema<any, any>): any => {
  const out = StrictSchema.make(schema).jsonSchema
  assert.deepStrictEqual(checkStrict(out), [])
  return out
}

describe("descriptions reach the model", () => {
  it("on structs, unions, enums, literals, arrays and references", () => {
    enum Size {
      S = "s",
      L = "l"
    }
    interface Part {
      readonly parts: ReadonlyArray<Part>
    }
    const Part = Schema.Struct({
      parts: Schema.Array(Schema.suspend((): Schema.Schema<Part> => Part).annotations({ description: "a sub-part" }))
    }).annotations({ identifier: "Part" })
    const out = sent(
      Schema.Struct({
        address: Schema.Struct({ city: Schema.String }).annotations({ description: "where to ship" }),
        size: Schema.Enums(Size).annotations({ description: "the size" }),
        kind: Schema.Literal("a").annotations({ description: "always a" }),
        pick: Schema.Union(Schema.Number, Schema.String).annotations({ description: "either" }),
        tags: Schema.Array(Schema.String).annotations({ description: "labels" }),
        first: Schema.NonEmptyArray(Schema.String).annotations({ description: "at least one" }),
        id: Schema.TemplateLiteral("order-", Schema.Number).annotations({ description: "an order id" }),
        root: Part
      }).annotations({ description: "an order" })
    )
    assert.strictEqual(out.description, "an order")
    assert.strictEqual(out.properties.address.description, "where to ship")
    assert.deepStrictEqual(out.properties.size, { type: "string", enum: ["s", "l"], description: "the size" })
    assert.deepStrictEqual(out.properties.kind, { type: "string", enum: ["a"], description: "always a" })
    assert.deepStrictEqual(out.properties.pick, {
      anyOf: [{ type: "number" }, { type: "string" }],
      description: "either"
    })
    assert.deepStrictEqual(out.properties.tags, { type: "array", items: { type: "string" }, description: "labels" })
    assert.strictEqual(out.properties.first.description, "at least one")
    assert.strictEqual(out.properties.id.description, "an order id")
    assert.deepStrictEqual(out.$defs.Part.properties.parts.items, { $ref: "#/$defs/Part", description: "a sub-part" })
  })

  it("a described literal in a union keeps its description as its own branch", () => {
    const mode = Schema.Union(
      Schema.Literal("exact").annotations({ description: "slowest" }),
      Schema.Literal("fast"),
      Schema.Literal("slow")
    )
    assert.deepStrictEqual(sent(Schema.Struct({ mode })).properties.mode, {
      anyOf: [{ type: "string", enum: ["fast", "slow"] }, { type: "string", enum: ["exact"], description: "slowest" }]
    })
  })

  it("a refinement's own description replaces the one of the type it refines", () => {
    const out = sent(Schema.Struct({
      score: Schema.Number.annotations({ description: "a score" }).pipe(
        Schema.between(0, 10, { description: "from 0 to 10" })
      )
    }))
    assert.deepStrictEqual(out.properties.score, {
      type: "number",
      minimum: 0,
      maximum: 10,
      description: "from 0 to 10"
    })
  })

  it("the built-in wording of plain strings, numbers and booleans is left out; a user's own is sent", () => {
    const out = sent(Schema.Struct({
      s: Schema.String,
      n: Schema.Number,
      b: Schema.Boolean,
      named: Schema.Number.annotations({ description: "a string" })
    }))
    assert.deepStrictEqual(out.properties.s, { type: "string" })
    assert.deepStrictEqual(out.properties.n, { type: "number" })
    assert.deepStrictEqual(out.properties.b, { type: "boolean" })
    assert.deepStrictEqual(out.properties.named, { type: "number", description: "a string" })
  })

  it("a field's description on a struct with defaults is carried to the sent side, without replacing the type's", () => {
    const out = sent(Schema.Struct({
      retries: Schema.optionalWith(Schema.Number, { default: () => 3 }).annotations({ description: "how often" }),
      mode: Schema.optionalWith(Schema.String.annotations({ description: "the type's" }), { default: () => "a" })
        .annotations({ description: "the field's" }),
      plain: Schema.String
    }))
    assert.strictEqual(out.properties.retries.description, "how often")
    assert.strictEqual(out.properties.mode.description, "the field's")
    assert.deepStrictEqual(out.properties.plain, { type: "string" })
  })

  it("a transformation's own description is sent on its encoded side", () => {
    const out = sent(Schema.Struct({ n: Schema.NumberFromString.annotations({ description: "digits" }) }))
    assert.deepStrictEqual(out.properties.n, { type: "string", description: "digits" })
  })
})

describe("recursive definitions get distinct, valid names", () => {
  const tree = (identifier: string | undefined) => {
    interface Tree {
      readonly children: ReadonlyArray<Tree>
    }
    const struct = Schema.Struct({ children: Schema.Array(Schema.suspend((): Schema.Schema<Tree> => self)) })
    const self: Schema.Schema<Tree> = identifier === undefined ? struct : struct.annotations({ identifier })
    return self
  }
  const defs = (schema: Schema.Schema<any, any>) => Object.keys(sent(schema).$defs)

  it("the same identifier twice gets a number; none at all is Def", () => {
    const a = tree("Node")
    const b = tree("Node")
    assert.deepStrictEqual(defs(Schema.Struct({ a: Schema.suspend(() => a), b: Schema.suspend(() => b) })), [
      "Node",
      "Node2"
    ])
    const c = tree(undefined)
    const d = tree(undefined)
    const e = tree(undefined)
    assert.deepStrictEqual(
      defs(Schema.Struct({ c: Schema.suspend(() => c), d: Schema.suspend(() => d), e: Schema.suspend(() => e) })),
      ["Def", "Def2", "Def3"]
    )
  })

  it("a name outside OpenAI's characters is rewritten and cut to 64; the reference's own identifier comes first", () => {
    assert.deepStrictEqual(defs(Schema.Struct({ a: Schema.suspend(() => tree("Order line (v2)")) })), [
      "Order_line__v2_"
    ])
    assert.deepStrictEqual(defs(Schema.Struct({ a: Schema.suspend(() => tree("x".repeat(70))) })), ["x".repeat(64)])
    const named = Schema.suspend(() => tree("Inner")).annotations({ identifier: "Outer" })
    assert.deepStrictEqual(defs(Schema.Struct({ a: named })), ["Outer"])
  })

  it("the same definition reached twice is one entry, referenced from both places", () => {
    const t = tree("T")
    const out = sent(Schema.Struct({ a: Schema.suspend(() => t), b: Schema.suspend(() => t) }))
    assert.deepStrictEqual(Object.keys(out.$defs), ["T"])
    assert.deepStrictEqual(out.properties.a, { $ref: "#/$defs/T" })
    assert.deepStrictEqual(out.properties.b, { $ref: "#/$defs/T" })
    assert.deepStrictEqual(out.$defs.T.properties.children.items, { $ref: "#/$defs/T" })
  })

  it("a root behind suspends is the root: its references are '#'", () => {
    const t = tree("T")
    const out = sent(Schema.suspend(() => Schema.suspend(() => t)))
    assert.deepStrictEqual(out.properties.children.items, { $ref: "#" })
    assert.notProperty(out, "$defs")
  })
})

describe("shapes sent as the model must write them", () => {
  it("an optional field whose type already admits null is not wrapped in a second null", () => {
    const out = sent(Schema.Struct({
      a: Schema.optional(Schema.NullOr(Schema.String)),
      b: Schema.optional(Schema.Null),
      c: Schema.optional(Schema.Literal("x", null)),
      d: Schema.optional(Schema.String)
    }))
    assert.deepStrictEqual(out.properties.a, { anyOf: [{ type: "string" }, { type: "null" }] })
    assert.deepStrictEqual(out.properties.b, { type: "null" })
    assert.deepStrictEqual(out.properties.c, { anyOf: [{ type: "string", enum: ["x"] }, { type: "null" }] })
    assert.deepStrictEqual(out.properties.d, { anyOf: [{ type: "string" }, { type: "null" }] })
  })

  it("literals of several types are one enum per type, duplicates once, null last", () => {
    const out = sent(Schema.Struct({ v: Schema.Literal(1, "a", null, true, 2, "a") }))
    assert.deepStrictEqual(out.properties.v, {
      anyOf: [
        { type: "number", enum: [1, 2] },
        { type: "string", enum: ["a"] },
        { type: "boolean", enum: [true] },
        { type: "null" }
      ]
    })
  })

  it("a template literal is a string with its pattern, which the decoder agrees with", () => {
    const strict = StrictSchema.make(Schema.Struct({ id: Schema.TemplateLiteral("order-", Schema.Number) }))
    const id = (strict.jsonSchema.properties as any).id
    assert.strictEqual(id.type, "string")
    const pattern = new RegExp(id.pattern)
    for (const text of ["order-12", "order-1.5", "order-x", "order-", "x-order-1"]) {
      assert.strictEqual(pattern.test(text), Either.isRight(strict.decodeUnknown({ id: text })), text)
    }
    assert.isTrue(pattern.test("order-12"))
  })
})

describe("conversion details a user can see", () => {
  it("a pattern whose text is a format's name is not taken for that format", () => {
    assert.deepStrictEqual(sent(Schema.Struct({ v: Schema.String.pipe(Schema.pattern(/time/)) })).properties.v, {
      type: "string",
      pattern: "time",
      description: "a string matching the pattern time"
    })
  })

  it("a union inside a nullable or a union is one anyOf, unless it carries its own description", () => {
    const plain = sent(Schema.Struct({ v: Schema.NullOr(Schema.Union(Schema.Number, Schema.Boolean)) })).properties.v
    assert.deepStrictEqual(plain, { anyOf: [{ type: "number" }, { type: "boolean" }, { type: "null" }] })
    const described = Schema.Union(Schema.Number, Schema.Boolean).annotations({ description: "a count or a flag" })
    assert.deepStrictEqual(sent(Schema.Struct({ v: Schema.NullOr(described) })).properties.v, {
      anyOf: [{ anyOf: [{ type: "number" }, { type: "boolean" }], description: "a count or a flag" }, { type: "null" }]
    })
  })

  it("a definition whose identifier is empty is named Def", () => {
    interface Tree {
      readonly children: ReadonlyArray<Tree>
    }
    const Tree: Schema.Schema<Tree> = Schema.Struct({
      children: Schema.Array(Schema.suspend((): Schema.Schema<Tree> => Tree))
    }).annotations({ identifier: "" })
    assert.deepStrictEqual(Object.keys(sent(Schema.Struct({ t: Schema.suspend(() => Tree) })).$defs), ["Def"])
  })

  it("limits given to one conversion are not taken from, or left in, the cache", () => {
    const schema = Schema.Struct({ a: Schema.Struct({ b: Schema.String }) })
    assert.isTrue(Either.isRight(StrictSchema.makeEither(schema)))
    const tight = StrictSchema.makeEither(schema, { limits: { maxDepth: 1 } })
    assert.isTrue(Either.isLeft(tight) && /nesting depth 2 exceeds the limit of 1/.test(tight.left.reason))
  })
})
