/**
 * Integration: `Llm.generateObject` → `OpenAiLanguageModel` → undici → the simulator over real HTTP
 * on 127.0.0.1. First, without faults: a recursive schema with formats, a pattern and optional fields
 * decodes from what the simulator generates in both modes. Then with 30% of answers schema-invalid (a required field dropped). The same calls run
 * with repair 0 and repair 1 against two simulators with the same seed, so their first rounds are
 * identical: no invalid value reaches the caller in either run, repair 1 turns first-round failures
 * into successes, and the call records show every repair round with its tokens and cost.
 * Real time (it.live): the server runs on the real clock, with zero latency.
 */
import { assert, describe, it } from "@effect/vitest"
import * as CallLog from "@keel/core/CallLog"
import * as Llm from "@keel/core/Llm"
import type * as LlmError from "@keel/core/LlmError"
import * as Money from "@keel/core/Money"
import * as Pricing from "@keel/core/Pricing"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../src/OpenAiLanguageModel.js"
import * as OpenAiPricing from "../src/OpenAiPricing.js"
import * as Simulator from "../src/Simulator.js"

const CALLS = 300
const MODEL = "gpt-4.1-mini"

const JobScore = Schema.Struct({
  score: Schema.Int.pipe(Schema.between(0, 100)),
  seniority: Schema.Literal("junior", "mid", "senior"),
  skills: Schema.Array(
    Schema.Struct({ name: Schema.String, years: Schema.optional(Schema.Int.pipe(Schema.nonNegative())) })
  )
    .pipe(Schema.maxItems(5)),
  remote: Schema.NullOr(Schema.Boolean),
  note: Schema.optional(Schema.String)
}).annotations({ identifier: "JobScore" })

const isJobScore = Schema.is(JobScore)
const roundTrip = Schema.decodeUnknownEither(JobScore)
const encode = Schema.encodeSync(JobScore)

interface Run {
  readonly exits: ReadonlyArray<Exit.Exit<typeof JobScore.Type, LlmError.LlmError>>
  readonly records: ReadonlyArray<CallLog.Memory["records"][number]>
}

/** N calls with the given repair bound against a fresh simulator (seed 11, 30% invalid output). */
const run = (repair: number, mode: "tool" | "json_schema") =>
  Effect.gen(function*() {
    const log = CallLog.memory()
    const stack = Layer.unwrapEffect(
      Effect.map(Simulator.Simulator, (simulator) =>
        Llm.layer({ defaultModel: MODEL }).pipe(
          Layer.provide(Layer.merge(log.layer, OpenAiPricing.layer())),
          Layer.provide(OpenAiLanguageModel.layer()),
          Layer.provide(
            OpenAiClient.layerUndici({ apiKey: Redacted.make("sk-structured-output"), baseUrl: simulator.url })
          )
        ))
    ).pipe(Layer.provide(Simulator.layer({ seed: 11, faults: { invalid_output: 0.3 } })))
    const exits = yield* Effect.forEach(
      Array.from({ length: CALLS }, (_, i) => i),
      (i) =>
        Effect.exit(
          Llm.generateObject({
            schema: JobScore,
            mode,
            repair,
            messages: [{ role: "user", content: `Score job listing #${i}` }]
          })
        ),
      { concurrency: 16 }
    ).pipe(Effect.provide(stack))
    return { exits, records: log.records } satisfies Run
  })

const successes = (run: Run) => run.exits.filter(Exit.isSuccess).length

/** No value that fails the Schema reaches the caller; every failure is a typed OutputInvalid. */
const assertNothingInvalid = (run: Run) => {
  run.exits.forEach((exit, i) => {
    if (Exit.isSuccess(exit)) {
      assert.isTrue(isJobScore(exit.value), `call ${i} returned ${JSON.stringify(exit.value)}`)
      assert.isTrue(roundTrip(encode(exit.value))._tag === "Right", `call ${i}: its value does not decode again`)
      return
    }
    assert.isFalse(Cause.isDie(exit.cause), `call ${i} died: ${Cause.pretty(exit.cause)}`)
    const error = Cause.failureOption(exit.cause)
    assert.isTrue(
      Option.isSome(error) && error.value._tag === "OutputInvalid",
      `call ${i}: ${Cause.pretty(exit.cause)}`
    )
  })
  assert.strictEqual(run.records.length, CALLS)
}

const pricing = Effect.runSync(Pricing.make({ table: OpenAiPricing.prices }))

