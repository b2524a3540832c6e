/**
 * The simulator's JSON Schema answer generator, checked by an independent validator (ajv, draft
 * 2020-12, with formats): generated values satisfy hand-written hard schemas and many random ones,
 * and spoiled values (the `invalid_output` fault) do not.
 */
import { assert, describe, it } from "@effect/vitest"
import addFormats from "ajv-formats"
import Ajv2020 from "ajv/dist/2020.js"
import * as FastCheck from "effect/FastCheck"
import { compileSchema, SchemaError } from "../src/internal/simulator/jsonSchema.js"
import { makeRng } from "../src/internal/simulator/random.js"
import { compilePattern } from "../src/internal/simulator/regexGen.js"

const fc = FastCheck
const ajv = new Ajv2020.default({ strict: false, allErrors: false })
addFormats.default(ajv)

/** Checks `samples` generated values against the schema, and that spoiling each one breaks it. */
const check = (schema: Record<string, unknown>, samples = 25, spoilable = true) => {
  const validate = ajv.compile(schema)
  const compiled = compileSchema(schema)
  for (let i = 0; i < samples; i++) {
    const rng = makeRng(7, i, 1)
    const value = compiled.generate(rng)
    // the wire carries JSON text: what the client parses is what must validate
    const parsed = JSON.parse(JSON.stringify(value))
    if (!validate(parsed)) {
      assert.fail(
        `generated ${JSON.stringify(parsed)} fails ${JSON.stringify(schema)}: ${ajv.errorsText(validate.errors)}`
      )
    }
    if (spoilable) {
      const spoiled = compiled.spoil(parsed, rng)
      assert.isDefined(spoiled)
      assert.isFalse(
        validate(JSON.parse(JSON.stringify(spoiled))),
        `spoiled ${JSON.stringify(spoiled)} still satisfies ${JSON.stringify(schema)}`
      )
    }
  }
}

const strictObject = (properties: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  type: "object",
  properties,
  required: Object.keys(properties),
  additionalProperties: false,
  ...extra
})

