/**
 * Refinements stacked on one value (two bounds, two patterns, an integer check after a range) and refinements
 * inside arrays, unions and optional fields: what reaches the JSON Schema the model is held to, and what is left to
 * the decoder. A value the sent schema admits but the decoder refuses costs a repair round; a value the sent schema
 * refuses but the decoder would accept is one the model can never write. So for refinements strict mode can carry,
 * ajv (an independent validator) over the sent schema and the decoder must agree, value by value.
 */
import { assert, describe, it } from "@effect/vitest"
import addFormats from "ajv-formats"
import Ajv2020 from "ajv/dist/2020.js"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as StrictSchema from "../src/StrictSchema.js"
import { checkStrict } from "./utils/strictChecker.js"

const ajv = new Ajv2020.default({ strict: false })
addFormats.default(ajv)

/** The sent JSON Schema of `{ v: schema }`'s field, after holding the whole schema to the strict rules. */
const field = (schema: Schema.Schema<any, any>): Record<string, unknown> => {
  const strict = StrictSchema.make(Schema.Struct({ v: schema }))
  assert.deepStrictEqual(checkStrict(strict.jsonSchema), [])
  return (strict.jsonSchema.properties as any).v
}

/** For each value: whether the sent schema admits it, and whether the decoder accepts it; they must agree. */
const agree = (schema: Schema.Schema<any, any>, values: ReadonlyArray<unknown>, expected: ReadonlyArray<boolean>) => {
  const strict = StrictSchema.make(Schema.Struct({ v: schema }))
  const validate = ajv.compile(strict.jsonSchema)
  const sent = values.map((v) => validate({ v }))
  const decoded = values.map((v) => Either.isRight(strict.decodeUnknown({ v })))
  assert.deepStrictEqual(sent, expected, "what the sent schema admits")
  assert.deepStrictEqual(decoded, expected, "what the decoder accepts")
}

/** A refinement that checks nothing and carries a hand-written JSON Schema annotation, as a user writes one. */
const annotated = (jsonSchema: Record<string, unknown>) => Schema.filter<Schema.Schema<any>>(() => true, { jsonSchema })

describe("stacked bounds on a number: the tighter one is sent, in either order", () => {
  it("two lower bounds", () => {
    for (
      const schema of [
        Schema.Number.pipe(Schema.greaterThan(0), Schema.greaterThan(5)),
        Schema.Number.pipe(Schema.greaterThan(5), Schema.greaterThan(0))
      ]
    ) {
      assert.include(field(schema), { type: "number", exclusiveMinimum: 5 })
      assert.notProperty(field(schema), "minimum")
      agree(schema, [0, 3, 5, 5.5], [false, false, false, true])
    }
    for (
      const schema of [
        Schema.Number.pipe(Schema.greaterThanOrEqualTo(1), Schema.between(0, 10)),
        Schema.Number.pipe(Schema.between(0, 10), Schema.greaterThanOrEqualTo(1))
      ]
    ) {
      assert.include(field(schema), { type: "number", minimum: 1, maximum: 10 })
      agree(schema, [0, 1, 10, 11], [false, true, true, false])
    }
  })

  it("two upper bounds", () => {
    for (
      const schema of [
        Schema.Number.pipe(Schema.lessThan(10), Schema.lessThan(3)),
        Schema.Number.pipe(Schema.lessThan(3), Schema.lessThan(10))
      ]
    ) {
      assert.include(field(schema), { type: "number", exclusiveMaximum: 3 })
      agree(schema, [2.5, 3, 9], [true, false, false])
    }
    for (
      const schema of [
        Schema.Number.pipe(Schema.between(0, 10), Schema.lessThanOrEqualTo(5)),
        Schema.Number.pipe(Schema.lessThanOrEqualTo(5), Schema.between(0, 10))
      ]
    ) {
      assert.include(field(schema), { type: "number", minimum: 0, maximum: 5 })
      agree(schema, [-1, 0, 5, 6], [false, true, true, false])
    }
  })

  it("an integer check before or after a range keeps both", () => {
    for (
      const schema of [
        Schema.Number.pipe(Schema.int(), Schema.between(1, 10)),
        Schema.Number.pipe(Schema.between(1, 10), Schema.int())
      ]
    ) {
      assert.include(field(schema), { type: "integer", minimum: 1, maximum: 10 })
      agree(schema, [0, 1, 1.5, 10, 11], [false, true, false, true, false])
    }
  })

  it("the first multipleOf is sent; the second is checked when decoding", () => {
    const schema = Schema.Number.pipe(Schema.multipleOf(2), Schema.multipleOf(3))
    assert.include(field(schema), { type: "number", multipleOf: 2 })
    const strict = StrictSchema.make(Schema.Struct({ v: schema }))
    assert.isTrue(Either.isLeft(strict.decodeJson(`{"v":4}`)))
    assert.deepStrictEqual(strict.decodeJson(`{"v":6}`), Either.right({ v: 6 }))
  })

  it("a hand-written annotation that is not a number keyword is not sent", () => {
    // A type other than integer, and bounds given as strings, would make the schema refuse numbers or be invalid.
    assert.deepStrictEqual(field(Schema.Number.pipe(annotated({ type: "string" }))), { type: "number" })
    assert.deepStrictEqual(field(Schema.Number.pipe(annotated({ minimum: "3", multipleOf: "2" }))), { type: "number" })
    assert.deepStrictEqual(field(Schema.Int.pipe(annotated({ maximum: "9" }))).type, "integer")
  })
})

