/**
 * What strict mode cannot express: `StrictSchema.make` refuses it where the schema is defined, with an error that
 * names the field (`orders[].sku`, or `(root)`) and says what to use instead. Each refusal here is one a user can
 * write by accident; the message is what they read.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import * as StrictSchema from "../src/StrictSchema.js"

const refusal = <A, I>(schema: Schema.Schema<A, I, never>, options?: StrictSchema.Options) => {
  const result = StrictSchema.makeEither(schema, options)
  if (Either.isRight(result)) assert.fail(`expected a refusal, got ${JSON.stringify(result.right.jsonSchema)}`)
  return result.left
}

/** What the user reads: where, and why. */
const brief = (error: StrictSchema.UnsupportedSchema) => ({ path: error.path, reason: error.reason })

/** The refusal of `field` inside an order line, as `{ orders: [{ field }] }`. */
const inOrders = <A, I>(field: Schema.Schema<A, I, never>) =>
  refusal(Schema.Struct({ orders: Schema.Array(Schema.Struct({ field })) }))

describe("StrictSchema refuses types with no JSON form, naming the field and the way out", () => {
  it("a declared type (DateFromSelf) points to its encoded schema", () => {
    const error = inOrders(Schema.DateFromSelf)
    assert.strictEqual(error._tag, "UnsupportedSchema")
    assert.strictEqual(error.path, "orders[].field")
    assert.strictEqual(
      error.reason,
      "DateFromSelf is a declared type with no JSON form: use a schema with a JSON encoding " +
        "(e.g. Schema.Date rather than Schema.DateFromSelf, a Schema.Class rather than a Schema.declare)"
    )
    assert.strictEqual(
      error.message,
      `Cannot express the schema in strict JSON Schema at orders[].field: ${error.reason}`
    )
  })

  it("undefined and void outside an optional field point to optional or NullOr", () => {
    const reason = "undefined has no JSON form: make the field optional or use Schema.NullOr"
    assert.deepStrictEqual(brief(inOrders(Schema.Undefined)), { path: "orders[].field", reason })
    assert.deepStrictEqual(brief(inOrders(Schema.Void)), { path: "orders[].field", reason })
    // The same type made optional converts: absent is what the model's null decodes to.
    const optional = StrictSchema.make(Schema.Struct({ note: Schema.optional(Schema.String) }))
    assert.deepStrictEqual(optional.decodeJson(`{"note":null}`), Either.right({}))
  })

  it("never, alone or as an enum with no members", () => {
    assert.deepStrictEqual(brief(inOrders(Schema.Never)), {
      path: "orders[].field",
      reason: "never cannot be expressed"
    })
    assert.deepStrictEqual(brief(inOrders(Schema.Enums({}))), {
      path: "orders[].field",
      reason: "a union with no members (never) cannot be expressed"
    })
  })

  it("unknown, any and object ask for a schema", () => {
    for (
      const [schema, name] of [[Schema.Unknown, "unknown"], [Schema.Any, "any"], [Schema.Object, "object"]] as const
    ) {
      assert.deepStrictEqual(brief(inOrders(schema)), {
        path: "orders[].field",
        reason: `${name} cannot be expressed in strict mode: give the value a schema`
      })
    }
  })

  it("symbols, unique symbols and symbol keys", () => {
    const reason = "symbols have no JSON form"
    assert.deepStrictEqual(brief(inOrders(Schema.SymbolFromSelf)), { path: "orders[].field", reason })
    assert.deepStrictEqual(brief(inOrders(Schema.UniqueSymbolFromSelf(Symbol.for("keel/test")))), {
      path: "orders[].field",
      reason
    })
    const key = Symbol.for("keel/key")
    assert.deepStrictEqual(brief(refusal(Schema.Struct({ a: Schema.Struct({ [key]: Schema.String }) }))), {
      path: "a.Symbol(keel/key)",
      reason: "only string keys can be expressed"
    })
  })

  it("bigints, as a type and as a literal, point to Schema.BigInt", () => {
    assert.deepStrictEqual(brief(inOrders(Schema.BigIntFromSelf)), {
      path: "orders[].field",
      reason: "bigint has no JSON form: use Schema.BigInt (sent as a string)"
    })
    assert.deepStrictEqual(brief(inOrders(Schema.Literal(1n))), {
      path: "orders[].field",
      reason: "a bigint literal has no JSON form"
    })
    // Inside a union of literals too, where the literals become one enum.
    assert.strictEqual(inOrders(Schema.Literal("a", 1n)).reason, "a bigint literal has no JSON form")
    // Schema.BigInt is a string on the wire.
    const strict = StrictSchema.make(Schema.Struct({ n: Schema.BigInt }))
    assert.strictEqual((strict.jsonSchema.properties as any).n.type, "string")
    assert.deepStrictEqual(
      strict.decodeJson(`{"n":"12345678901234567890"}`),
      Either.right({ n: 12345678901234567890n })
    )
  })

  it("a non-finite number literal", () => {
    assert.deepStrictEqual(brief(inOrders(Schema.Literal(Infinity))), {
      path: "orders[].field",
      reason: "the literal Infinity has no JSON form"
    })
    assert.strictEqual(inOrders(Schema.Literal(1, NaN)).reason, "the literal NaN has no JSON form")
  })
})