describe("Simulator JSON Schema answers", () => {
  it("satisfy every string format OpenAI supports, and patterns", () => {
    check(strictObject({
      date: { type: "string", format: "date" },
      dateTime: { type: "string", format: "date-time" },
      time: { type: "string", format: "time" },
      duration: { type: "string", format: "duration" },
      email: { type: "string", format: "email" },
      hostname: { type: "string", format: "hostname" },
      ipv4: { type: "string", format: "ipv4" },
      ipv6: { type: "string", format: "ipv6" },
      uuid: { type: "string", format: "uuid" },
      uri: { type: "string", format: "uri" },
      currency: { type: "string", pattern: "^[A-Z]{3}$" },
      phone: { type: "string", pattern: "^\\+?\\d{1,3}[- ]\\d{3}-\\d{4}$" },
      slug: { type: "string", pattern: "^(?:[a-z0-9]+)(?:-[a-z0-9]+){0,3}$" },
      unanchored: { type: "string", pattern: "v\\d+\\.\\d+" },
      classes: { type: "string", pattern: "^[^\\s@]{2,8}@[\\w.-]+\\.(com|org|net)$" },
      sized: { type: "string", minLength: 30, maxLength: 40 },
      short: { type: "string", maxLength: 3 }
    }))
  })

  it("satisfy number and integer bounds, exclusive bounds and multipleOf", () => {
    check(strictObject({
      score: { type: "integer", minimum: 0, maximum: 10 },
      open: { type: "integer", exclusiveMinimum: 0, exclusiveMaximum: 3 },
      negative: { type: "integer", maximum: -1000 },
      ratio: { type: "number", exclusiveMinimum: 0, exclusiveMaximum: 1 },
      narrow: { type: "number", exclusiveMinimum: 1.5, exclusiveMaximum: 1.505 },
      price: { type: "number", minimum: 0.5, maximum: 99.5, multipleOf: 0.25 },
      tenths: { type: "number", minimum: 0, maximum: 1, multipleOf: 0.1 },
      even: { type: "integer", minimum: 1, maximum: 99, multipleOf: 2 },
      big: { type: "integer", minimum: 1e12 }
    }))
  })

  it("satisfy arrays, enums, consts, nullable fields and anyOf", () => {
    check(strictObject({
      tags: { type: "array", items: { type: "string", enum: ["a", "b", "c"] }, minItems: 2, maxItems: 4 },
      exactly: { type: "array", items: { type: "integer" }, minItems: 3, maxItems: 3 },
      empty: { type: "array", items: { type: "string" }, maxItems: 0 },
      unique: { type: "array", items: { type: "integer", minimum: 0, maximum: 50 }, minItems: 4, uniqueItems: true },
      kind: { const: "listing" },
      mixed: { enum: ["x", 1, true, null] },
      maybe: { type: ["string", "null"] },
      maybeEnum: { type: ["string", "null"], enum: ["low", "high", null] },
      either: { anyOf: [{ type: "integer", minimum: 5 }, strictObject({ reason: { type: "string" } })] },
      nullableObject: { anyOf: [strictObject({ min: { type: "number" }, max: { type: "number" } }), { type: "null" }] },
      openApiNullable: { type: "string", nullable: true },
      tuple: { type: "array", prefixItems: [{ type: "string" }, { type: "boolean" }], items: false, minItems: 2 }
    }))
  })

  it("follow $defs references, recursive ones to a bounded depth, and `#`", () => {
    const tree = {
      ...strictObject({ root: { $ref: "#/$defs/node" } }),
      $defs: {
        node: strictObject({
          label: { type: "string" },
          children: { type: "array", items: { $ref: "#/$defs/node" } }
        })
      }
    }
    check(tree, 40)
    const list = {
      ...strictObject({ head: { $ref: "#/$defs/cell" } }),
      $defs: {
        cell: strictObject({
          value: { type: "integer" },
          next: { anyOf: [{ $ref: "#/$defs/cell" }, { type: "null" }] }
        })
      }
    }
    check(list, 40)
    check(strictObject({ name: { type: "string" }, parts: { type: "array", items: { $ref: "#" } } }), 40)
    check({
      ...strictObject({ a: { $ref: "#/definitions/A" } }),
      definitions: { A: { type: "string", format: "uuid" } }
    })
    // the depth bound keeps generated trees small
    const size = JSON.stringify(compileSchema(tree).generate(makeRng(1, 2, 3))).length
    assert.isBelow(size, 200_000)
  })

  it("merge allOf parts", () => {
    check(
      {
        allOf: [
          { $ref: "#/$defs/base" },
          { type: "object", properties: { extra: { type: "boolean" } }, required: ["extra"] }
        ],
        $defs: { base: { type: "object", properties: { id: { type: "string", format: "uuid" } }, required: ["id"] } }
      },
      10,
      false
    )
  })

  it("reject schemas that cannot be compiled", () => {
    assert.throws(() => compileSchema({ $ref: "#/$defs/missing" }), SchemaError)
    assert.throws(() => compileSchema({ $ref: "https://example.com/schema.json" }), SchemaError)
    assert.throws(() => compileSchema({ type: "strnig" }), SchemaError)
  })

  it("are reproducible: the same seed gives the same value", () => {
    const compiled = compileSchema(strictObject({ a: { type: "string" }, b: { type: "number" } }))
    assert.deepStrictEqual(compiled.generate(makeRng(1, 2, 3)), compiled.generate(makeRng(1, 2, 3)))
    assert.notDeepEqual(compiled.generate(makeRng(1, 2, 3)), compiled.generate(makeRng(1, 2, 4)))
  })

  it("generate strings for regular expressions, or decline unsupported ones", () => {
    const cases = [
      "^[a-z]{2,4}\\d?$",
      "^(a|bc|d(e|f)+)*$",
      "^\\p{L}?x\\p{Nd}$",
      "^[\\]\\-a]{3}$",
      "^a{2,}b$",
      "^(?=.*\\d)(?=.*[a-z])(?!.*_)[a-z0-9_]{8,12}$"
    ]
    for (const pattern of cases) {
      const gen = compilePattern(pattern)!
      const re = new RegExp(pattern, "u")
      for (let i = 0; i < 50; i++) {
        const s = gen(makeRng(i, 0, 0))
        assert.isTrue(re.test(s), `${JSON.stringify(s)} does not match ${pattern}`)
      }
    }
    assert.isUndefined(compilePattern("^(a)\\1$"))
    assert.isUndefined(compilePattern("^\\p{Script=Greek}$"))
  })

  it("satisfy randomly built strict schemas (300 schemas)", () => {
    const key = fc.stringMatching(/^[a-z][a-z_]{0,9}$/)
    const formats = ["date", "date-time", "time", "email", "uuid", "ipv4", "ipv6", "hostname", "uri", "duration"]
    const patterns = [
      "^[A-Z]{3}$",
      "^\\d{3}-\\d{4}$",
      "^(foo|bar)+baz?$",
      "^[a-f0-9]{8}(-[a-f0-9]{4}){3}$",
      "^[^\\s]{2,5}$"
    ]
    const bounded = (integer: boolean) =>
      fc.record({
        lo: fc.integer({ min: -1000, max: 1000 }),
        width: fc.integer({ min: 2, max: 500 }),
        exclusiveLow: fc.boolean(),
        exclusiveHigh: fc.boolean(),
        open: fc.constantFrom("none", "low", "high", "both")
      }).map(({ exclusiveHigh, exclusiveLow, lo, open, width }) => {
        const s: Record<string, unknown> = { type: integer ? "integer" : "number" }
        if (open !== "low" && open !== "both") s[exclusiveLow ? "exclusiveMinimum" : "minimum"] = lo
        if (open !== "high" && open !== "both") s[exclusiveHigh ? "exclusiveMaximum" : "maximum"] = lo + width
        return s
      })
    const leaf: FastCheck.Arbitrary<Record<string, unknown>> = fc.oneof(
      fc.constant({ type: "string" }),
      fc.constant({ type: "boolean" }),
      fc.constantFrom(...formats).map((format) => ({ type: "string", format })),
      fc.constantFrom(...patterns).map((pattern) => ({ type: "string", pattern })),
      fc.tuple(fc.integer({ min: 0, max: 10 }), fc.integer({ min: 0, max: 30 })).map(([min, span]) => ({
        type: "string",
        minLength: min,
        maxLength: min + span
      })),
      fc.uniqueArray(fc.string({ minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 5 }).map((values) => ({
        type: "string",
        enum: values
      })),
      bounded(true),
      bounded(false),
      fc.constantFrom(0.5, 0.25, 2, 5).map((multipleOf) => ({ type: "number", minimum: -50, maximum: 50, multipleOf })),
      fc.oneof(fc.string(), fc.integer(), fc.boolean()).map((value) => ({ const: value }))
    )
    const node = fc.letrec<{ node: Record<string, unknown> }>((tie) => ({
      node: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        leaf,
        fc.dictionary(key, tie("node"), { minKeys: 1, maxKeys: 4 }).map((props) => strictObject(props)),
        fc.record({
          items: tie("node"),
          minItems: fc.integer({ min: 0, max: 2 }),
          extra: fc.integer({ min: 0, max: 3 })
        }).map(({ extra, items, minItems }) => ({ type: "array", items, minItems, maxItems: minItems + extra })),
        fc.array(tie("node"), { minLength: 2, maxLength: 3 }).map((anyOf) => ({ anyOf })),
        tie("node").map((inner) => ({ anyOf: [inner, { type: "null" }] })),
        leaf.filter((l) => typeof l.type === "string" && l.enum === undefined).map((l) => ({
          ...l,
          type: [l.type, "null"]
        }))
      )
    })).node
    const root = fc.dictionary(key, node, { minKeys: 1, maxKeys: 5 }).map((props) => strictObject(props))
    fc.assert(
      fc.property(root, (schema) => {
        check(schema, 8)
      }),
      { numRuns: 300, seed: 42 }
    )
  })
})
