/**
 * Overhead beside the peers: the same strict tool call (bench/fixtures.ts: a system prompt, a job
 * listing, one strict function tool with 6 fields, forced by `tool_choice`) sent to a zero-latency
 * simulator by each contender, at concurrency 1 and 64:
 *
 * - raw `undici` `request()` + `JSON.parse` (the floor), on Chat Completions, and on the Responses API
 *   (the floor of `@effect/ai-openai`, which speaks only that API; served by bench/lib/responses.ts);
 * - raw `undici` in one `Effect.tryPromise` per call, run like keel (a fiber per call): the floor of any
 *   library built on Effect;
 * - the official `openai` SDK (`chat.completions.create`);
 * - the Vercel AI SDK (`ai` `generateText` with a tool over `@ai-sdk/openai`'s chat model);
 * - `@effect/ai` + `@effect/ai-openai` (`LanguageModel.generateText` with a toolkit, over
 *   `NodeHttpClient.layerUndici`);
 * - keel bare: `Llm.generateObject` with a strict `Tool` (validate, retry policy, decode, metrics);
 * - keel production: the same with Router, Pricing, a memory Budget with a limit, CircuitBreaker,
 *   RateLimiter (a high configured limit), the o200k tokenizer, and a JSON-lines call log.
 *
 * The simulator runs in its own process, and so does every contender (its CPU, RSS and heap are its
 * own). Each is warmed up first, at each concurrency (at least 2,000 calls). Rounds are interleaved: each
 * round runs every contender in turn (the order rotates), one at a time, after a full GC; figures are the
 * median round and the range over rounds. Reported per
 * contender: CPU µs per call (`process.cpuUsage`, user + system), calls/s, latency p50/p99 and the
 * latency added over the floor, heap after import, peak RSS (`maxRSS`).
 *
 *   npx tsx --conditions=@keel/source bench/overhead.ts [--calls 400] [--rounds 5] [--json bench/results/overhead.json]
 */
import type { ToolSet } from "ai"
import type * as EffectModule from "effect/Effect"
import type { ManagedRuntime } from "effect/ManagedRuntime"
import { fork } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as Fs from "node:fs"
import * as Inspector from "node:inspector"
import * as Os from "node:os"
import * as Path from "node:path"
import * as V8 from "node:v8"
import * as Vm from "node:vm"
import { listing, scoreSchema, systemPrompt } from "./fixtures.js"
import * as Profile from "./lib/profile.js"
import * as Results from "./lib/results.js"
import * as Stats from "./lib/stats.js"

const MODEL = "gpt-4.1-mini"
const API_KEY = "sk-bench"
const MAX_OUTPUT = 400
const WARM_UP_CALLS = 2_000

/**
 * Contender ids, in table order; `floor` is what its ratios are taken against; `peer` marks the libraries
 * keel is compared with (the floors and Effect's own floor are references, not peers).
 */
export const contenders = [
  { id: "undici", name: "raw undici `request()` + `JSON.parse`", floor: "undici", peer: false },
  {
    id: "undici-responses",
    name: "raw undici + `JSON.parse`, Responses API",
    floor: "undici-responses",
    peer: false
  },
  {
    id: "effect-undici",
    name: "raw undici `request()` + `JSON.parse` in one `Effect.tryPromise` (Effect's own floor)",
    floor: "undici",
    peer: false
  },
  { id: "openai", name: "official `openai` SDK `chat.completions.create`", floor: "undici", peer: true },
  {
    id: "ai-sdk",
    name: "Vercel AI SDK `generateText` with a tool (`@ai-sdk/openai` chat)",
    floor: "undici",
    peer: true
  },
  {
    id: "effect-ai",
    name: "`@effect/ai` `generateText` with a toolkit (`@effect/ai-openai`, Responses)",
    floor: "undici-responses",
    peer: true
  },
  { id: "keel-bare", name: "keel `Llm.generateObject`, bare pipeline", floor: "undici", peer: false },
  { id: "keel-production", name: "keel `Llm.generateObject`, production pipeline", floor: "undici", peer: false }
] as const
export type ContenderId = typeof contenders[number]["id"]