describe("StrictSchema refuses shapes strict mode cannot express", () => {
  it("tuples: fixed elements, elements after the rest, typed or optional leading elements", () => {
    assert.deepStrictEqual(brief(inOrders(Schema.Tuple(Schema.Number, Schema.Number))), {
      path: "orders[].field",
      reason: "tuples cannot be expressed in strict mode: use a struct or an array"
    })
    assert.deepStrictEqual(brief(inOrders(Schema.Tuple([], Schema.String, Schema.Number))), {
      path: "orders[].field",
      reason: "a tuple with elements after its rest cannot be expressed in strict mode"
    })
    const leading = "a tuple with typed leading elements cannot be expressed in strict mode"
    assert.deepStrictEqual(brief(inOrders(Schema.Tuple([Schema.String], Schema.Number))), {
      path: "orders[].field",
      reason: leading
    })
    // An optional leading element of the rest's own schema is not a minimum count either.
    assert.deepStrictEqual(brief(inOrders(Schema.Tuple([Schema.optionalElement(Schema.Number)], Schema.Number))), {
      path: "orders[].field",
      reason: leading
    })
    // Leading elements of the rest's schema are a minimum count (NonEmptyArray, and two of them).
    const out = StrictSchema.make(Schema.Struct({ pair: Schema.Tuple([Schema.Number, Schema.Number], Schema.Number) }))
    assert.deepStrictEqual((out.jsonSchema.properties as any).pair, {
      type: "array",
      items: { type: "number" },
      minItems: 2
    })
    assert.isTrue(Either.isLeft(out.decodeJson(`{"pair":[1]}`)))
    assert.deepStrictEqual(out.decodeJson(`{"pair":[1,2,3]}`), Either.right({ pair: [1, 2, 3] }))
  })

  it("a non-object root: a union, an array, a string, a recursive reference to a non-object", () => {
    const union = "the root must be an object, and a union at the root cannot be expressed: wrap it in a struct field"
    const plain = "the root must be an object: wrap the value in a struct field"
    assert.deepStrictEqual(brief(refusal(Schema.Union(Schema.String, Schema.Number))), {
      path: "(root)",
      reason: union
    })
    assert.deepStrictEqual(brief(refusal(Schema.Array(Schema.String))), { path: "(root)", reason: plain })
    assert.deepStrictEqual(brief(refusal(Schema.String)), { path: "(root)", reason: plain })
    assert.deepStrictEqual(brief(refusal(Schema.suspend(() => Schema.String))), { path: "(root)", reason: plain })
  })
})

describe("StrictSchema names where a size limit is broken, as a path in the value", () => {
  const two = { limits: { maxEnumValues: 2 } }

  it("inside arrays, nested arrays, optional fields and unions", () => {
    const three = Schema.Literal("a", "b", "c")
    assert.strictEqual(refusal(Schema.Struct({ tags: Schema.Array(three) }), two).path, "tags[]")
    assert.strictEqual(refusal(Schema.Struct({ grid: Schema.Array(Schema.Array(three)) }), two).path, "grid[][]")
    assert.strictEqual(refusal(Schema.Struct({ a: Schema.Struct({ b: Schema.optional(three) }) }), two).path, "a.b")
    const union = Schema.Struct({
      shape: Schema.Union(Schema.Struct({ r: Schema.Number }), Schema.Struct({ kind: three }))
    })
    assert.deepStrictEqual(brief(refusal(union, two)), {
      path: "shape.kind",
      reason: "3 enum values in all exceed the limit of 2"
    })
  })

  it("inside a recursive definition, named by the definition", () => {
    interface Tree {
      readonly kind: "a" | "b" | "c"
      readonly children: ReadonlyArray<Tree>
    }
    const Tree = Schema.Struct({
      kind: Schema.Literal("a", "b", "c"),
      children: Schema.Array(Schema.suspend((): Schema.Schema<Tree> => Tree))
    }).annotations({ identifier: "Tree" })
    // Reached only through the reference, so the definition is where the limit is broken.
    const tree = Schema.Struct({ tree: Schema.suspend((): Schema.Schema<Tree> => Tree) })
    assert.strictEqual(refusal(tree, two).path, "Tree.kind")
    // Written out in place first, the same tree is named by its field.
    assert.strictEqual(refusal(Schema.Struct({ tree: Tree }), two).path, "tree.kind")
  })

  it("characters in all are the whole schema's, so the root is named", () => {
    assert.deepStrictEqual(
      brief(refusal(Schema.Struct({ abcdef: Schema.Literal("xyz") }), { limits: { maxStringLength: 8 } })),
      {
        path: "(root)",
        reason: "property names, definition names and enum values total 9 characters, over the limit of 8"
      }
    )
  })
})

describe("StrictSchema.make", () => {
  it("throws the UnsupportedSchema itself, for the caller to catch by its tag", () => {
    const thrown = (() => {
      try {
        StrictSchema.make(Schema.Struct({ when: Schema.DateFromSelf }))
      } catch (error) {
        return error
      }
    })()
    assert.instanceOf(thrown, StrictSchema.UnsupportedSchema)
    assert.strictEqual((thrown as StrictSchema.UnsupportedSchema).path, "when")
  })

  it("lets an error that is not a refusal through as it was", () => {
    const broken = Schema.Struct({
      a: Schema.suspend((): Schema.Schema<string> => {
        throw new Error("not ready")
      })
    })
    assert.throws(() => StrictSchema.makeEither(broken), /^not ready$/)
  })

  it("says what to use instead of a record", () => {
    assert.strictEqual(
      refusal(Schema.Struct({ meta: Schema.Record({ key: Schema.String, value: Schema.Number }) })).reason,
      "a record or index signature (free keys) cannot be expressed in strict mode: every key must be listed; " +
        "use a struct, or an array of key/value structs"
    )
  })
})
