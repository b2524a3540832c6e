/**
 * Routing: what the Router saves on a mixed workload against sending every call to the complex tier.
 * 2,000 generated prompts, 70% simple (classify, extract, short answers) and 30% complex (multi-step
 * reasoning, code review, long documents), each sent through the whole pipeline (Router with its
 * defaults and heuristics, o200k token counts, OpenAI's price table) to a scripted model that bills
 * the exact input tokens and a fixed output per kind (simple 40, complex 900 tokens, on any model).
 * Costs are the call records' `costUsd`. Also prints how often the heuristics chose the tier the
 * generator meant, and the CPU of one routing decision. Prints markdown.
 *
 *   npx tsx --conditions=@keel/source bench/routing.ts
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as CallLog from "../packages/core/src/CallLog.js"
import * as Llm from "../packages/core/src/Llm.js"
import type * as LlmRequest from "../packages/core/src/LlmRequest.js"
import * as Money from "../packages/core/src/Money.js"
import * as Router from "../packages/core/src/Router.js"
import * as TestKit from "../packages/core/src/TestKit.js"
import * as OpenAiPricing from "../packages/openai/src/OpenAiPricing.js"
import * as OpenAiTokenizer from "../packages/openai/src/OpenAiTokenizer.js"

const calls = 2_000
const complexShare = 0.3
const output = { simple: 40, complex: 900 } as const
type Kind = keyof typeof output

/** A small deterministic generator (mulberry32), so every run routes the same workload. */
const random = (() => {
  let seed = 42
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
})()
const pick = <A>(items: ReadonlyArray<A>): A => items[Math.floor(random() * items.length)]!

const products = ["headphones", "kettle", "running shoes", "laptop stand", "desk lamp", "backpack", "router"]
const opinions = ["Arrived fast and works as described.", "Broke after two days.", "Okay for the price.", "Love it."]
const companies = ["Acme GmbH", "Globex Ltd", "Initech SA", "Umbrella BV"]
const systems = ["payment service", "search index", "message queue", "feature-flag store", "billing pipeline"]

const simplePrompts: ReadonlyArray<() => string> = [
  () =>
    `Classify the sentiment of this review of ${pick(products)} as positive, neutral or negative: "${pick(opinions)}"`,
  () =>
    `Extract the company name and the invoice total from: "Invoice 2026-${Math.floor(random() * 900 + 100)} from ${
      pick(companies)
    }, total EUR ${(random() * 900).toFixed(2)}, due in 30 days."`,
  () => `Translate to French: "The ${pick(products)} will ship tomorrow."`,
  () =>
    `Is this job listing remote? Answer yes or no. "Senior engineer at ${
      pick(companies)
    }, remote within the EU, full time."`,
  () => `Give the ISO country code for the country in: "Shipped from ${pick(["Lyon", "Porto", "Gdansk", "Ghent"])}".`
]

const paragraph = (system: string, i: number) =>
  `Incident ${i} on the ${system}: latency rose from ${Math.floor(random() * 80 + 20)} ms to ${
    Math.floor(random() * 900 + 300)
  } ms after deploy ${Math.floor(random() * 9000 + 1000)}; ${
    Math.floor(random() * 40)
  } requests failed and the on-call engineer rolled back after ${Math.floor(random() * 50 + 5)} minutes.`

const complexPrompts: ReadonlyArray<() => string> = [
  () => {
    const system = pick(systems)
    return [
      `You are reviewing the last quarter of incidents on our ${system}. Think it through step by step.`,
      "1. Analyse the incidents below and group them by root cause.",
      "2. Compare the rollback and the fix-forward strategies we used, with their trade-offs.",
      "3. Estimate how much error budget each group consumed.",
      "4. Finally, propose a plan for the next quarter with owners and milestones.",
      ...Array.from({ length: 25 + Math.floor(random() * 40) }, (_, i) => paragraph(system, i))
    ].join("\n")
  },
  () =>
    [
      "Review this function for correctness and performance, explain why each problem matters, and propose a fix:",
      "```ts",
      "export function merge(a: number[], b: number[]): number[] {",
      "  const out = []",
      "  while (a.length || b.length) out.push(a[0] < b[0] ? a.shift() : b.shift())",
      "  return out",
      "}",
      "```"
    ].join("\n"),
  () =>
    `Prove that the ${
      pick(systems)
    }'s retry policy cannot exceed 20% extra load when every client uses full jitter, then derive the worst case when half the clients ignore Retry-After, and evaluate whether a token bucket would bound it.`
]

