/**
 * The simulator's own throughput: requests/s and server CPU µs per request, zero latency, for a
 * strict tool call (the same request, and a different listing text in every request), a
 * `json_schema` answer and plain text; and, for comparison, the same tool call answered through an
 * HttpRouter route (a fiber per request) instead of the node:http fast path. The simulator runs in
 * this process; the load comes from a child process (undici `request()`, concurrency 64,
 * keep-alive), so the CPU measured here (process.cpuUsage) is the server's alone.
 *
 *   npx tsx --conditions=@keel/source bench/simulator.ts [seconds per case, default 8]
 */
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as Effect from "effect/Effect"
import { fork } from "node:child_process"
import * as Os from "node:os"
import { Agent, request } from "undici"
import * as Simulator from "../packages/openai/src/Simulator.js"
import { listing, scoreSchema, systemPrompt } from "./fixtures.js"
import { sleep } from "./lib/processes.js"

const CONCURRENCY = 64

const messages = [
  { role: "system", content: systemPrompt },
  { role: "user", content: listing }
]

const toolCall = (content: string) => ({
  model: "gpt-4.1-mini",
  messages: [messages[0], { role: "user", content }],
  tools: [{
    type: "function",
    function: { name: "score_listing", description: "Score a listing", strict: true, parameters: scoreSchema }
  }],
  tool_choice: { type: "function", function: { name: "score_listing" } }
})

/** In a body, the client replaces this with a counter, so every request is new to the simulator. */
const UNIQUE = "#UNIQUE#"

interface Case {
  readonly name: string
  readonly body: unknown
  readonly path?: string
}

const cases: ReadonlyArray<Case> = [
  { name: "strict tool call", body: toolCall(listing) },
  { name: "strict tool call, new listing text each time", body: toolCall(`${UNIQUE} ${listing}`) },
  {
    name: "json_schema content",
    body: {
      model: "gpt-4.1-mini",
      messages,
      response_format: { type: "json_schema", json_schema: { name: "score", strict: true, schema: scoreSchema } }
    }
  },
  { name: "plain text", body: { model: "gpt-4.1-mini", messages } },
  { name: "strict tool call through an HttpRouter route", body: toolCall(listing), path: "/router/chat/completions" }
]

/** Reads a request body as the fast path does, so the comparison isolates router and fiber costs. */
const readBody = (request: HttpServerRequest.HttpServerRequest) =>
  Effect.async<string>((resume) => {
    const incoming = NodeHttpServerRequest.toIncomingMessage(request)
    let text = ""
    incoming.setEncoding("utf8")
    incoming.on("data", (chunk: string) => {
      text += chunk
    })
    incoming.once("end", () => resume(Effect.succeed(text)))
  })

/** The comparison route: the same answer, served by a fiber through HttpRouter. */
const routerChat: Simulator.Route = HttpRouter.makeRoute(
  "POST",
  "/v1/router/chat/completions",
  Effect.gen(function*() {
    const endpoint = yield* Simulator.EndpointContext
    const request = yield* HttpServerRequest.HttpServerRequest
    const answer = endpoint.completeChat(JSON.parse(yield* readBody(request)))
    return endpoint.json(answer.status, answer.body)
  })
)

/** Child process: fires requests at concurrency 64 until told to stop, then reports its count. */
const client = async (url: string, body: string) => {
  const dispatcher = new Agent({ connections: CONCURRENCY, pipelining: 1, keepAliveTimeout: 30_000 })
  let running = true
  let done = 0
  let failed = 0
  process.on("message", (m) => {
    if (m === "stop") running = false
  })
  let ready = false
  const parts = body.split(UNIQUE)
  let n = 0
  const worker = async () => {
    while (running) {
      const res = await request(url, {
        method: "POST",
        dispatcher,
        headers: { "content-type": "application/json", authorization: "Bearer sk-bench" },
        body: parts.length === 1 ? body : parts.join(String(n++))
      })
      const text = await res.body.text()
      if (res.statusCode === 200 && text.length > 0) done++
      else failed++
      if (!ready) {
        ready = true
        process.send!("ready")
      }
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  process.send!({ done, failed })
  await dispatcher.close()
  process.exit(0)
}

const measure = async (url: string, body: unknown, seconds: number) => {
  const child = fork(import.meta.filename, ["--client", url, JSON.stringify(body)], { stdio: "inherit" })
  const ready = new Promise((resolve) => child.once("message", resolve))
  const result = ready.then(() =>
    new Promise<{ done: number; failed: number }>((resolve) => child.once("message", resolve as never))
  )
  await ready
  await sleep(1500) // warm-up: JIT, connections, caches
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const served0 = await served()
  await sleep(seconds * 1000)
  const served1 = await served()
  const cpu = process.cpuUsage(cpu0)
  const wall = (performance.now() - t0) / 1000
  child.send("stop")
  const { failed } = await result
  const n = served1 - served0
  return { rps: n / wall, cpuUs: (cpu.user + cpu.system) / n, cpuShare: (cpu.user + cpu.system) / 1e6 / wall, failed }
}

let served: () => Promise<number> = () => Promise.resolve(0)

const main = async () => {
  const seconds = Number(process.argv[2] ?? 8)
  const loadBefore = Os.loadavg()[0]!.toFixed(2)
  const rows: Array<string> = []
  await Effect.gen(function*() {
    const sim = yield* Simulator.Simulator
    served = () => Effect.runPromise(Effect.map(sim.stats, (s) => s.byStatus["200"] ?? 0))
    for (const c of cases) {
      const r = yield* Effect.promise(() => measure(`${sim.url}${c.path ?? "/chat/completions"}`, c.body, seconds))
      rows.push(
        `| ${c.name} | ${Math.round(r.rps).toLocaleString("en-US")} | ${r.cpuUs.toFixed(0)} | ${
          Math.round(1e6 / r.cpuUs).toLocaleString("en-US")
        } | ${(r.cpuShare * 100).toFixed(0)}% | ${r.failed} |`
      )
    }
  }).pipe(Effect.provide(Simulator.layer({ seed: 0, routes: [routerChat] })), Effect.scoped, Effect.runPromise)

  const loadAfter = Os.loadavg()[0]!.toFixed(2)
  console.log(
    `Node ${process.version}, ${Os.cpus().length}× ${Os.cpus()[0]?.model ?? "cpu"}, ${new Date().toISOString()}`
  )
  console.log(
    `1-min load average before/after: ${loadBefore}/${loadAfter} (2 cores); ${seconds} s per case after 1.5 s warm-up, concurrency ${CONCURRENCY}\n`
  )
  console.log(
    "| request | requests/s measured | server CPU µs/request | one-core capacity (10⁶/µs) | server CPU use | non-200 |"
  )
  console.log("|---|---|---|---|---|---|")
  for (const row of rows) console.log(row)
}

if (process.argv[2] === "--client") await client(process.argv[3]!, process.argv[4]!)
else await main()
