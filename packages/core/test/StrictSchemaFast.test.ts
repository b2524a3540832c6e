/**
 * StrictSchema's compiled decoder (internal/plainDecode) against Effect's parser, on answers generated from
 * several Schemas: every answer it takes, the Schema takes and decodes to the same value; `decodeUnknown`
 * answers what the Schema answers, right or wrong; and it takes the well-formed answers, or it would say
 * nothing.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Arbitrary from "effect/Arbitrary"
import * as Either from "effect/Either"
import * as FastCheck from "effect/FastCheck"
import * as Schema from "effect/Schema"
import * as PlainDecode from "../src/internal/plainDecode.js"
import * as StrictSchema from "../src/StrictSchema.js"

interface Category {
  readonly name: string
  readonly children: ReadonlyArray<Category>
}
const Category: Schema.Schema<Category> = Schema.Struct({
  name: Schema.String,
  children: Schema.Array(Schema.suspend(() => Category))
})

enum Level {
  Low = "low",
  High = 2
}

const schemas = {
  score: Schema.Struct({
    score: Schema.Int.pipe(Schema.between(0, 100)),
    seniority: Schema.Literal("junior", "mid", "senior", "staff"),
    remote: Schema.NullOr(Schema.Boolean),
    skills: Schema.Array(Schema.String).pipe(Schema.minItems(1), Schema.maxItems(5)),
    salary: Schema.NullOr(Schema.Struct({
      min: Schema.Number.pipe(Schema.nonNegative()),
      max: Schema.Number.pipe(Schema.nonNegative()),
      currency: Schema.String.pipe(Schema.pattern(/^[A-Z]{3}$/))
    })),
    summary: Schema.String
  }),
  optionals: Schema.Struct({
    id: Schema.String,
    note: Schema.optional(Schema.String),
    tags: Schema.optionalWith(Schema.Array(Schema.String), { exact: true }),
    maybe: Schema.optional(Schema.NullOr(Schema.Number)),
    lines: Schema.Array(Schema.Struct({ sku: Schema.String, qty: Schema.optional(Schema.Int) }))
  }),
  unions: Schema.Struct({
    event: Schema.Union(
      Schema.Struct({ kind: Schema.Literal("click"), x: Schema.Number, y: Schema.Number }),
      Schema.Struct({ kind: Schema.Literal("key"), key: Schema.String, shift: Schema.optional(Schema.Boolean) })
    ),
    level: Schema.Enums(Level),
    either: Schema.Union(Schema.String, Schema.Number, Schema.Boolean)
  }),
  refinedAndTransformed: Schema.Struct({
    range: Schema.Struct({ from: Schema.Number, to: Schema.Number }).pipe(
      Schema.filter((r) => r.to >= r.from, { message: () => "to before from" })
    ),
    at: Schema.Date,
    count: Schema.NumberFromString,
    id: Schema.propertySignature(Schema.String).pipe(Schema.fromKey("order_id"))
  }),
  recursive: Schema.Struct({ root: Category })
}

const options = { errors: "first", onExcessProperty: "error" } as const

/** Valid answers (encoded values of the Schema) and near-misses: a value swapped, a key added or dropped. */
const answers = <A, I>(schema: Schema.Schema<A, I>, strict: StrictSchema.StrictSchema<A, I>) => {
  const valid = Arbitrary.make(schema).map((value) => Either.getOrThrow(strict.encode(value)))
  const unrefined = Arbitrary.make(Schema.encodedSchema(strict.wire))
  const mutated = FastCheck.tuple(valid, FastCheck.string({ maxLength: 8 }), FastCheck.anything(), FastCheck.nat(11))
    .map(([answer, key, value, index]) => {
      if (typeof answer !== "object" || answer === null) return answer
      const copy: Record<string, unknown> = { ...answer }
      const keys = Object.keys(copy)
      if (index % 3 === 0 && keys.length > 0) copy[keys[index % keys.length]!] = value
      else if (index % 3 === 1) copy[key] = value
      else if (keys.length > 0) delete copy[keys[index % keys.length]!]
      return copy
    })
  return FastCheck.oneof(valid, valid, unrefined, mutated)
}

describe("StrictSchema's compiled decoder", () => {
  for (const [name, schema] of Object.entries(schemas) as Array<[string, Schema.Schema<any, any>]>) {
    it(`${name}: takes only what the Schema takes, builds what it builds, and decodeUnknown answers as it does`, () => {
      const strict = StrictSchema.make(schema)
      const plain = PlainDecode.compile(strict.wire.ast)
      const bySchema = Schema.decodeUnknownEither(strict.wire, options)
      let taken = 0
      let valid = 0
      FastCheck.assert(
        FastCheck.property(answers(schema, strict), (answer) => {
          const slow = bySchema(answer)
          const answered = strict.decodeUnknown(answer)
          assert.strictEqual(Either.isRight(answered), Either.isRight(slow), JSON.stringify(answer))
          if (Either.isRight(slow)) {
            valid++
            assert.deepStrictEqual(Either.getOrThrow(answered), slow.right)
          }
          const fast = plain(answer)
          if (fast === PlainDecode.failed) return
          taken++
          assert.isTrue(Either.isRight(slow), `taken but refused by the Schema: ${JSON.stringify(answer)}`)
          assert.deepStrictEqual(fast, Either.getOrThrow(slow))
        }),
        { numRuns: 1_500 }
      )
      // every well-formed answer goes the fast way, or the property above says little
      assert.strictEqual(taken, valid)
      assert.isAbove(taken, 400)
    })
  }

  it("gives the Schema's message for an answer it refuses", () => {
    const strict = StrictSchema.make(schemas.score)
    assert.deepStrictEqual(
      strict.decodeJson(
        `{"score":101,"seniority":"mid","remote":null,"skills":["a"],"salary":null,"summary":""}`
      ),
      Either.left({ path: "score", reason: "Expected a number between 0 and 100, actual 101" })
    )
  })
})
