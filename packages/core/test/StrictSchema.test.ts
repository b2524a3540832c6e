import { assert, describe, it } from "@effect/vitest"
import addFormats from "ajv-formats"
import Ajv2020 from "ajv/dist/2020.js"
import * as Arbitrary from "effect/Arbitrary"
import * as Either from "effect/Either"
import * as FastCheck from "effect/FastCheck"
import * as Schema from "effect/Schema"
import * as StrictSchema from "../src/StrictSchema.js"
import { checkStrict, documentedLimits } from "./utils/strictChecker.js"

const json = <A, I>(schema: Schema.Schema<A, I, never>) => StrictSchema.make(schema).jsonSchema as any

const unsupported = <A, I>(schema: Schema.Schema<A, I, never>, options?: StrictSchema.Options) => {
  const result = StrictSchema.makeEither(schema, options)
  assert.isTrue(Either.isLeft(result), "expected the schema to be rejected")
  return (result as Either.Left<StrictSchema.UnsupportedSchema, unknown>).left
}

describe("StrictSchema.make", () => {
  it("sends optional fields as required and nullable, and closes every object", () => {
    const schema = Schema.Struct({
      title: Schema.String,
      salary: Schema.optional(Schema.Int.pipe(Schema.between(0, 1_000_000))),
      remote: Schema.optionalWith(Schema.Boolean, { default: () => false }),
      tags: Schema.Array(
        Schema.Struct({ label: Schema.String, weight: Schema.optionalWith(Schema.Number, { exact: true }) })
      )
    })
    const out = json(schema)
    assert.deepStrictEqual(out.required, ["title", "salary", "remote", "tags"])
    assert.strictEqual(out.additionalProperties, false)
    assert.deepStrictEqual(out.properties.salary.anyOf[1], { type: "null" })
    assert.include(out.properties.salary.anyOf[0], { type: "integer", minimum: 0, maximum: 1_000_000 })
    assert.deepStrictEqual(out.properties.remote, { anyOf: [{ type: "boolean" }, { type: "null" }] })
    const item = out.properties.tags.items
    assert.deepStrictEqual(item.required, ["label", "weight"])
    assert.strictEqual(item.additionalProperties, false)
    assert.deepStrictEqual(checkStrict(out), [])
  })

  it("decodes null for an optional field back to absent, and applies defaults", () => {
    const strict = StrictSchema.make(Schema.Struct({
      a: Schema.optional(Schema.String),
      b: Schema.optionalWith(Schema.Number, { default: () => 7 }),
      c: Schema.NullOr(Schema.String)
    }))
    const decoded = strict.decodeJson(JSON.stringify({ a: null, b: null, c: null }))
    assert.deepStrictEqual(decoded, Either.right({ b: 7, c: null }))
    assert.isFalse("a" in Either.getOrThrow(decoded))
    assert.deepStrictEqual(strict.encode({ b: 1, c: "x" }), Either.right({ a: null, b: 1, c: "x" }))
  })

  it("keeps the supported keywords and leaves the rest to decoding", () => {
    const out = json(Schema.Struct({
      id: Schema.UUID,
      code: Schema.String.pipe(Schema.pattern(/^[A-Z]{3}$/), Schema.maxLength(3)),
      name: Schema.NonEmptyString,
      score: Schema.Number.pipe(Schema.greaterThan(0), Schema.lessThanOrEqualTo(10), Schema.multipleOf(0.5)),
      items: Schema.NonEmptyArray(Schema.String).pipe(Schema.maxItems(5)),
      even: Schema.Int.pipe(Schema.filter((n) => n % 2 === 0))
    }))
    assert.include(out.properties.id, { type: "string", format: "uuid" })
    assert.include(out.properties.code, { type: "string", pattern: "^[A-Z]{3}$" })
    assert.notProperty(out.properties.code, "maxLength")
    assert.notProperty(out.properties.name, "minLength")
    assert.include(out.properties.score, { type: "number", exclusiveMinimum: 0, maximum: 10, multipleOf: 0.5 })
    assert.include(out.properties.items, { type: "array", minItems: 1, maxItems: 5 })
    assert.include(out.properties.even, { type: "integer" })
    assert.deepStrictEqual(checkStrict(out), [])
    const strict = StrictSchema.make(
      Schema.Struct({ name: Schema.NonEmptyString, even: Schema.Int.pipe(Schema.filter((n) => n % 2 === 0)) })
    )
    assert.deepStrictEqual(
      Either.getLeft(strict.decodeJson(`{"name":"","even":2}`)).pipe((o) => o._tag === "Some" && o.value.path),
      "name"
    )
    assert.deepStrictEqual(
      Either.getLeft(strict.decodeJson(`{"name":"a","even":3}`)).pipe((o) => o._tag === "Some" && o.value.path),
      "even"
    )
  })

  it("leaves a pattern with a flag JSON Schema cannot carry to decoding", () => {
    const strict = StrictSchema.make(Schema.Struct({ code: Schema.String.pipe(Schema.pattern(/^[a-z]+$/i)) }))
    assert.deepStrictEqual((strict.jsonSchema.properties as any).code.type, "string")
    assert.notProperty((strict.jsonSchema.properties as any).code, "pattern")
    assert.isTrue(Either.isRight(strict.decodeJson(`{"code":"AbC"}`)))
    assert.isTrue(Either.isLeft(strict.decodeJson(`{"code":"a1"}`)))
  })

  it("groups literals into enums and unions into anyOf", () => {
    enum Level {
      Junior = "junior",
      Senior = "senior"
    }
    const out = json(Schema.Struct({
      kind: Schema.Literal("a", "b", "c"),
      level: Schema.Enums(Level),
      maybe: Schema.NullOr(Schema.Literal(1, 2)),
      shape: Schema.Union(
        Schema.TaggedStruct("Circle", { radius: Schema.Number }),
        Schema.TaggedStruct("Square", { side: Schema.Number })
      )
    }))
    assert.deepStrictEqual(out.properties.kind, { type: "string", enum: ["a", "b", "c"] })
    assert.deepStrictEqual(out.properties.level, { type: "string", enum: ["junior", "senior"] })
    assert.deepStrictEqual(out.properties.maybe, { anyOf: [{ type: "number", enum: [1, 2] }, { type: "null" }] })
    assert.strictEqual(out.properties.shape.anyOf.length, 2)
    assert.deepStrictEqual(out.properties.shape.anyOf[1].properties._tag, { type: "string", enum: ["Square"] })
    assert.deepStrictEqual(checkStrict(out), [])
  })

  it("sends recursion as $ref: '#' for the root and $defs for the rest", () => {
    interface Category {
      readonly name: string
      readonly children: ReadonlyArray<Category>
    }
    const Category = Schema.Struct({
      name: Schema.String,
      children: Schema.Array(Schema.suspend((): Schema.Schema<Category> => Category))
    }).annotations({ identifier: "Category" })
    assert.deepStrictEqual(json(Category).properties.children.items, { $ref: "#" })
    const out = json(Schema.Struct({ root: Category }))
    assert.deepStrictEqual(out.properties.root.properties.children.items, { $ref: "#/$defs/Category" })
    assert.deepStrictEqual(Object.keys(out.$defs), ["Category"])
    assert.deepStrictEqual(checkStrict(out), [])
    const strict = StrictSchema.make(Schema.Struct({ root: Category }))
    const value = { root: { name: "a", children: [{ name: "b", children: [] }] } }
    assert.deepStrictEqual(strict.decodeJson(JSON.stringify(value)), Either.right(value))
  })

  it("sends descriptions of fields and types, the model's only view of decode-only rules", () => {
    const out = json(Schema.Struct({
      title: Schema.String.annotations({ description: "the job title" }),
      salary: Schema.optionalWith(Schema.Number, { default: () => 0 }).annotations({ description: "yearly, in EUR" }),
      city: Schema.propertySignature(Schema.String).annotations({ description: "where the job is" }),
      code: Schema.String.pipe(Schema.maxLength(8))
    }))
    assert.strictEqual(out.properties.title.description, "the job title")
    assert.strictEqual(out.properties.salary.description, "yearly, in EUR")
    assert.strictEqual(out.properties.city.description, "where the job is")
    assert.match(out.properties.code.description, /at most 8/)
    assert.notProperty(json(Schema.Struct({ s: Schema.String })).properties.s, "description")
  })

  it("decodes classes, recursive ones included, to instances", () => {
    class Node extends Schema.Class<Node>("Node")({
      label: Schema.String,
      note: Schema.optional(Schema.String),
      children: Schema.Array(Schema.suspend((): Schema.Schema<Node, any> => Node))
    }) {}
    const strict = StrictSchema.make(Node)
    assert.deepStrictEqual(strict.jsonSchema.properties, {
      label: { type: "string" },
      note: { anyOf: [{ type: "string" }, { type: "null" }] },
      children: { type: "array", items: { $ref: "#" } }
    })
    const node = Either.getOrThrow(
      strict.decodeJson(`{"label":"a","note":null,"children":[{"label":"b","note":"x","children":[]}]}`)
    )
    assert.instanceOf(node, Node)
    assert.instanceOf(node.children[0], Node)
    assert.isFalse("note" in node)
    assert.strictEqual(node.children[0]!.note, "x")
  })

  it("sends the encoded side of transformations", () => {
    const out = json(Schema.Struct({ at: Schema.Date, n: Schema.NumberFromString, big: Schema.BigInt }))
    assert.strictEqual(out.properties.at.type, "string")
    assert.strictEqual(out.properties.n.type, "string")
    assert.strictEqual(out.properties.big.type, "string")
  })

  describe("rejects what strict mode cannot express, naming the path", () => {
    const Item = Schema.Struct({ sku: Schema.String })
    it("a union at the root", () => {
      const error = unsupported(Schema.Union(Item, Schema.Struct({ id: Schema.Number })))
      assert.strictEqual(error.path, "(root)")
      assert.match(error.message, /union at the root/)
    })
    it("an array at the root", () => {
      assert.match(unsupported(Schema.Array(Item)).reason, /root must be an object/)
    })
    it("a record with free keys", () => {
      const error = unsupported(Schema.Struct({
        orders: Schema.Array(Schema.Struct({ meta: Schema.Record({ key: Schema.String, value: Schema.String }) }))
      }))
      assert.strictEqual(error.path, "orders[].meta")
      assert.match(error.reason, /free keys/)
    })
    it("a struct with an index signature", () => {
      assert.strictEqual(
        unsupported(
          Schema.Struct({ a: Schema.Struct({ b: Schema.String }, { key: Schema.String, value: Schema.String }) })
        )
          .path,
        "a"
      )
    })
    it("tuples", () => {
      assert.strictEqual(unsupported(Schema.Struct({ p: Schema.Tuple(Schema.Number, Schema.Number) })).path, "p")
      assert.strictEqual(
        unsupported(Schema.Struct({ p: Schema.Tuple([Schema.String], Schema.Number) })).path,
        "p"
      )
    })
    it("unknown, declarations and undefined outside optional fields", () => {
      assert.strictEqual(unsupported(Schema.Struct({ x: Schema.Struct({ y: Schema.Unknown }) })).path, "x.y")
      assert.strictEqual(unsupported(Schema.Struct({ d: Schema.DateFromSelf })).path, "d")
      assert.strictEqual(unsupported(Schema.Struct({ u: Schema.UndefinedOr(Schema.String) })).path, "u")
    })
    it("nesting deeper than the limit", () => {
      let schema: Schema.Schema<any> = Schema.Struct({ leaf: Schema.String })
      for (let i = 0; i < 10; i++) schema = Schema.Struct({ [`l${i}`]: schema })
      const error = unsupported(schema)
      assert.match(error.reason, /nesting depth 11 exceeds the limit of 10/)
      assert.strictEqual(error.path, "l9.l8.l7.l6.l5.l4.l3.l2.l1.l0.leaf")
      assert.match(
        unsupported(Schema.Struct({ a: Schema.Struct({ b: Schema.Struct({ c: Schema.String }) }) }), {
          limits: { maxDepth: 2 }
        }).reason,
        /depth 3/
      )
    })
    it("too many enum values or properties in all", () => {
      const values = Array.from({ length: 1001 }, (_, i) => `v${i}`) as [string, ...Array<string>]
      const tooMany = unsupported(Schema.Struct({ e: Schema.Literal(...values) }))
      assert.match(tooMany.reason, /1001 enum values/)
      assert.strictEqual(tooMany.path, "e", "names the enum where the total went over")
      const fields = Object.fromEntries(Array.from({ length: 5001 }, (_, i) => [`p${i}`, Schema.Boolean]))
      assert.match(unsupported(Schema.Struct(fields)).reason, /5001 object properties/)
    })
    it("a string enum of more than 250 values over 15,000 characters; exactly at either bound it converts", () => {
      // 251 values of 60 characters: 15,060 characters.
      const value = (i: number, length: number) => `v${i}`.padEnd(length, "x")
      const enumOf = (count: number, length: number) =>
        Schema.Struct({ size: Schema.Literal(...Array.from({ length: count }, (_, i) => value(i, length))) })
      const error = unsupported(enumOf(251, 60))
      assert.strictEqual(error.path, "size")
      assert.match(error.reason, /an enum of 251 strings totals 15060 characters, over the limit of 15000/)
      // 250 values of any length (up to the 120,000 total), and 251 values totalling exactly 15,000.
      assert.isTrue(Either.isRight(StrictSchema.makeEither(enumOf(250, 60))))
      const exact = Array.from({ length: 251 }, (_, i) => value(i, i === 0 ? 15_000 - 250 * 59 : 59))
      assert.strictEqual(exact.join("").length, 15_000)
      assert.isTrue(Either.isRight(StrictSchema.makeEither(Schema.Struct({ size: Schema.Literal(...exact) }))))
    })
    it("more than 120,000 characters of property names and enum values in all", () => {
      // 1,000 properties with names of 121 characters: 121,000 characters, within 5,000 properties.
      const fields = (length: number) =>
        Object.fromEntries(Array.from({ length: 1_000 }, (_, i) => [`p${i}`.padEnd(length, "_"), Schema.Boolean]))
      const error = unsupported(Schema.Struct(fields(121)))
      assert.match(error.reason, /total 121000 characters, over the limit of 120000/)
      assert.isTrue(Either.isRight(StrictSchema.makeEither(Schema.Struct(fields(120)))))
      // Enum values count too: 120,000 characters of names plus a one-character enum value is over.
      const withEnum = { ...fields(120), e: Schema.Literal("a") }
      assert.match(unsupported(Schema.Struct(withEnum)).reason, /total 120002 characters/)
    })
  })

  it("converts once per schema", () => {
    const schema = Schema.Struct({ a: Schema.String })
    assert.strictEqual(StrictSchema.make(schema), StrictSchema.make(schema))
  })
})