const workload: ReadonlyArray<{ readonly kind: Kind; readonly request: LlmRequest.Input }> = Array.from(
  { length: calls },
  (_, i) => {
    const kind: Kind = random() < complexShare ? "complex" : "simple"
    const prompt = pick(kind === "simple" ? simplePrompts : complexPrompts)()
    return {
      kind,
      request: {
        messages: [{ role: "user" as const, content: prompt }],
        maxOutputTokens: kind === "simple" ? 100 : 1_500,
        metadata: { kind, item: String(i) }
      }
    }
  }
)

/** Bills the exact o200k input tokens and the kind's output, on whatever model the call was routed to. */
const model = TestKit.scripted([], {
  otherwise: (request) =>
    Effect.map(OpenAiTokenizer.input(request), (inputTokens) =>
      TestKit.response({
        model: request.model,
        usage: { inputTokens, outputTokens: output[(request.metadata?.kind ?? "simple") as Kind] }
      }))
})

const run = async (tier: string | undefined) => {
  const log = CallLog.memory()
  const layer = Llm.layer().pipe(
    Layer.provide(Layer.mergeAll(
      model.layer,
      log.layer,
      OpenAiPricing.layer(),
      OpenAiTokenizer.layer,
      Router.layer()
    ))
  )
  const runtime = ManagedRuntime.make(layer)
  await runtime.runPromise(
    Effect.forEach(
      workload,
      ({ request }) => Llm.generate(tier === undefined ? request : { ...request, tier }),
      { concurrency: 1, discard: true }
    )
  )
  await runtime.dispose()
  // Records are written as calls end, so match them to the workload by the item's position.
  const byKind = { simple: 0n, complex: 0n }
  let total = 0n
  for (const [index, record] of log.records.entries()) {
    const cost = Money.unsafeParse(record.costUsd ?? "0")
    total += cost
    byKind[workload[index]!.kind] += cost
  }
  return { total, byKind, records: log.records }
}

const main = async () => {
  await Effect.runPromise(OpenAiTokenizer.load)
  const routed = await run(undefined)
  const allComplex = await run("complex")
  const saving = Number(allComplex.total - routed.total) / Number(allComplex.total)

  let agree = 0
  const byTier = new Map<string, number>()
  for (const [index, record] of routed.records.entries()) {
    byTier.set(record.model, (byTier.get(record.model) ?? 0) + 1)
    if (record.tier === workload[index]!.kind) agree++
  }

  // CPU of one routing decision (heuristics over the prompt, token count given).
  const router = await Effect.runPromise(Router.make())
  const decisions = workload.map(({ request }) => request as LlmRequest.LlmRequest)
  const facts = { inputTokens: 1_000, budgetLeft: Effect.succeed(undefined) }
  for (const request of decisions) Effect.runSync(router.route(request, facts))
  const cpu = process.cpuUsage()
  for (let round = 0; round < 5; round++) {
    for (const request of decisions) Effect.runSync(router.route(request, facts))
  }
  const used = process.cpuUsage(cpu)
  const microsPerDecision = (used.user + used.system) / (decisions.length * 5)

  const simpleCount = workload.filter((item) => item.kind === "simple").length
  console.log(`## Routing (bench/routing.ts)\n`)
  console.log(
    `${calls} calls, ${simpleCount} simple and ${
      calls - simpleCount
    } complex (generated), output ${output.simple} / ${output.complex} tokens; OpenAI prices.\n`
  )
  const row = (name: string, all: bigint, routedCost: bigint) =>
    console.log(
      `| ${name} | ${Money.format(all)} | ${Money.format(routedCost)} | ${
        (Number(all - routedCost) / Number(all) * 100).toFixed(1)
      }% |`
    )
  console.log("| calls | all to the complex tier (gpt-4.1), USD | routed (heuristics, default tiers), USD | saving |")
  console.log("|---|---:|---:|---:|")
  row(`all ${calls}`, allComplex.total, routed.total)
  row(`the ${simpleCount} simple`, allComplex.byKind.simple, routed.byKind.simple)
  row(`the ${calls - simpleCount} complex`, allComplex.byKind.complex, routed.byKind.complex)
  console.log(`\nSaving: **${(saving * 100).toFixed(1)}%**.`)
  console.log(
    `Models: ${
      Array.from(byTier, ([name, count]) => `${name} ${count}`).join(", ")
    }; the heuristics chose the tier the generator meant for ${agree} of ${calls} calls (${
      (agree / calls * 100).toFixed(1)
    }%).`
  )
  console.log(`Routing decision: ${microsPerDecision.toFixed(1)} µs CPU each (heuristics, token count given).`)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
