/**
 * The OpenAI client's CPU per call against raw undici, same script run, same request body: a strict
 * tool call answered by the simulator (zero latency) running in a child process, so that
 * `process.cpuUsage()` here counts the client alone.
 *
 * - raw undici: `request()` + `JSON.stringify` of the body + `JSON.parse` of the answer
 * - keel: `LanguageModel.complete` through `OpenAiLanguageModel` → `OpenAiClient`, decoded into an `LlmResponse`:
 *   straight on undici (`OpenAiClient.layerUndici`, the production path) and over the platform `HttpClient`
 *   (`OpenAiClient.layer` + `NodeHttpClient.layerUndici`)
 * - the whole keel pipeline over `layerUndici`: `Llm.generate` bare (validate, choose the model, retry policy with its
 *   per-attempt timer, classify) and with production stages (Pricing, a memory Budget with a limit, metrics, a
 *   JSON-lines call log; no span exporter)
 * - the official `openai` SDK, for reference
 *
 * Concurrency 1 and 64; rounds alternate between clients so that load from other processes falls on all of
 * them alike, a full GC runs before each round (outside the measurement) so no client pays for another's
 * garbage, and the figure is the median round.
 *
 *   npx tsx --conditions=@keel/source bench/client.ts [calls per round at concurrency 1, default 800]
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as Budget from "@keel/core/Budget"
import * as JsonLines from "@keel/core/CallLog/JsonLines"
import { LanguageModel } from "@keel/core/LanguageModel"
import * as Llm from "@keel/core/Llm"
import type * as LlmRequest from "@keel/core/LlmRequest"
import type { LlmResponse } from "@keel/core/LlmResponse"
import * as OpenAiPricing from "@keel/openai/OpenAiPricing"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import { fork } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as V8 from "node:v8"
import * as Vm from "node:vm"
import OpenAI from "openai"
import { Agent, request } from "undici"
import * as OpenAiClient from "../packages/openai/src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../packages/openai/src/OpenAiLanguageModel.js"
import * as Simulator from "../packages/openai/src/Simulator.js"
import { listing, scoreSchema, systemPrompt } from "./fixtures.js"

const llmRequest: LlmRequest.Resolved = {
  model: "gpt-4.1-mini",
  messages: [
    { role: "system", content: systemPrompt },
    { role: "user", content: listing }
  ],
  tools: [{ name: "score_listing", description: "Score a listing", parameters: scoreSchema, strict: true }],
  toolChoice: { tool: "score_listing" }
}
/** The very body keel sends, so every client sends the same bytes. */
const wireBody = OpenAiLanguageModel.toWire(llmRequest)
V8.setFlagsFromString("--expose-gc")
const gc = Vm.runInNewContext("gc") as () => void

const apiKey = "sk-bench"

/** Child process: the simulator, until the parent goes away. */
const serve = () =>
  Effect.gen(function*() {
    const simulator = yield* Simulator.Simulator
    process.send!(simulator.url)
    yield* Effect.async<void>((resume) => {
      process.once("disconnect", () => resume(Effect.void))
    })
  }).pipe(Effect.provide(Simulator.layer({ seed: 1 })), Effect.runPromise).then(() => process.exit(0))

type Client = (concurrency: number, calls: number) => Promise<void>