// ---------------------------------------------------------------------------------------------------
// Property test: schemas from a grammar → strict-valid JSON Schemas, and values that round-trip.
// ---------------------------------------------------------------------------------------------------

type Desc =
  | { readonly _tag: "String"; readonly variant: "plain" | "nonEmpty" | "pattern" | "uuid" | "maxLength" }
  | { readonly _tag: "Int"; readonly min: number; readonly max: number }
  | { readonly _tag: "Number"; readonly variant: "finite" | "between" | "positive" }
  | { readonly _tag: "Boolean" }
  | { readonly _tag: "Literals"; readonly values: ReadonlyArray<string | number | boolean> }
  | { readonly _tag: "Enums" }
  | { readonly _tag: "Array"; readonly item: Desc; readonly nonEmpty: boolean; readonly maxItems: number | undefined }
  | { readonly _tag: "Nullable"; readonly inner: Desc }
  | { readonly _tag: "Struct"; readonly fields: ReadonlyArray<Field> }
  | { readonly _tag: "Union"; readonly members: ReadonlyArray<ReadonlyArray<Field>> }
  | { readonly _tag: "Recursive"; readonly shape: "tree" | "list"; readonly leaf: Desc }

interface Field {
  readonly name: string
  readonly kind: "required" | "optional" | "exact" | "default"
  readonly desc: Desc
}

