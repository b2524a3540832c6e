/** The scoring tool's parameters as an Effect Schema: the same shape as bench/fixtures.ts's JSON Schema. */
import * as Schema from "effect/Schema"

export const fields = {
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
}

export const Score = Schema.Struct(fields).annotations({ identifier: "Score" })
