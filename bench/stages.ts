/**
 * What each production stage costs on its own: the CPU per call of `Llm.generateObject` (the overhead
 * benchmark's strict tool call) with a model that answers after 1 ms and no HTTP, so the figures are the
 * pipeline's own work. Each configuration runs in its own process: bare, bare plus one stage (with what
 * that stage needs: the tokenizer, and prices for the budget), then the whole production pipeline. Each
 * is warmed up, then measured over several rounds at concurrency 64; median and range, and what the
 * stage adds over bare.
 *
 *   npx tsx --conditions=@keel/source bench/stages.ts [--calls 20000] [--rounds 3] [--only bare,production]
 *     [--json bench/results/stages.json]
 */
import { fork } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { productionStages, type Stage } from "./lib/keel.js"
import * as Results from "./lib/results.js"
import * as Stats from "./lib/stats.js"

const WARM_UP_CALLS = 10_000

/** Configurations, in table order: the stages each adds to the bare pipeline. */
export const configurations = [
  { id: "bare", name: "bare (validate, retry policy, decode, spans, metrics)", stages: [] },
  { id: "pricing", name: "+ Pricing and the o200k tokenizer (cost per call)", stages: ["pricing", "tokenizer"] },
  {
    id: "budget",
    name: "+ a memory Budget (with Pricing and the tokenizer)",
    stages: ["pricing", "tokenizer", "budget"]
  },
  { id: "breaker", name: "+ CircuitBreaker", stages: ["breaker"] },
  { id: "limiter", name: "+ RateLimiter, memory store (with the tokenizer)", stages: ["limiter", "tokenizer"] },
  { id: "callLog", name: "+ a JSON-lines call log", stages: ["callLog"] },
  { id: "router", name: "+ Router (with the tokenizer)", stages: ["router", "tokenizer"] },
  { id: "production", name: "production: all of the above", stages: productionStages }
] as const satisfies ReadonlyArray<
  { readonly id: string; readonly name: string; readonly stages: ReadonlyArray<Stage> }
>

export interface Row {
  readonly id: string
  readonly name: string
  readonly cpuUs: Stats.Figure
  /** the median over bare's median */
  readonly addedUs: number
}
export interface Data {
  readonly calls: number
  readonly rounds: number
  readonly rows: ReadonlyArray<Row>
}

/** Child: one configuration; sends the CPU µs per call of each round. */
const child = async (id: string, calls: number, rounds: number) => {
  const [LanguageModel, TestKit, Effect, ManagedRuntime, Keel] = await Promise.all([
    import("@keel/core/LanguageModel"),
    import("@keel/core/TestKit"),
    import("effect/Effect"),
    import("effect/ManagedRuntime"),
    import("./lib/keel.js")
  ])
  const tmp = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bench-stages-"))
  const answer = TestKit.response({
    model: Keel.MODEL,
    text: undefined,
    finishReason: "tool_calls",
    toolCalls: [{
      id: "call_1",
      name: "score_listing",
      arguments: JSON.stringify({
        score: 72,
        seniority: "senior",
        remote: true,
        skills: ["typescript", "effect"],
        salary: { min: 100000, max: 150000, currency: "EUR" },
        summary: "A senior TypeScript role with Effect, remote."
      })
    }]
  })
  const model = LanguageModel.layer({
    provider: "openai",
    timesOut: true,
    complete: () => Effect.async((resume) => void setTimeout(() => resume(Effect.succeed(answer)), 1))
  })
  const configuration = configurations.find((c) => c.id === id)!
  const runtime = ManagedRuntime.make(Keel.pipeline(model, configuration.stages, Path.join(tmp, "calls.jsonl")))
  const run = (n: number) =>
    runtime.runPromise(
      Effect.forEach(Array.from({ length: n }), () => Keel.scoreListing, { concurrency: 64, discard: true })
    )
  const cpu: Array<number> = []
  await run(WARM_UP_CALLS)
  for (let round = 0; round < rounds; round++) {
    const c0 = process.cpuUsage()
    await run(calls)
    const c = process.cpuUsage(c0)
    cpu.push((c.user + c.system) / calls)
  }
  await runtime.dispose()
  Fs.rmSync(tmp, { recursive: true, force: true })
  process.send!(cpu, () => process.exit(0))
}

const main = async () => {
  const timer = Results.start("stages")
  const calls = Results.numberFlag("calls", 20_000)
  const rounds = Results.numberFlag("rounds", 3)
  const only = process.argv.includes("--only")
    ? process.argv[process.argv.indexOf("--only") + 1]!.split(",")
    : undefined
  const measured: Array<{ id: string; name: string; cpuUs: Stats.Figure }> = []
  for (const c of configurations.filter((c) => only === undefined || only.includes(c.id))) {
    const process_ = fork(import.meta.filename, ["--child", c.id, String(calls), String(rounds)], {
      stdio: ["ignore", "ignore", "inherit", "ipc"]
    })
    const cpu = await new Promise<Array<number>>((resolve, reject) => {
      process_.once("message", (m) => resolve(m as Array<number>))
      process_.once("exit", (code) => code !== 0 && reject(new Error(`${c.id} exited with ${code}`)))
    })
    measured.push({ id: c.id, name: c.name, cpuUs: Stats.figure(cpu) })
    console.error(`stages: ${c.id} ${Stats.showFigure(Stats.figure(cpu))} µs per call`)
  }
  const bare = measured.find((m) => m.id === "bare")?.cpuUs.median ?? Number.NaN
  const rows = measured.map((m): Row => ({ ...m, addedUs: m.cpuUs.median - bare }))
  timer.finish({ calls, rounds, rows } satisfies Data)
  for (const row of rows) {
    console.log(`${row.id.padEnd(11)} ${Stats.showFigure(row.cpuUs)} µs/call, +${row.addedUs.toFixed(0)} over bare`)
  }
}

if (process.argv[2] === "--child") await child(process.argv[3]!, Number(process.argv[4]), Number(process.argv[5]))
else await main()