/** Runs `calls` calls of `one` with `concurrency` in flight. */
const loop = async (one: () => Promise<unknown>, concurrency: number, calls: number) => {
  let next = 0
  const worker = async () => {
    while (next++ < calls) await one()
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

const main = async () => {
  const callsAt1 = Number(process.argv[2] ?? 800)
  const child = fork(import.meta.filename, ["--serve"], { stdio: ["ignore", "inherit", "inherit", "ipc"] })
  const url = await new Promise<string>((resolve) => child.once("message", (m) => resolve(String(m))))

  // raw undici
  const dispatcher = new Agent()
  const headers = { "content-type": "application/json", authorization: `Bearer ${apiKey}` }
  const undiciOne = async () => {
    const res = await request(`${url}/chat/completions`, {
      method: "POST",
      dispatcher,
      headers,
      body: JSON.stringify(wireBody)
    })
    const json = JSON.parse(await res.body.text())
    if (res.statusCode !== 200 || json.choices[0].message.tool_calls.length !== 1) throw new Error("bad answer")
  }

  // keel, straight on undici (layerUndici) and over the platform HttpClient (NodeHttpClient.layerUndici)
  const options = { apiKey: Redacted.make(apiKey), baseUrl: url }
  const check = (response: LlmResponse) => {
    if (response.toolCalls.length !== 1) throw new Error("bad answer")
  }
  const runtimes: Array<ManagedRuntime.ManagedRuntime<LanguageModel, unknown>> = []
  const keel = async (client: Layer.Layer<OpenAiClient.OpenAiClient, unknown>): Promise<Client> => {
    const runtime = ManagedRuntime.make(OpenAiLanguageModel.layer().pipe(Layer.provide(client)))
    runtimes.push(runtime)
    const model = await runtime.runPromise(LanguageModel)
    return (concurrency, calls) =>
      runtime.runPromise(
        Effect.forEach(
          Array.from({ length: calls }),
          () => Effect.map(model.complete(llmRequest), check),
          { concurrency, discard: true }
        )
      )
  }

  // the whole pipeline, bare and with production stages
  const logDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bench-"))
  const pipeline = async <A, E>(stages: Layer.Layer<A, E>): Promise<Client> => {
    const model = OpenAiLanguageModel.layer().pipe(Layer.provide(OpenAiClient.layerUndici(options)))
    const runtime = ManagedRuntime.make(Llm.layer().pipe(Layer.provide(Layer.merge(model, stages))))
    runtimes.push(runtime as ManagedRuntime.ManagedRuntime<any, unknown>)
    const llm = await runtime.runPromise(Llm.Llm)
    return (concurrency, calls) =>
      runtime.runPromise(
        Effect.forEach(
          Array.from({ length: calls }),
          () => Effect.map(llm.generate(llmRequest), check),
          { concurrency, discard: true }
        )
      )
  }
  const production = Layer.mergeAll(
    OpenAiPricing.layer(),
    Budget.layerMemory({ limits: [{ scope: "global", window: "total", limit: "1000000" }] }),
    JsonLines.layer({ path: Path.join(logDir, "calls.jsonl") })
  )

  // official SDK
  const sdk = new OpenAI({ apiKey, baseURL: url, maxRetries: 0 })
  const sdkOne = async () => {
    const completion = await sdk.chat.completions.create(wireBody as never)
    if ((completion as OpenAI.ChatCompletion).choices[0]!.message.tool_calls!.length !== 1) {
      throw new Error("bad answer")
    }
  }

  const clients: ReadonlyArray<readonly [string, Client]> = [
    ["raw undici `request()` + `JSON.parse`", (c, n) => loop(undiciOne, c, n)],
    ["keel `LanguageModel.complete`, `OpenAiClient.layerUndici`", await keel(OpenAiClient.layerUndici(options))],
    [
      "keel `LanguageModel.complete`, `OpenAiClient.layer` + `NodeHttpClient.layerUndici`",
      await keel(OpenAiClient.layer(options).pipe(Layer.provide(NodeHttpClient.layerUndici)))
    ],
    ["keel `Llm.generate`, bare pipeline, `layerUndici`", await pipeline(Layer.empty)],
    ["keel `Llm.generate` + Pricing, Budget (memory), metrics, JSON-lines log", await pipeline(production)],
    ["official `openai` SDK 6.49 `chat.completions.create`", (c, n) => loop(sdkOne, c, n)]
  ]

  const measure = async (client: Client, concurrency: number, calls: number) => {
    gc() // the garbage of the client measured before is not charged to this one
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    await client(concurrency, calls)
    const cpu = process.cpuUsage(cpu0)
    return { cpuUs: (cpu.user + cpu.system) / calls, wallUs: ((performance.now() - t0) * 1000) / calls }
  }
  const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

  const rounds = 5
  const results = new Map<string, { cpu: Array<number>; wall: Array<number> }>()
  const load0 = Os.loadavg()
  for (const concurrency of [1, 64]) {
    const calls = concurrency === 1 ? callsAt1 : callsAt1 * 2
    for (const [, client] of clients) await measure(client, concurrency, Math.ceil(calls / 2)) // warm-up
    for (let round = 0; round < rounds; round++) {
      for (const [name, client] of clients) {
        const r = await measure(client, concurrency, calls)
        const key = `${name}@${concurrency}`
        const entry = results.get(key) ?? { cpu: [], wall: [] }
        entry.cpu.push(r.cpuUs)
        entry.wall.push(r.wallUs)
        results.set(key, entry)
      }
    }
  }
  const load1 = Os.loadavg()

  const cpuOf = (name: string, concurrency: number) => median(results.get(`${name}@${concurrency}`)!.cpu)
  const base = clients[0]![0]
  console.log(
    `Node ${process.version}, ${Os.cpus().length}× ${Os.cpus()[0]?.model ?? "cpu"}, ${new Date().toISOString()}; ` +
      `load average ${load0[0]!.toFixed(1)} → ${load1[0]!.toFixed(1)}; ` +
      `${callsAt1} calls per round at concurrency 1, ${callsAt1 * 2} at 64, median of ${rounds} rounds\n`
  )
  console.log("| client | CPU µs/call, c=1 | ×undici, c=1 | CPU µs/call, c=64 | ×undici, c=64 |")
  console.log("|---|---|---|---|---|")
  for (const [name] of clients) {
    const c1 = cpuOf(name, 1)
    const c64 = cpuOf(name, 64)
    console.log(
      `| ${name} | ${c1.toFixed(0)} | ${(c1 / cpuOf(base, 1)).toFixed(2)}× | ${c64.toFixed(0)} | ${
        (c64 / cpuOf(base, 64)).toFixed(2)
      }× |`
    )
  }
  console.log("\nRounds (CPU µs/call):")
  for (const [key, { cpu }] of results) console.log(`- ${key}: ${cpu.map((x) => x.toFixed(0)).join(", ")}`)

  for (const runtime of runtimes) await runtime.dispose()
  await dispatcher.close()
  Fs.rmSync(logDir, { recursive: true, force: true })
  child.disconnect()
}

if (process.argv[2] === "--serve") await serve()
else await main()