describe("stacked refinements on a string", () => {
  it("the first pattern is sent; both are checked when decoding", () => {
    const schema = Schema.String.pipe(Schema.pattern(/^[a-z]+$/), Schema.pattern(/^.{2,4}$/))
    assert.include(field(schema), { type: "string", pattern: "^[a-z]+$" })
    const strict = StrictSchema.make(Schema.Struct({ v: schema }))
    assert.deepStrictEqual(strict.decodeJson(`{"v":"abc"}`), Either.right({ v: "abc" }))
    assert.isTrue(Either.isLeft(strict.decodeJson(`{"v":"abcdef"}`)))
    assert.isTrue(Either.isLeft(strict.decodeJson(`{"v":"AB"}`)))
  })

  it("a pattern with a flag is left to decoding, and a plain pattern stacked on it is sent", () => {
    const schema = Schema.String.pipe(Schema.pattern(/^[a-z]+$/i), Schema.pattern(/^.{2,4}$/))
    assert.include(field(schema), { type: "string", pattern: "^.{2,4}$" })
    const strict = StrictSchema.make(Schema.Struct({ v: schema }))
    assert.deepStrictEqual(strict.decodeJson(`{"v":"AbC"}`), Either.right({ v: "AbC" }))
    assert.isTrue(Either.isLeft(strict.decodeJson(`{"v":"a1"}`)), "the flagged pattern, checked when decoding")
  })

  it("the first supported format is sent; an unsupported one or a non-string is not", () => {
    assert.include(field(Schema.UUID.pipe(annotated({ format: "email" }))), { format: "uuid" })
    assert.include(field(Schema.String.pipe(annotated({ format: "email" }), annotated({ format: "date" }))), {
      format: "email"
    })
    assert.notProperty(field(Schema.String.pipe(annotated({ format: "uri" }))), "format")
    assert.notProperty(field(Schema.String.pipe(annotated({ format: 5, pattern: 5 }))), "format")
    assert.notProperty(field(Schema.String.pipe(annotated({ pattern: 5 }))), "pattern")
    // Number keywords on a string are not sent either.
    assert.deepStrictEqual(Object.keys(field(Schema.String.pipe(annotated({ minimum: 1 })))), ["type"])
  })

  it("refinements of a transformed value are checked when decoding, not sent as the encoded string's", () => {
    // Trim's decoded value starts with "a"; the string the model writes may start with a space.
    const schema = Schema.Trim.pipe(Schema.startsWith("a"), Schema.endsWith("z"))
    assert.notProperty(field(schema), "pattern")
    const strict = StrictSchema.make(Schema.Struct({ v: schema }))
    assert.deepStrictEqual(strict.decodeJson(`{"v":"  abz "}`), Either.right({ v: "abz" }))
    assert.isTrue(Either.isLeft(strict.decodeJson(`{"v":"ab"}`)))
  })
})

