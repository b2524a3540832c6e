import { assert, describe, it } from "@effect/vitest"
import * as Arbitrary from "effect/Arbitrary"
import * as Either from "effect/Either"
import * as FastCheck from "effect/FastCheck"
import * as Schema from "effect/Schema"
import { conforming } from "../src/internal/plainRequest.js"
import * as LlmRequest from "../src/LlmRequest.js"

const decodeWithSchema = Schema.decodeUnknownEither(LlmRequest.LlmRequest, {
  errors: "first",
  onExcessProperty: "error"
})

/** Valid requests (the Schema's own arbitrary), and near-misses: refinements dropped, keys added, values swapped. */
const valid = Arbitrary.make(LlmRequest.LlmRequest)
const unrefined = Arbitrary.make(Schema.encodedSchema(LlmRequest.LlmRequest))
const mutated = FastCheck.tuple(valid, FastCheck.string({ maxLength: 12 }), FastCheck.anything(), FastCheck.nat(11))
  .map(([request, key, value, index]) => {
    const copy: Record<string, unknown> = { ...request }
    const keys = Object.keys(copy)
    if (keys.length > 0 && index % 2 === 0) copy[keys[index % keys.length]!] = value
    else copy[key] = value
    if (Array.isArray(copy.messages) && copy.messages.length > 0 && index % 3 === 0) {
      copy.messages = [{ ...copy.messages[0], [key]: value }, ...copy.messages.slice(1)]
    }
    return copy
  })

/** Keys holding `undefined` dropped: the Schema keeps an optional key given as `undefined`, the hot path leaves it out. */
const withoutUndefined = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(withoutUndefined)
  if (typeof value !== "object" || value === null) return value
  return Object.fromEntries(
    Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [k, withoutUndefined(v)])
  )
}
/** Numbers at the edges of their refinements. */
const edges = FastCheck.tuple(
  valid,
  FastCheck.constantFrom(-0.5, -0, 0, 1, 1.5, 2, 2.0000001, 3, Number.NaN, Infinity, 2 ** 53, 2 ** 53 - 1)
).map(([request, n]) => ({ ...request, temperature: n, maxOutputTokens: Math.trunc(n) === n ? n : 7, seed: n }))

describe("LlmRequest.decode's hot path", () => {
  it("accepts only what the Schema accepts, and builds what the Schema builds", () => {
    let accepted = 0
    FastCheck.assert(
      FastCheck.property(FastCheck.oneof(valid, unrefined, mutated, edges), (input) => {
        const fast = conforming(input)
        if (fast === undefined) return
        accepted++
        const slow = decodeWithSchema(input)
        assert.isTrue(Either.isRight(slow), `the hot path accepted what the Schema refuses: ${JSON.stringify(input)}`)
        assert.deepStrictEqual(withoutUndefined(fast), withoutUndefined(Either.getOrThrow(slow)))
      }),
      { numRuns: 3_000 }
    )
    // the property says nothing if the hot path leaves everything to the Schema
    assert.isAbove(accepted, 500)
  })

  it("takes the requests the pipeline sends every day: a strict tool, a scope, a limit", () => {
    const input: LlmRequest.Input = {
      scope: "tenant:acme/run:42",
      messages: [{ role: "system", content: "Score the listing." }, { role: "user", content: "Senior engineer" }],
      tools: [{
        name: "score",
        parameters: { type: "object", properties: {}, required: [], additionalProperties: false }
      }],
      toolChoice: { tool: "score" },
      maxOutputTokens: 400,
      metadata: { listing: "17" }
    }
    const fast = conforming(input)
    assert.isDefined(fast)
    assert.deepStrictEqual(fast, Either.getOrThrow(decodeWithSchema(input)))
    assert.strictEqual(fast!.tools![0]!.strict, true)
  })

  it("leaves to the Schema, and so to its message, a request it does not take", () => {
    for (
      const input of [
        { messages: [] },
        { messages: [{ role: "user", content: "hi" }], model: "gpt 4" },
        { messages: [{ role: "user", content: "hi", extra: 1 }] },
        { messages: [{ role: "user", content: "hi" }], temperature: Number.NaN },
        { messages: [{ role: "user", content: "hi" }], maxOutputTokens: 1.5 },
        { messages: [{ role: "user", content: "hi" }], scope: "a//b" },
        { messages: [{ role: "user", content: undefined }] },
        { messages: [{ role: "user", content: "hi" }], metadata: { a: undefined } },
        // an own `__proto__` key (as JSON.parse makes it): the Schema's copy takes it as the prototype
        JSON.parse(`{"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"a","parameters":{"__proto__":[]}}]}`)
      ]
    ) {
      assert.isUndefined(conforming(input), JSON.stringify(input))
    }
  })
})
