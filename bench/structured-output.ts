/**
 * CPU cost of structured output, without HTTP: converting a Schema once (`StrictSchema.make`),
 * decoding one answer (`decodeJson`), and a whole `Llm.generateObject` call against a scripted
 * model compared with `Llm.generate` sending the same tool, so the difference is what the Schema
 * stage adds per call. Prints markdown.
 *
 *   npx tsx --conditions=@keel/source bench/structured-output.ts
 */
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Schema from "effect/Schema"
import * as Llm from "../packages/core/src/Llm.js"
import * as StrictSchema from "../packages/core/src/StrictSchema.js"
import * as TestKit from "../packages/core/src/TestKit.js"

const JobScore = Schema.Struct({
  score: Schema.Int.pipe(Schema.between(0, 100)),
  seniority: Schema.Literal("junior", "mid", "senior"),
  summary: Schema.String,
  skills: Schema.Array(
    Schema.Struct({ name: Schema.String, years: Schema.optional(Schema.Int.pipe(Schema.nonNegative())) })
  ),
  remote: Schema.NullOr(Schema.Boolean),
  salary: Schema.optional(
    Schema.Struct({ min: Schema.Number, max: Schema.Number, currency: Schema.Literal("EUR", "USD") })
  )
}).annotations({ identifier: "JobScore" })

const args = JSON.stringify({
  score: 82,
  seniority: "senior",
  summary: "Backend role with TypeScript and Node.js, remote-friendly team in Berlin.",
  skills: [{ name: "TypeScript", years: 5 }, { name: "Node.js", years: null }, { name: "Postgres", years: 3 }],
  remote: true,
  salary: null
})

const answer = TestKit.response({
  text: undefined,
  finishReason: "tool_calls",
  toolCalls: [{ id: "call_1", name: "JobScore", arguments: args }]
})
const model = TestKit.scripted([], { otherwise: answer })
/** The scripted model keeps every request; emptied between rounds so its growth costs nothing. */
const recorded = model.requests as Array<unknown>

/** CPU µs per iteration of `f`, best of 5 rounds. */
const cpu = async (n: number, f: () => unknown | Promise<unknown>): Promise<number> => {
  let best = Infinity
  for (let round = 0; round < 5; round++) {
    recorded.length = 0
    const start = process.cpuUsage()
    for (let i = 0; i < n; i++) await f()
    const used = process.cpuUsage(start)
    best = Math.min(best, (used.user + used.system) / n)
  }
  return best
}

const convert = await cpu(200, () => StrictSchema.make(JobScore, { limits: {} }))
const strict = StrictSchema.make(JobScore)
const decode = await cpu(20_000, () => strict.decodeJson(args))
const parseOnly = await cpu(20_000, () => JSON.parse(args))

const runtime = ManagedRuntime.make(Llm.layer({ defaultModel: "gpt-4.1-mini" }).pipe(Layer.provide(model.layer)))
const llm = await runtime.runPromise(Llm.Llm)
const messages = [{ role: "user" as const, content: "Score this job listing." }]
const tools = [{ name: "JobScore", parameters: strict.jsonSchema, strict: true }]
const plain = () => runtime.runPromise(llm.generate({ messages, tools, toolChoice: { tool: "JobScore" } }))
const structured = () => runtime.runPromise(llm.generateObject({ schema: JobScore, messages }))
// Interleaved and best-of, so JIT warm-up and the machine's other load fall on both alike.
let generate = Infinity
let generateObject = Infinity
for (let round = 0; round < 3; round++) {
  generate = Math.min(generate, await cpu(3_000, plain))
  generateObject = Math.min(generateObject, await cpu(3_000, structured))
}
await runtime.dispose()

console.log(`| step | CPU µs |
|---|---|
| \`StrictSchema.make\` (once per Schema, uncached) | ${convert.toFixed(0)} |
| \`JSON.parse\` of the arguments alone | ${parseOnly.toFixed(1)} |
| \`decodeJson\` (parse + wire decode) | ${decode.toFixed(1)} |
| \`Llm.generate\` with the tool, scripted model | ${generate.toFixed(1)} |
| \`Llm.generateObject\`, scripted model | ${generateObject.toFixed(1)} |
| generateObject − generate (the Schema stage per call) | ${(generateObject - generate).toFixed(1)} |`)
