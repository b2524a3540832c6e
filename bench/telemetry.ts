/**
 * What observing a call costs: CPU µs per `Llm.generate` through the whole pipeline (decode, route,
 * price, retry policy, classify) over a scripted model that answers at once, with and without the
 * observability layers. The model does no I/O, so the difference between rows is the cost of the
 * call log, the spans and the metrics alone.
 *
 * Rows: bare (spans and metrics off, no call log); + metrics; + spans with no tracer provided
 * (Effect's built-in tracer: keel then makes none); + spans exported over OTLP/HTTP by
 * `Telemetry/Otlp` (Effect's native OtlpTracer, JSON and protobuf, to a discarding HTTP receiver
 * in this process; also with 10 % of calls traced); + spans through the OpenTelemetry SDK bridge
 * (`NodeSdk`, batch processor, discarding exporter); + a JSON-lines call log (a synchronous append
 * per record to a temp file); + the Effect-logger sink (JSON-formatted, output discarded);
 * everything at once.
 *
 * Rounds alternate between rows so that load from other processes falls on all of them alike; the
 * figure is the median round.
 *
 *   npx tsx --conditions=@keel/source bench/telemetry.ts [calls per round, default 2000] [rounds, default 5]
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import type { ExportResult } from "@opentelemetry/core"
import { BatchSpanProcessor, type ReadableSpan, type SpanExporter } from "@opentelemetry/sdk-trace-base"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Fs from "node:fs"
import * as Http from "node:http"
import type * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as CallLog from "../packages/core/src/CallLog.js"
import * as JsonLines from "../packages/core/src/CallLog/JsonLines.js"
import * as LanguageModel from "../packages/core/src/LanguageModel.js"
import * as Llm from "../packages/core/src/Llm.js"
import type * as LlmRequest from "../packages/core/src/LlmRequest.js"
import type { LlmResponse } from "../packages/core/src/LlmResponse.js"
import * as Telemetry from "../packages/core/src/Telemetry.js"
import * as Otlp from "../packages/core/src/Telemetry/Otlp.js"
import * as OpenAiPricing from "../packages/openai/src/OpenAiPricing.js"
import { listing, systemPrompt } from "./fixtures.js"

const scoreSchema = {
  type: "object",
  additionalProperties: false,
  required: ["score", "seniority", "remote", "skills", "summary"],
  properties: {
    score: { type: "integer", minimum: 0, maximum: 100 },
    seniority: { type: "string", enum: ["junior", "mid", "senior", "staff"] },
    remote: { type: ["boolean", "null"] },
    skills: { type: "array", items: { type: "string" }, minItems: 1, maxItems: 5 },
    summary: { type: "string" }
  }
}

const input: LlmRequest.Input = {
  model: "gpt-4.1-mini",
  messages: [
    { role: "system", content: systemPrompt },
    { role: "user", content: listing }
  ],
  tools: [{ name: "score_listing", description: "Score a listing", parameters: scoreSchema }],
  toolChoice: { tool: "score_listing" },
  scope: "run:bench",
  task: "score"
}

const answer: LlmResponse = {
  id: "chatcmpl-bench",
  model: "gpt-4.1-mini-2025-04-14",
  toolCalls: [{
    id: "call_1",
    name: "score_listing",
    arguments: "{\"score\":82,\"seniority\":\"senior\",\"remote\":true,\"skills\":[\"TypeScript\"],\"summary\":\"fit\"}"
  }],
  finishReason: "tool_calls",
  usage: { inputTokens: 182, cachedInputTokens: 0, outputTokens: 31, reasoningTokens: 0 },
  requestId: "req_bench"
}

const model = LanguageModel.layer({ provider: "openai", complete: () => Effect.succeed(answer) })

/** Spans go through the SDK's batch processor and are dropped. */
class DiscardingExporter implements SpanExporter {
  export(_spans: Array<ReadableSpan>, done: (result: ExportResult) => void) {
    done({ code: 0 })
  }
  shutdown() {
    return Promise.resolve()
  }
}

const otelSdk = NodeSdk.layer(() => ({
  resource: { serviceName: "keel-bench" },
  spanProcessor: new BatchSpanProcessor(new DiscardingExporter())
}))

/** An OTLP receiver that reads and drops every export. */
const receiver = Http.createServer((req, res) => {
  req.resume()
  req.on("end", () => res.writeHead(200, { "content-type": "application/x-protobuf" }).end())
})
await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve))
const otlp = (protocol: "http/json" | "http/protobuf") =>
  Otlp.layer({
    endpoint: `http://127.0.0.1:${(receiver.address() as Net.AddressInfo).port}`,
    serviceName: "keel-bench",
    protocol
  }).pipe(Layer.provide(NodeHttpClient.layerUndici))