const chatBody = {
  model: MODEL,
  messages: [{ role: "system", content: systemPrompt }, { role: "user", content: listing }],
  tools: [{
    type: "function",
    function: { name: "score_listing", description: "Score a listing", parameters: scoreSchema, strict: true }
  }],
  tool_choice: { type: "function", function: { name: "score_listing" } },
  max_completion_tokens: MAX_OUTPUT
}
const responsesBody = {
  model: MODEL,
  input: [{ role: "system", content: systemPrompt }, { role: "user", content: listing }],
  tools: [{
    type: "function",
    name: "score_listing",
    description: "Score a listing",
    parameters: scoreSchema,
    strict: true
  }],
  tool_choice: { type: "function", name: "score_listing" },
  max_output_tokens: MAX_OUTPUT
}

const bad = (what: string): never => {
  throw new Error(`bad answer: ${what}`)
}

/** One contender in its child process: `run(concurrency, calls, latencies)` makes the calls. */
type Runner = (concurrency: number, calls: number, latencies: Float64Array) => Promise<void>

/** Runs `one` `calls` times with `concurrency` in flight, recording each call's latency (ms). */
const loop = (one: () => Promise<unknown>): Runner => async (concurrency, calls, latencies) => {
  let next = 0
  const worker = async () => {
    while (next < calls) {
      const i = next++
      const t0 = performance.now()
      await one()
      latencies[i] = performance.now() - t0
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

/** One call the floor's way: undici's `request()`, the body read as text, `JSON.parse`, the tool call found. */
const rawUndici = async (url: string, api: "chat" | "responses") => {
  const { Agent, request } = await import("undici")
  const dispatcher = new Agent()
  const headers = { "content-type": "application/json", authorization: `Bearer ${API_KEY}` }
  const [path, body] = api === "chat" ? ["/chat/completions", chatBody] : ["/responses", responsesBody]
  return async () => {
    const res = await request(`${url}${path}`, { method: "POST", dispatcher, headers, body: JSON.stringify(body) })
    const json = JSON.parse(await res.body.text())
    if (res.statusCode !== 200) bad(`status ${res.statusCode}`)
    const args = api === "chat" ? json.choices[0].message.tool_calls[0].function.arguments : json.output[0].arguments
    if (typeof args !== "string") bad("no tool call")
  }
}

const makeRunner = async (id: ContenderId, url: string, tmp: string): Promise<Runner> => {
  switch (id) {
    case "undici":
    case "undici-responses":
      return loop(await rawUndici(url, id === "undici" ? "chat" : "responses"))
    case "effect-undici": {
      const [Effect, ManagedRuntime, Layer] = await Promise.all([
        import("effect/Effect"),
        import("effect/ManagedRuntime"),
        import("effect/Layer")
      ])
      const call = await rawUndici(url, "chat")
      return effectRunner(Effect, ManagedRuntime.make(Layer.empty), Effect.tryPromise(call))
    }
    case "openai": {
      const { default: OpenAI } = await import("openai")
      const sdk = new OpenAI({ apiKey: API_KEY, baseURL: url })
      return loop(async () => {
        const completion = await sdk.chat.completions.create(chatBody as never) as { choices: Array<any> }
        if (completion.choices[0].message.tool_calls?.length !== 1) bad("no tool call")
      })
    }
    case "ai-sdk": {
      const { generateText, jsonSchema, tool } = await import("ai")
      const { createOpenAI } = await import("@ai-sdk/openai")
      const model = createOpenAI({ apiKey: API_KEY, baseURL: url }).chat(MODEL)
      const tools = {
        score_listing: tool({
          description: "Score a listing",
          inputSchema: jsonSchema<Record<string, unknown>>(scoreSchema as never),
          strict: true
        })
      } as unknown as ToolSet // the AI SDK's types do not hold under exactOptionalPropertyTypes
      return loop(async () => {
        const result = await generateText({
          model,
          system: systemPrompt,
          prompt: listing,
          tools,
          toolChoice: { type: "tool", toolName: "score_listing" },
          maxOutputTokens: MAX_OUTPUT
        })
        if (result.toolCalls.length !== 1) bad("no tool call")
      })
    }
    case "effect-ai": {
      const [
        AiLanguageModel,
        AiTool,
        Toolkit,
        OpenAiClient,
        OpenAiLanguageModel,
        NodeHttpClient,
        Effect,
        Layer,
        ManagedRuntime,
        Redacted,
        Score
      ] = await Promise.all([
        import("@effect/ai/LanguageModel"),
        import("@effect/ai/Tool"),
        import("@effect/ai/Toolkit"),
        import("@effect/ai-openai/OpenAiClient"),
        import("@effect/ai-openai/OpenAiLanguageModel"),
        import("@effect/platform-node/NodeHttpClient"),
        import("effect/Effect"),
        import("effect/Layer"),
        import("effect/ManagedRuntime"),
        import("effect/Redacted"),
        import("./lib/score.js")
      ])
      const ScoreTool = AiTool.make("score_listing", { description: "Score a listing", parameters: Score.fields })
      const toolkit = Toolkit.make(ScoreTool)
      const handlers = toolkit.toLayer({ score_listing: () => Effect.void })
      const runtime = ManagedRuntime.make(
        OpenAiLanguageModel.layer({ model: MODEL, config: { max_output_tokens: MAX_OUTPUT } }).pipe(
          Layer.provide(OpenAiClient.layer({ apiKey: Redacted.make(API_KEY), apiUrl: url })),
          Layer.provide(NodeHttpClient.layerUndici),
          Layer.merge(handlers)
        )
      )
      const prompt = [{ role: "system" as const, content: systemPrompt }, { role: "user" as const, content: listing }]
      const one = Effect.flatMap(
        AiLanguageModel.generateText({
          prompt,
          toolkit,
          toolChoice: { tool: "score_listing" },
          disableToolCallResolution: true
        }),
        (response) => response.toolCalls.length === 1 ? Effect.void : Effect.die(new Error("bad answer: no tool call"))
      )
      return effectRunner(Effect, runtime, one)
    }
    case "keel-bare":
    case "keel-production": {
      const [OpenAiClient, OpenAiLanguageModel, Effect, Layer, ManagedRuntime, Redacted, Keel] = await Promise.all([
        import("@keel/openai/OpenAiClient"),
        import("@keel/openai/OpenAiLanguageModel"),
        import("effect/Effect"),
        import("effect/Layer"),
        import("effect/ManagedRuntime"),
        import("effect/Redacted"),
        import("./lib/keel.js")
      ])
      const model = OpenAiLanguageModel.layer().pipe(
        Layer.provide(OpenAiClient.layerUndici({ apiKey: Redacted.make(API_KEY), baseUrl: url }))
      )
      const stages = id === "keel-bare" ? [] : Keel.productionStages
      const runtime = ManagedRuntime.make(Keel.pipeline(model, stages, Path.join(tmp, "calls.jsonl")))
      return effectRunner(Effect, runtime, Keel.scoreListing)
    }
  }
}

/** An Effect contender: one `runPromise` per round, a fiber per call (`Effect.forEach`). */
const effectRunner = <R>(
  Effect: typeof EffectModule,
  runtime: ManagedRuntime<R, unknown>,
  one: EffectModule.Effect<unknown, unknown, R>
): Runner =>
(concurrency, calls, latencies) =>
  runtime.runPromise(Effect.forEach(
    Array.from({ length: calls }, (_, i) => i),
    (i) =>
      Effect.suspend(() => {
        const t0 = performance.now()
        return Effect.map(one, () => {
          latencies[i] = performance.now() - t0
        })
      }),
    { concurrency, discard: true }
  ))

type ToChild = { readonly type: "run"; readonly concurrency: number; readonly calls: number } | {
  readonly type: "exit"
}
interface Ready {
  readonly type: "ready"
  readonly heapAfterImportMb: number
  readonly rssAfterImportMb: number
}
interface RoundResult {
  readonly type: "result"
  readonly cpuUs: number
  readonly callsPerSecond: number
  readonly p50: number
  readonly p99: number
  readonly rssMb: number
}
interface Bye {
  readonly type: "bye"
  readonly peakRssMb: number
}

/** Child: one contender, driven by the parent's messages. */
const contender = async (id: ContenderId, url: string) => {
  V8.setFlagsFromString("--expose-gc")
  const gc = Vm.runInNewContext("gc") as () => void
  const tmp = Fs.mkdtempSync(Path.join(Os.tmpdir(), `keel-bench-${id}-`))
  const run = await makeRunner(id, url, tmp)
  gc()
  const memory = process.memoryUsage()
  process.send!(
    {
      type: "ready",
      heapAfterImportMb: memory.heapUsed / 2 ** 20,
      rssAfterImportMb: memory.rss / 2 ** 20
    } satisfies Ready
  )
  process.on("disconnect", () => process.exit(1))
  // KEEL_BENCH_PROFILE=<file>: profile from the second run on (after the warm-up) until exit
  const profileTo = process.env.KEEL_BENCH_PROFILE
  const session = profileTo === undefined ? undefined : new Inspector.Session()
  const post = (method: string) =>
    new Promise<unknown>((resolve, reject) =>
      session!.post(method, (error, result) => (error ? reject(error) : resolve(result)))
    )
  let runs = 0
  process.on("message", async (message: ToChild) => {
    if (message.type === "exit") {
      if (session !== undefined && runs > 1) {
        const { profile } = (await post("Profiler.stop")) as { profile: unknown }
        Fs.writeFileSync(profileTo!, JSON.stringify(profile))
      }
      Fs.rmSync(tmp, { recursive: true, force: true })
      process.send!(
        { type: "bye", peakRssMb: process.resourceUsage().maxRSS / 1024 } satisfies Bye,
        () => process.exit(0)
      )
      return
    }
    if (session !== undefined && ++runs === 2) {
      session.connect()
      await post("Profiler.enable")
      await new Promise((resolve) => session.post("Profiler.setSamplingInterval", { interval: 200 }, resolve))
      await post("Profiler.start")
    }
    const latencies = new Float64Array(message.calls)
    gc()
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    await run(message.concurrency, message.calls, latencies)
    const cpu = process.cpuUsage(cpu0)
    const seconds = (performance.now() - t0) / 1000
    latencies.sort()
    process.send!(
      {
        type: "result",
        cpuUs: (cpu.user + cpu.system) / message.calls,
        callsPerSecond: message.calls / seconds,
        p50: Stats.percentile(latencies, 0.5),
        p99: Stats.percentile(latencies, 0.99),
        rssMb: process.memoryUsage().rss / 2 ** 20
      } satisfies RoundResult
    )
  })
}

/** Child: the simulator with the Responses route, until the parent goes away. */
const serve = async () => {
  const [Effect, Simulator, Responses] = await Promise.all([
    import("effect/Effect"),
    import("../packages/openai/src/Simulator.js"),
    import("./lib/responses.js")
  ])
  await Effect.gen(function*() {
    const simulator = yield* Simulator.Simulator
    process.send!(simulator.url)
    yield* Effect.async<void>((resume) => {
      process.once("disconnect", () => resume(Effect.void))
    })
  }).pipe(Effect.provide(Simulator.layer({ seed: 1, routes: [Responses.route] })), Effect.runPromise)
  process.exit(0)
}

export interface Row {
  readonly id: ContenderId
  readonly name: string
  readonly peer: boolean
  readonly floor: ContenderId
  readonly version: string
  readonly concurrency: number
  readonly calls: number
  readonly cpuUs: Stats.Figure
  readonly ratio: Stats.Figure
  readonly callsPerSecond: Stats.Figure
  readonly p50: Stats.Figure
  readonly p99: Stats.Figure
  readonly addedP50: number
  readonly addedP99: number
}
export interface Data {
  readonly rounds: number
  readonly callsAt1: number
  readonly callsAt64: number
  readonly rows: ReadonlyArray<Row>
  /** where the production pipeline's CPU goes: a separate process profiled with node:inspector after its warm-up, at concurrency 64 */
  readonly profile?: { readonly contender: ContenderId; readonly calls: number; readonly summary: Profile.Summary }
  readonly memory: ReadonlyArray<{
    readonly id: ContenderId
    readonly name: string
    readonly heapAfterImportMb: number
    readonly rssAfterImportMb: number
    readonly peakRssMb: number
  }>
}

const version = (pkg: string) => {
  try {
    return JSON.parse(Fs.readFileSync(Path.join("node_modules", pkg, "package.json"), "utf8")).version as string
  } catch {
    return "?"
  }
}
const versions: Record<ContenderId, string> = {
  "undici": `undici ${version("undici")}`,
  "undici-responses": `undici ${version("undici")}`,
  "openai": `openai ${version("openai")}`,
  "ai-sdk": `ai ${version("ai")}, @ai-sdk/openai ${version("@ai-sdk/openai")}`,
  "effect-ai": `@effect/ai ${version("@effect/ai")}, @effect/ai-openai ${version("@effect/ai-openai")}`,
  "effect-undici": `effect ${version("effect")}, undici ${version("undici")}`,
  "keel-bare": `keel ${Results.commit()}`,
  "keel-production": `keel ${Results.commit()}`
}

const main = async () => {
  const timer = Results.start("overhead")
  const callsAt1 = Results.numberFlag("calls", 400)
  const callsAt64 = callsAt1 * 2
  const rounds = Results.numberFlag("rounds", 5)
  const only = process.argv.includes("--only")
    ? process.argv[process.argv.indexOf("--only") + 1]!.split(",")
    : undefined
  const chosen = contenders.filter((c) => only === undefined || only.includes(c.id))

  const server = fork(import.meta.filename, ["--serve"], { stdio: ["ignore", "inherit", "inherit", "ipc"] })
  const url = await new Promise<string>((resolve) => server.once("message", (m) => resolve(String(m))))

  const children = new Map<ContenderId, { child: ChildProcess; ready: Ready }>()
  // started one at a time, so that imports do not compete with each other
  for (const c of chosen) {
    const child = fork(import.meta.filename, ["--contender", c.id, url], {
      stdio: ["ignore", "inherit", "inherit", "ipc"]
    })
    const ready = await new Promise<Ready>((resolve, reject) => {
      child.once("message", (m) => resolve(m as Ready))
      child.once("exit", (code) => reject(new Error(`${c.id} exited with ${code} before it was ready`)))
    })
    children.set(c.id, { child, ready })
  }
  const ask = <A>(id: ContenderId, message: ToChild) =>
    new Promise<A>((resolve, reject) => {
      const { child } = children.get(id)!
      const onExit = (code: number) => reject(new Error(`${id} exited with ${code}`))
      child.once("exit", onExit)
      child.once("message", (m) => {
        child.off("exit", onExit)
        resolve(m as A)
      })
      child.send(message)
    })

  const results = new Map<string, Array<RoundResult>>()
  for (const concurrency of [1, 64]) {
    const calls = concurrency === 1 ? callsAt1 : callsAt64
    // warm-up: enough calls for the JIT to settle, so rounds measure steady state (a short one had left keel,
    // with more code to compile than the floor, 10-20 % above its steady CPU per call)
    for (const c of chosen) await ask(c.id, { type: "run", concurrency, calls: Math.max(calls, WARM_UP_CALLS) })
    for (let round = 0; round < rounds; round++) {
      const order = chosen.map((_, i) => chosen[(i + round) % chosen.length]!)
      for (const c of order) {
        const r = await ask<RoundResult>(c.id, { type: "run", concurrency, calls })
        const key = `${c.id}@${concurrency}`
        results.set(key, [...(results.get(key) ?? []), r])
      }
      console.error(`overhead: c=${concurrency} round ${round + 1}/${rounds} done`)
    }
  }
  const memory = []
  for (const c of chosen) {
    const bye = await ask<Bye>(c.id, { type: "exit" })
    const { ready } = children.get(c.id)!
    memory.push({
      id: c.id,
      name: c.name,
      heapAfterImportMb: ready.heapAfterImportMb,
      rssAfterImportMb: ready.rssAfterImportMb,
      peakRssMb: bye.peakRssMb
    })
  }
  // where the production pipeline's time goes: one more process of it, profiled, not measured
  let profile: Data["profile"]
  if (chosen.some((c) => c.id === "keel-production") && !process.argv.includes("--no-profile")) {
    const profDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bench-prof-"))
    const child = fork(import.meta.filename, ["--contender", "keel-production", url], {
      stdio: ["ignore", "ignore", "inherit", "ipc"],
      env: { ...process.env, KEEL_BENCH_PROFILE: Path.join(profDir, "production.cpuprofile") }
    })
    await new Promise((resolve) => child.once("message", resolve))
    const calls = callsAt64 * 3
    const next = () => new Promise((resolve) => child.once("message", resolve))
    for (const n of [callsAt64, calls]) {
      const answered = next()
      child.send({ type: "run", concurrency: 64, calls: n } satisfies ToChild)
      await answered
    }
    const bye = next()
    child.send({ type: "exit" } satisfies ToChild)
    await bye
    await new Promise((resolve) => child.once("exit", resolve))
    const file = Fs.readdirSync(profDir).find((f) => f.endsWith(".cpuprofile"))
    if (file !== undefined) {
      profile = {
        contender: "keel-production",
        calls,
        summary: Profile.summarise(Path.join(profDir, file))
      }
    }
    Fs.rmSync(profDir, { recursive: true, force: true })
  }
  server.disconnect()

  const rows: Array<Row> = []
  for (const concurrency of [1, 64]) {
    for (const c of chosen) {
      const mine = results.get(`${c.id}@${concurrency}`)!
      const floor = results.get(`${c.floor}@${concurrency}`)
      const pick = (rs: ReadonlyArray<RoundResult>, f: (r: RoundResult) => number) => Stats.figure(rs.map(f))
      // a round's ratio is taken against the floor's figure in the same round
      const ratio = floor === undefined
        ? Stats.figure([NaN])
        : Stats.figure(mine.map((r, i) => r.cpuUs / floor[i]!.cpuUs))
      const p50 = pick(mine, (r) => r.p50)
      const p99 = pick(mine, (r) => r.p99)
      rows.push({
        id: c.id,
        name: c.name,
        peer: c.peer,
        floor: c.floor,
        version: versions[c.id],
        concurrency,
        calls: concurrency === 1 ? callsAt1 : callsAt64,
        cpuUs: pick(mine, (r) => r.cpuUs),
        ratio,
        callsPerSecond: pick(mine, (r) => r.callsPerSecond),
        p50,
        p99,
        addedP50: floor === undefined ? NaN : p50.median - Stats.median(floor.map((r) => r.p50)),
        addedP99: floor === undefined ? NaN : p99.median - Stats.median(floor.map((r) => r.p99))
      })
    }
  }
  const result = timer.finish(
    { rounds, callsAt1, callsAt64, rows, memory, ...(profile ? { profile } : {}) } satisfies Data
  )
  for (const row of rows) {
    console.log(
      `c=${row.concurrency} ${row.id.padEnd(18)} CPU ${Stats.showFigure(row.cpuUs)} µs  ×${
        Stats.showFigure(row.ratio, 2)
      }  ${row.callsPerSecond.median.toFixed(0)}/s  p50 ${row.p50.median.toFixed(2)} ms p99 ${
        row.p99.median.toFixed(2)
      } ms`
    )
  }
  for (const m of memory) {
    console.log(
      `${m.id.padEnd(18)} heap after import ${m.heapAfterImportMb.toFixed(1)} MB, peak RSS ${m.peakRssMb.toFixed(0)} MB`
    )
  }
  console.log(`load ${result.load[0].toFixed(1)} → ${result.load[1].toFixed(1)}, ${result.seconds.toFixed(0)} s`)
}

if (process.argv[2] === "--serve") await serve()
else if (process.argv[2] === "--contender") await contender(process.argv[3] as ContenderId, process.argv[4]!)
else {await main().then(() => process.exit(0), (error) => {
    console.error(error)
    process.exit(1)
  })}
