/**
 * The wire form: what the model writes under the strict schema (every optional field present, `null` for
 * absent) decodes to the Schema's own type, and a value encodes back to what the model would have written.
 * Optional fields are rewritten wherever they sit: in arrays, non-empty arrays, unions, refined structs, classes
 * and recursive definitions.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as StrictSchema from "../src/StrictSchema.js"

const Line = Schema.Struct({ sku: Schema.String, note: Schema.optional(Schema.String) })

describe("StrictSchema's decoder", () => {
  it("turns null back into an absent field in a struct of optional fields only", () => {
    const strict = StrictSchema.make(
      Schema.Struct({ a: Schema.optional(Schema.String), b: Schema.optional(Schema.Number) })
    )
    const decoded = Either.getOrThrow(strict.decodeJson(`{"a":null,"b":2}`))
    assert.deepStrictEqual(decoded, { b: 2 })
    assert.isFalse("a" in decoded)
  })

  it("rewrites optional fields inside arrays, non-empty arrays, leading elements and nullable members", () => {
    const strict = StrictSchema.make(Schema.Struct({
      lines: Schema.Array(Line),
      first: Schema.NonEmptyArray(Line),
      maybe: Schema.NullOr(Line)
    }))
    const text = JSON.stringify({
      lines: [{ sku: "a", note: null }],
      first: [{ sku: "b", note: null }, { sku: "c", note: "x" }],
      maybe: { sku: "d", note: null }
    })
    assert.deepStrictEqual(
      strict.decodeJson(text),
      Either.right({ lines: [{ sku: "a" }], first: [{ sku: "b" }, { sku: "c", note: "x" }], maybe: { sku: "d" } })
    )
    // And back: absent is written as null, as the model must write it.
    assert.deepStrictEqual(
      strict.encode({ lines: [{ sku: "a" }], first: [{ sku: "b" }, { sku: "c", note: "x" }], maybe: { sku: "d" } }),
      Either.right(JSON.parse(text))
    )
  })

  it("keeps a refinement of a struct with optional fields, checked on the decoded value", () => {
    const Range = Schema.Struct({ from: Schema.Number, to: Schema.optional(Schema.Number) }).pipe(
      Schema.filter((r) => r.to === undefined || r.to >= r.from, { message: () => "to before from" })
    )
    const strict = StrictSchema.make(Schema.Struct({ range: Range }))
    assert.deepStrictEqual(strict.decodeJson(`{"range":{"from":1,"to":null}}`), Either.right({ range: { from: 1 } }))
    assert.deepStrictEqual(
      strict.decodeJson(`{"range":{"from":2,"to":1}}`),
      Either.left({ path: "range", reason: "to before from" })
    )
  })

  it("sends and decodes a field renamed on the wire (fromKey), described or not", () => {
    const strict = StrictSchema.make(Schema.Struct({
      id: Schema.propertySignature(Schema.String).pipe(Schema.fromKey("order_id")).annotations({ description: "ours" }),
      note: Schema.optionalWith(Schema.String, { default: () => "" })
    }))
    assert.deepStrictEqual(strict.jsonSchema.required, ["order_id", "note"])
    assert.deepStrictEqual(strict.decodeJson(`{"order_id":"a1","note":null}`), Either.right({ id: "a1", note: "" }))
  })

  it("refuses a property the schema does not have, naming it", () => {
    const strict = StrictSchema.make(Line)
    const problem = Either.getLeft(strict.decodeJson(`{"sku":"a","note":null,"colour":"red"}`))
    assert.strictEqual(problem._tag === "Some" && problem.value.path, "colour")
  })

  it("reports text that is not JSON at the root", () => {
    const problem = Either.getLeft(StrictSchema.make(Line).decodeJson(`{"sku":`))
    assert.isTrue(problem._tag === "Some")
    assert.strictEqual(problem._tag === "Some" && problem.value.path, "")
    assert.match(problem._tag === "Some" ? problem.value.reason : "", /^not valid JSON: /)
  })

  it("decodes recursive definitions with optional fields at every level", () => {
    interface Chain {
      readonly value: number
      readonly next?: Chain | undefined
    }
    const Chain = Schema.Struct({
      value: Schema.Number,
      next: Schema.optional(Schema.suspend((): Schema.Schema<Chain> => Chain))
    }).annotations({ identifier: "Chain" })
    const strict = StrictSchema.make(Schema.Struct({ chain: Chain }))
    const text = `{"chain":{"value":1,"next":{"value":2,"next":{"value":3,"next":null}}}}`
    const chain = { value: 1, next: { value: 2, next: { value: 3 } } }
    assert.deepStrictEqual(strict.decodeJson(text), Either.right({ chain }))
    assert.deepStrictEqual(strict.encode({ chain }), Either.right(JSON.parse(text)))
  })
})

describe("StrictSchema's encoder", () => {
  it("writes null for an optional field that is absent or undefined", () => {
    const strict = StrictSchema.make(Schema.Struct({ a: Schema.optional(Schema.String), b: Schema.String }))
    assert.deepStrictEqual(strict.encode({ b: "x" }), Either.right({ a: null, b: "x" }))
    assert.deepStrictEqual(strict.encode({ a: undefined, b: "x" }), Either.right({ a: null, b: "x" }))
    assert.deepStrictEqual(strict.encode({ a: "y", b: "x" }), Either.right({ a: "y", b: "x" }))
  })

  it("picks the member of a union by its optional fields' types", () => {
    const ByNumber = Schema.Struct({ n: Schema.optional(Schema.Number), tag: Schema.Literal("n") })
    const ByText = Schema.Struct({ n: Schema.optional(Schema.String), tag: Schema.Literal("s") })
    const Untagged = Schema.Union(
      Schema.Struct({ n: Schema.optional(Schema.Number) }),
      Schema.Struct({ n: Schema.optional(Schema.String) })
    )
    const strict = StrictSchema.make(Schema.Struct({ tagged: Schema.Union(ByNumber, ByText), untagged: Untagged }))
    const value = { tagged: { n: "x", tag: "s" as const }, untagged: { n: "y" } }
    assert.deepStrictEqual(strict.encode(value), Either.right({ tagged: { n: "x", tag: "s" }, untagged: { n: "y" } }))
    assert.deepStrictEqual(strict.decodeJson(JSON.stringify(value)), Either.right(value))
  })

  it("refuses a value that is not of the schema, naming the field", () => {
    const strict = StrictSchema.make(Schema.Struct({ lines: Schema.Array(Line) }))
    const problem = Either.getLeft(strict.encode({ lines: [{ sku: 1 as unknown as string }] }))
    assert.strictEqual(problem._tag === "Some" && problem.value.path, "lines.0.sku")
  })
})