const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bench-telemetry-"))
const silentJsonLogger = Logger.replace(Logger.defaultLogger, Logger.map(Logger.jsonLogger, () => undefined))

const pipeline = <ROut>(observers: Layer.Layer<ROut, any>) =>
  Llm.layer().pipe(Layer.provide(Layer.mergeAll(model, OpenAiPricing.layer(), observers)))

const rows: ReadonlyArray<readonly [string, Layer.Layer<Llm.Llm, any>]> = [
  ["bare (no call log, spans and metrics off)", pipeline(Telemetry.layerDisabled)],
  ["+ metrics", pipeline(Telemetry.layer({ spans: false }))],
  ["+ metrics + spans, no tracer provided", pipeline(Telemetry.layer({}))],
  [
    "+ metrics + spans exported by Telemetry/Otlp, http/json (default)",
    Layer.merge(pipeline(Telemetry.layer({})), otlp("http/json"))
  ],
  [
    "+ metrics + spans exported by Telemetry/Otlp, http/json, spanSampling 0.1",
    Layer.merge(pipeline(Telemetry.layer({ spanSampling: 0.1 })), otlp("http/json"))
  ],
  [
    "+ metrics + spans exported by Telemetry/Otlp, http/protobuf",
    Layer.merge(pipeline(Telemetry.layer({})), otlp("http/protobuf"))
  ],
  ["+ metrics + spans via the OpenTelemetry SDK bridge (NodeSdk)", Layer.merge(pipeline(Telemetry.layer({})), otelSdk)],
  [
    "+ JSON-lines call log only",
    pipeline(Layer.merge(Telemetry.layerDisabled, JsonLines.layer({ path: Path.join(dir, "a.jsonl") })))
  ],
  [
    "+ logger call log only (JSON, output discarded)",
    Layer.merge(
      pipeline(Layer.merge(Telemetry.layerDisabled, CallLog.layer({ sinks: [CallLog.logger()] }))),
      silentJsonLogger
    )
  ],
  [
    "everything: metrics + OTLP (json) spans + JSON lines + logger",
    Layer.mergeAll(
      pipeline(
        Layer.merge(
          Telemetry.layer({}),
          CallLog.layer({ sinks: [JsonLines.sink(Path.join(dir, "b.jsonl")), CallLog.logger()] })
        )
      ),
      otlp("http/json"),
      silentJsonLogger
    )
  ]
]

const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

const main = async () => {
  const calls = Number(process.argv[2] ?? 2000)
  const rounds = Number(process.argv[3] ?? 5)
  const runtimes = rows.map(([name, layer]) => ({ name, runtime: ManagedRuntime.make(layer) }))
  const run = (runtime: ManagedRuntime.ManagedRuntime<Llm.Llm, any>, concurrency: number, n: number) =>
    runtime.runPromise(
      Effect.forEach(Array.from({ length: n }), () => Llm.generate(input), { concurrency, discard: true })
    )

  const results: Record<string, Record<number, Array<number>>> = {}
  for (const concurrency of [1, 64]) {
    for (const { runtime } of runtimes) await run(runtime, concurrency, Math.min(calls, 1000)) // warm-up
    for (let round = 0; round < rounds; round++) {
      for (const { name, runtime } of runtimes) {
        const before = process.cpuUsage()
        await run(runtime, concurrency, calls)
        const used = process.cpuUsage(before)
        ;((results[name] ??= {})[concurrency] ??= []).push((used.user + used.system) / calls)
      }
    }
  }
  for (const { runtime } of runtimes) await runtime.dispose()
  receiver.close()
  Fs.rmSync(dir, { recursive: true, force: true })

  const bare = rows[0]![0]
  const lines = [
    `| pipeline | µs CPU/call, c=1 | Δ vs bare | µs CPU/call, c=64 | Δ vs bare |`,
    `|---|---|---|---|---|`
  ]
  for (const [name] of rows) {
    const at1 = median(results[name]![1]!)
    const at64 = median(results[name]![64]!)
    const d1 = at1 - median(results[bare]![1]!)
    const d64 = at64 - median(results[bare]![64]!)
    lines.push(
      `| ${name} | ${at1.toFixed(1)} | ${name === bare ? "" : `${d1 >= 0 ? "+" : ""}${d1.toFixed(1)}`} | ${
        at64.toFixed(1)
      } | ${name === bare ? "" : `${d64 >= 0 ? "+" : ""}${d64.toFixed(1)}`} |`
    )
  }
  console.log(
    `Node ${process.version}, ${Os.cpus().length} × ${Os.cpus()[0]?.model.trim()}, ${calls} calls per round, ` +
      `median of ${rounds} rounds, ${new Date().toISOString().slice(0, 10)}\n`
  )
  console.log(lines.join("\n"))
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
