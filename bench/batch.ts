/**
 * Batch: what the durable engine costs. Runs `Batch.generateObjects` against an in-memory provider
 * whose batches complete at once (no polls), with the budget in memory and no call log, so what is
 * measured is the chunk workflow's activities on the engine and keel's own work per line. Two shapes
 * (many small chunks, few large ones) give the cost per chunk and per item by solving
 * cpu = chunks × perChunk + items × perItem; on the SQLite engine (a file in WAL mode) and on the
 * in-memory engine for comparison. First (in a fresh process) 100,000 items on SQLite in chunks of
 * 10,000, with the peak resident memory sampled every 50 ms. Prints markdown.
 *
 * Run: npx tsx --conditions=@keel/source bench/batch.ts
 */
import * as WorkflowEngine from "@effect/workflow/WorkflowEngine"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Batch from "../packages/core/src/Batch.js"
import * as BatchEngine from "../packages/core/src/Batch/Engine.js"
import * as Budget from "../packages/core/src/Budget.js"
import * as FakeBatch from "../packages/core/test/utils/batchProvider.js"
import * as TestPrices from "../packages/core/test/utils/prices.js"

const Score = Schema.Struct({ id: Schema.String, score: Schema.Int }).annotations({ identifier: "Score" })
const Listing = Schema.Struct({ title: Schema.String })

const items = (count: number) =>
  Stream.range(1, count).pipe(
    Stream.map((i): Batch.Item => ({ id: `item-${i}`, input: { title: `Listing number ${i}: a job to score` } }))
  )

type EngineKind = "sqlite" | "memory"

const engineLayer = (kind: EngineKind, dir: string) =>
  kind === "memory"
    ? WorkflowEngine.layerMemory
    : Layer.orDie(BatchEngine.layerSqlite({ filename: Path.join(dir, `engine-${Math.random()}.db`), pollInterval: 50 }))

const runOnce = async (kind: EngineKind, count: number, maxLines: number, dir: string) => {
  const fake = FakeBatch.make({ durationMs: 0 })
  const budget = Budget.layer({ limits: [{ scope: "tenant:acme", limit: "1000000" }] }).pipe(
    Layer.provideMerge(Layer.sync(Budget.BudgetStore, Budget.makeMemoryStore))
  )
  const layer = Batch.layer({ maxLines, concurrency: 4, pollEvery: 10 }).pipe(
    Layer.provideMerge(Layer.mergeAll(fake.layer, TestPrices.layer(), budget, engineLayer(kind, dir)))
  )
  let peakRss = 0
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss)
  }, 50)
  const cpu = process.cpuUsage()
  const wall = performance.now()
  const done = await Effect.runPromise(
    Batch.generateObjects(items(count), {
      runId: `bench-${kind}-${count}-${maxLines}-${Math.random()}`,
      task: "score",
      schema: Score,
      input: Listing,
      request: (listing: typeof Listing.Type) => ({
        messages: [{ role: "user", content: listing.title }],
        maxOutputTokens: 50
      }),
      model: "gpt-4o-mini",
      scope: "tenant:acme"
    }).pipe(Stream.runCount, Effect.provide(layer))
  )
  const used = process.cpuUsage(cpu)
  clearInterval(sampler)
  peakRss = Math.max(peakRss, process.memoryUsage().rss)
  if (done !== count) throw new Error(`${done} results for ${count} items`)
  return {
    cpuMs: (used.user + used.system) / 1000,
    wallMs: performance.now() - wall,
    chunks: Math.ceil(count / maxLines),
    peakRss
  }
}

const main = async () => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bench-batch-"))
  const out: Array<string> = []
  out.push("## Batch", "")
  out.push(
    `Node ${process.version}, ${Os.cpus().length} cores. An in-memory provider whose batches complete at once, budget in memory, no call log: the engine's activities (reserve, upload, admit, create, collect, settle) and keel's work per line (request, decode, cost). CPU from process.cpuUsage; best of 3.`,
    ""
  )
  const before = process.memoryUsage().rss
  const big = await runOnce("sqlite", 100_000, 10_000, dir)
  const memory = [
    `100,000 items on the SQLite engine in 10 chunks of 10,000 (4 in flight): ${big.cpuMs.toFixed(0)} ms CPU, ${
      big.wallMs.toFixed(0)
    } ms wall; resident memory ${(before / 2 ** 20).toFixed(0)} MB before, peak ${
      (big.peakRss / 2 ** 20).toFixed(0)
    } MB.`
  ]
  out.push("| engine | items | chunks | CPU ms | wall ms |", "|---|---:|---:|---:|---:|")
  const shapes = [{ count: 2_000, maxLines: 10 }, { count: 20_000, maxLines: 2_000 }]
  const fits: Record<string, { perChunk: number; perItem: number }> = {}
  for (const kind of ["sqlite", "memory"] as const) {
    await runOnce(kind, 200, 20, dir) // warm-up
    const rows = []
    for (const shape of shapes) {
      let best = { cpuMs: Infinity, wallMs: Infinity, chunks: 0, peakRss: 0 }
      for (let i = 0; i < 3; i++) {
        const row = await runOnce(kind, shape.count, shape.maxLines, dir)
        if (row.cpuMs < best.cpuMs) best = row
      }
      rows.push({ ...shape, ...best })
      out.push(`| ${kind} | ${shape.count} | ${best.chunks} | ${best.cpuMs.toFixed(0)} | ${best.wallMs.toFixed(0)} |`)
    }
    // cpu = chunks × c + items × i, two equations.
    const [a, b] = rows
    const perItem = (b!.cpuMs * a!.chunks - a!.cpuMs * b!.chunks) / (b!.count * a!.chunks - a!.count * b!.chunks)
    const perChunk = (a!.cpuMs - a!.count * perItem) / a!.chunks
    fits[kind] = { perChunk, perItem }
  }
  out.push("", "| engine | CPU per chunk | CPU per item |", "|---|---:|---:|")
  for (const [kind, fit] of Object.entries(fits)) {
    out.push(`| ${kind} | ${fit.perChunk.toFixed(2)} ms | ${(fit.perItem * 1000).toFixed(1)} µs |`)
  }
  out.push("", ...memory)
  Fs.rmSync(dir, { recursive: true, force: true })
  console.log(out.join("\n"))
}

main().then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