const fc = FastCheck
const names = ["id", "name", "score", "tags", "kind", "value", "items", "note", "at", "x_1", "y-2"]

const leafArb: FastCheck.Arbitrary<Desc> = fc.oneof(
  fc.constantFrom(...(["plain", "nonEmpty", "pattern", "uuid", "maxLength"] as const)).map((variant) =>
    ({ _tag: "String", variant }) as const
  ),
  fc.tuple(fc.integer({ min: -100, max: 100 }), fc.integer({ min: 0, max: 100 })).map(([min, span]) =>
    ({ _tag: "Int", min, max: min + span }) as const
  ),
  fc.constantFrom(...(["finite", "between", "positive"] as const)).map((variant) =>
    ({ _tag: "Number", variant }) as const
  ),
  fc.constant({ _tag: "Boolean" } as const),
  fc.uniqueArray(
    fc.oneof(fc.constantFrom("a", "b", "c", "long value"), fc.integer({ min: -5, max: 5 }), fc.boolean()),
    {
      minLength: 1,
      maxLength: 4
    }
  ).map((values) => ({ _tag: "Literals", values }) as const),
  fc.constant({ _tag: "Enums" } as const)
)

const fieldsArb = (desc: FastCheck.Arbitrary<Desc>, reserved: ReadonlyArray<string> = []) =>
  fc.uniqueArray(
    fc.record({
      name: fc.constantFrom(...names.filter((n) => !reserved.includes(n))),
      kind: fc.constantFrom(...(["required", "required", "optional", "exact", "default"] as const)),
      desc
    }),
    { minLength: 1, maxLength: 4, selector: (f) => f.name }
  ).map((fields) => fields.map((f): Field => (f.kind === "default" ? { ...f, desc: { _tag: "Boolean" } } : f)))