/** Each record's cost is its summed tokens at the model's price: every round is charged. */
const assertCostCoversEveryRound = (run: Run) => {
  for (const record of run.records) {
    const expected = Pricing.costOf(pricing.lookup(MODEL)!, {
      inputTokens: record.inputTokens,
      cachedInputTokens: record.cachedInputTokens,
      outputTokens: record.outputTokens,
      reasoningTokens: record.reasoningTokens
    })
    assert.strictEqual(record.costUsd, Money.format(expected))
  }
}

interface Category {
  readonly name: string
  readonly tag?: "a" | "b" | undefined
  readonly children: ReadonlyArray<Category>
}
const Category: Schema.Schema<Category> = Schema.Struct({
  name: Schema.String,
  tag: Schema.optional(Schema.Literal("a", "b")),
  children: Schema.Array(Schema.suspend(() => Category)).pipe(Schema.maxItems(2))
}).annotations({ identifier: "Category" })

const Catalog = Schema.Struct({
  root: Category,
  id: Schema.UUID,
  year: Schema.optional(Schema.String.pipe(Schema.pattern(/^\d{4}$/))),
  count: Schema.Int.pipe(Schema.between(1, 5))
})

describe("structured output against the simulator", () => {
  it.live("recursion ($defs), formats, patterns and optional fields decode in both modes", () =>
    Effect.gen(function*() {
      const exits = yield* Effect.forEach(
        Array.from({ length: 40 }, (_, i) => i),
        (i) =>
          Effect.exit(Llm.generateObject({
            schema: Catalog,
            mode: i % 2 === 0 ? "tool" : "json_schema",
            repair: 0,
            messages: [{ role: "user", content: `Catalog #${i}` }]
          }))
      )
      exits.forEach((exit, i) => assert.isTrue(Exit.isSuccess(exit), `call ${i}: ${String(exit)}`))
    }).pipe(
      Effect.provide(
        Layer.unwrapEffect(
          Effect.map(Simulator.Simulator, (simulator) =>
            Llm.layer({ defaultModel: MODEL }).pipe(
              Layer.provide(OpenAiLanguageModel.layer()),
              Layer.provide(
                OpenAiClient.layerUndici({ apiKey: Redacted.make("sk-structured-output"), baseUrl: simulator.url })
              )
            ))
        ).pipe(Layer.provide(Simulator.layer({ seed: 3 })))
      )
    ))
})

describe("structured output against the simulator with 30% schema-invalid answers", () => {
  for (const mode of ["tool", "json_schema"] as const) {
    it.live(
      `${mode}: zero invalid values with repair 0 or 1; repair 1 succeeds more, each repair counted and paid`,
      () =>
        Effect.gen(function*() {
          const plain = yield* run(0, mode)
          const repaired = yield* run(1, mode)
          assertNothingInvalid(plain)
          assertNothingInvalid(repaired)

          // Repair 0: one round per call, about 70% succeed.
          const plainRate = successes(plain) / CALLS
          assert.isTrue(plainRate > 0.6 && plainRate < 0.8, `repair 0 success rate ${plainRate}`)
          assert.isTrue(plain.records.every((r) => r.attempts === 1 && r.repairs === undefined))

          // Repair 1: the same first rounds (same seed), so every call that succeeded still does and most failures are repaired.
          const repairedRate = successes(repaired) / CALLS
          assert.isAbove(repairedRate, plainRate)
          assert.isAbove(repairedRate, 0.85)
          plain.exits.forEach((exit, i) => {
            if (Exit.isSuccess(exit)) assert.deepStrictEqual(repaired.exits[i], exit)
          })

          // Every repair is visible: one per first-round failure, an extra attempt, and its tokens and cost on the record.
          const repairedRecords = repaired.records.filter((r) => r.repairs === 1)
          assert.strictEqual(repairedRecords.length, CALLS - successes(plain))
          assert.isTrue(repairedRecords.every((r) => r.attempts === 2))
          const byPrompt = (run: Run) => new Map(run.records.map((r) => [r.promptHash, r]))
          const firstRounds = byPrompt(plain)
          for (const record of repairedRecords) {
            const first = firstRounds.get(record.promptHash)!
            assert.isAbove(record.inputTokens, 2 * first.inputTokens, "the re-ask sends the conversation again, longer")
            assert.isAbove(Number(record.costUsd), Number(first.costUsd))
          }
          assertCostCoversEveryRound(plain)
          assertCostCoversEveryRound(repaired)
          const total = (run: Run) => Money.sum(run.records.map((r) => Money.unsafeParse(r.costUsd!)))
          assert.isTrue(total(repaired) > total(plain), "repairs are never free")
        }),
      120_000
    )
  }
})