describe("stacked refinements on an array: the tighter count is sent, in either order", () => {
  it("two minimums, two maximums, a non-empty array with a larger minimum, an exact count", () => {
    const items = Schema.Array(Schema.Boolean)
    for (
      const schema of [
        items.pipe(Schema.minItems(2), Schema.minItems(1)),
        items.pipe(Schema.minItems(1), Schema.minItems(2))
      ]
    ) {
      assert.include(field(schema), { minItems: 2 })
      agree(schema, [[true], [true, false]], [false, true])
    }
    for (
      const schema of [
        items.pipe(Schema.maxItems(5), Schema.maxItems(2)),
        items.pipe(Schema.maxItems(2), Schema.maxItems(5))
      ]
    ) {
      assert.include(field(schema), { maxItems: 2 })
      agree(schema, [[true, true], [true, true, true]], [true, false])
    }
    const nonEmpty = Schema.NonEmptyArray(Schema.Boolean).pipe(Schema.minItems(3))
    assert.include(field(nonEmpty), { minItems: 3 })
    agree(nonEmpty, [[true, true], [true, true, true]], [false, true])
    const pair = items.pipe(Schema.itemsCount(2))
    assert.include(field(pair), { minItems: 2, maxItems: 2 })
    agree(pair, [[true], [true, true], [true, true, true]], [false, true, false])
  })

  it("a count given as a string is not sent", () => {
    assert.deepStrictEqual(field(Schema.Array(Schema.Boolean).pipe(annotated({ minItems: "2", maxItems: "3" }))), {
      type: "array",
      items: { type: "boolean" }
    })
  })
})

describe("refinements inside arrays, unions and optional fields reach the sent schema", () => {
  it("in an optional field, a nullable one, an array's items and a union's members", () => {
    const range = Schema.Int.pipe(Schema.between(1, 5))
    assert.deepStrictEqual(field(Schema.optional(range) as any), field(Schema.NullOr(range)))
    assert.include((field(Schema.NullOr(range)).anyOf as any)[0], { type: "integer", minimum: 1, maximum: 5 })
    const code = Schema.String.pipe(Schema.pattern(/^[A-Z]{3}$/))
    assert.include(field(Schema.Array(code)).items as any, { type: "string", pattern: "^[A-Z]{3}$" })
    const either = Schema.Union(range, code)
    agree(either, [3, 6, 2.5, "ABC", "AB"], [true, false, false, true, false])
    agree(Schema.Array(Schema.NullOr(range)), [[1, null, 5], [1, 0]], [true, false])
  })

  it("a refinement of a union or a struct is checked when decoding only, with its description sent", () => {
    const either = Schema.Union(Schema.Number, Schema.String).pipe(
      Schema.filter((u) => u !== 0 && u !== "", { description: "not zero or empty" })
    )
    assert.deepStrictEqual(field(either), {
      anyOf: [{ type: "number" }, { type: "string" }],
      description: "not zero or empty"
    })
    const strict = StrictSchema.make(Schema.Struct({ v: either }))
    assert.isTrue(Either.isLeft(strict.decodeJson(`{"v":0}`)))
    assert.deepStrictEqual(strict.decodeJson(`{"v":"x"}`), Either.right({ v: "x" }))
  })
})