const descArb = (depth: number): FastCheck.Arbitrary<Desc> => {
  if (depth === 0) return leafArb
  const inner = descArb(depth - 1)
  return fc.oneof(
    { arbitrary: leafArb, weight: 4 },
    {
      arbitrary: fc.record({
        item: inner,
        nonEmpty: fc.boolean(),
        maxItems: fc.option(fc.integer({ min: 2, max: 4 }), { nil: undefined })
      })
        .map((r) => ({ _tag: "Array", ...r }) as const),
      weight: 1
    },
    { arbitrary: inner.map((d) => ({ _tag: "Nullable", inner: d }) as const), weight: 1 },
    { arbitrary: fieldsArb(inner).map((fields) => ({ _tag: "Struct", fields }) as const), weight: 2 },
    {
      arbitrary: fc.array(fieldsArb(inner, ["kind"]), { minLength: 2, maxLength: 3 }).map((members) =>
        ({ _tag: "Union", members }) as const
      ),
      weight: 1
    },
    {
      arbitrary: fc.record({ shape: fc.constantFrom(...(["tree", "list"] as const)), leaf: leafArb }).map((r) =>
        ({ _tag: "Recursive", ...r }) as const
      ),
      weight: 1
    }
  )
}

enum Color {
  Red = "red",
  Green = "green",
  Count = 3
}

let recursionId = 0

const toSchema = (desc: Desc): Schema.Schema<any, any> => {
  switch (desc._tag) {
    case "String":
      switch (desc.variant) {
        case "plain":
          return Schema.String
        case "nonEmpty":
          return Schema.NonEmptyString
        case "pattern":
          return Schema.String.pipe(Schema.pattern(/^[a-z]{1,8}$/))
        case "uuid":
          return Schema.UUID
        case "maxLength":
          return Schema.String.pipe(Schema.maxLength(5))
      }
      break
    case "Int":
      return Schema.Int.pipe(Schema.between(desc.min, desc.max))
    case "Number":
      return desc.variant === "finite"
        ? Schema.Finite
        : desc.variant === "between"
        ? Schema.Number.pipe(Schema.between(-1000, 1000))
        : Schema.Number.pipe(Schema.positive(), Schema.finite())
    case "Boolean":
      return Schema.Boolean
    case "Literals":
      return Schema.Literal(...(desc.values as [string | number | boolean]))
    case "Enums":
      return Schema.Enums(Color)
    case "Array": {
      const base: Schema.Schema<ReadonlyArray<any>, ReadonlyArray<any>> = desc.nonEmpty
        ? Schema.NonEmptyArray(toSchema(desc.item)) as any
        : Schema.Array(toSchema(desc.item))
      return desc.maxItems === undefined ? base : base.pipe(Schema.maxItems(desc.maxItems))
    }
    case "Nullable":
      return Schema.NullOr(toSchema(desc.inner))
    case "Struct":
      return struct(structFields(desc.fields))
    case "Union":
      return Schema.Union(
        ...desc.members.map((fields, i) => struct({ kind: Schema.Literal(`k${i}`), ...structFields(fields) }))
      )
    case "Recursive": {
      const leaf = toSchema(desc.leaf)
      const identifier = `Rec${recursionId++}`
      const self: Schema.Schema<any, any> = desc.shape === "tree"
        ? Schema.Struct({ value: leaf, children: Schema.Array(Schema.suspend(() => self)).pipe(Schema.maxItems(2)) })
          .annotations({ identifier })
        : Schema.Struct({ value: leaf, next: Schema.optional(Schema.suspend(() => self)) }).annotations({ identifier })
      return self
    }
  }
}

const struct = (fields: Schema.Struct.Fields): Schema.Schema<any, any> => Schema.Struct(fields) as any

const structFields = (fields: ReadonlyArray<Field>): Schema.Struct.Fields =>
  Object.fromEntries(fields.map((f) => {
    const schema = toSchema(f.desc)
    switch (f.kind) {
      case "required":
        return [f.name, schema]
      case "optional":
        return [f.name, Schema.optional(schema)]
      case "exact":
        return [f.name, Schema.optionalWith(schema, { exact: true })]
      case "default":
        return [f.name, Schema.optionalWith(Schema.Boolean, { default: () => false })]
    }
  }))

/** Whether a value of this shape can lose information on the wire: an optional field whose own type admits null. */
const lossy = (desc: Desc): boolean => {
  switch (desc._tag) {
    case "Array":
      return lossy(desc.item)
    case "Nullable":
      return lossy(desc.inner)
    case "Struct":
      return desc.fields.some((f) => (f.kind !== "required" && f.desc._tag === "Nullable") || lossy(f.desc))
    case "Union":
      return desc.members.some((fields) => lossy({ _tag: "Struct", fields }))
    case "Recursive":
      return lossy(desc.leaf)
    default:
      return false
  }
}

describe("the strict checker used by the property test", () => {
  const good = {
    type: "object",
    properties: { a: { type: "string" }, b: { anyOf: [{ type: "integer", minimum: 0 }, { type: "null" }] } },
    required: ["a", "b"],
    additionalProperties: false
  }
  it("passes a strict schema", () => assert.deepStrictEqual(checkStrict(good), []))
  it("flags each documented rule", () => {
    const flags = (schema: unknown, message: RegExp) =>
      assert.isTrue(
        checkStrict(schema).some((e) => message.test(e)),
        `${JSON.stringify(schema)}: ${checkStrict(schema)}`
      )
    flags({ ...good, required: ["a"] }, /"b" is not required/)
    flags({ ...good, additionalProperties: undefined }, /additionalProperties must be false/)
    flags({ anyOf: [good, good] }, /anyOf at the root/)
    flags({ type: "array", items: good }, /root must be an object/)
    flags(
      { ...good, properties: { ...good.properties, a: { type: "string", minLength: 1 } } },
      /"minLength" is not supported/
    )
    flags({ ...good, properties: { ...good.properties, a: { type: "string", format: "uri" } } }, /format uri/)
    flags({ ...good, properties: { ...good.properties, a: { $ref: "#/$defs/Missing" } } }, /resolves to nothing/)
    flags({ ...good, properties: { ...good.properties, a: { type: "string", enum: [1] } } }, /is not a string/)
    let deep: unknown = good
    for (let i = 0; i < 10; i++) {
      deep = { type: "object", properties: { x: deep }, required: ["x"], additionalProperties: false }
    }
    flags(deep, /nesting depth 11/)
  })
})

describe("StrictSchema property test", () => {
  // 1,000 schemas take ~30 s; the mutation run (stryker.config.mjs) sets KEEL_STRICT_PROPERTY_RUNS lower, since the
  // test runs again for every mutant it covers.
  const runs = Number(process.env.KEEL_STRICT_PROPERTY_RUNS ?? "1000")
  it(`${runs.toLocaleString("en")} generated schemas convert to strict-valid JSON Schemas whose values round-trip through the wire form`, () => {
    const ajv = new Ajv2020.default({ strict: false, allErrors: false })
    addFormats.default(ajv)
    let converted = 0
    let tooDeep = 0
    let values = 0
    FastCheck.assert(
      FastCheck.property(fieldsArb(descArb(3)), (fields) => {
        const root: Desc = { _tag: "Struct", fields }
        const schema = toSchema(root)
        const result = StrictSchema.makeEither(schema)
        if (Either.isLeft(result)) {
          // The only legitimate rejection for this grammar: nesting beyond the documented depth, which the
          // independent checker must confirm on the unlimited conversion.
          assert.match(result.left.reason, /nesting depth/)
          const unlimited = StrictSchema.make(schema, { limits: { maxDepth: 1000 } })
          assert.isTrue(checkStrict(unlimited.jsonSchema).some((e) => e.includes("nesting depth")))
          assert.deepStrictEqual(checkStrict(unlimited.jsonSchema, { ...documentedLimits, maxDepth: 1000 }), [])
          tooDeep++
          return
        }
        converted++
        const strict = result.right
        assert.deepStrictEqual(checkStrict(strict.jsonSchema), [], JSON.stringify(strict.jsonSchema))
        // ajv compiles code per schema (~20 ms): every 4th schema is enough to hold the wire form to its JSON Schema.
        const validate = converted % 4 === 0 ? ajv.compile(strict.jsonSchema) : undefined
        const encode = Schema.encodeSync(schema)
        const samples = FastCheck.sample(Arbitrary.make(schema), { numRuns: 3, seed: converted })
        for (const a of samples) {
          values++
          const wire = Either.getOrThrow(strict.encode(a))
          const text = JSON.stringify(wire)
          if (validate !== undefined) {
            assert.isTrue(
              validate(JSON.parse(text)),
              `${text} fails its JSON Schema: ${ajv.errorsText(validate.errors)}`
            )
          }
          const b = strict.decodeJson(text)
          assert.isTrue(Either.isRight(b), `${text} does not decode: ${JSON.stringify(Either.getLeft(b))}`)
          const decoded = Either.getOrThrow(b)
          assert.strictEqual(JSON.stringify(Either.getOrThrow(strict.encode(decoded))), text)
          if (!lossy(root)) {
            assert.strictEqual(JSON.stringify(encode(decoded)), JSON.stringify(encode(a)))
          }
        }
      }),
      { numRuns: runs, seed: 20261129 }
    )
    assert.isAbove(converted, 0.9 * runs)
    assert.strictEqual(converted + tooDeep, runs)
    assert.isAbove(values, 2.5 * runs)
  })
})
