/**
 * Integration: 1,000 calls through the whole pipeline (budget → retry → OpenAiLanguageModel → undici →
 * the simulator over real HTTP on 127.0.0.1) with 20% of attempts spoiled by every kind of fault, and
 * the call log writing to memory, a JSON-lines file and Sentry (an envelope receiver on 127.0.0.1).
 * Exactly one record per call; every line decodes; the records' cost sums to the budget ledger's and
 * their tokens to what the provider answered; only failed calls reach Sentry, without key or prompt.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Budget from "@keel/core/Budget"
import * as CallLog from "@keel/core/CallLog"
import * as JsonLines from "@keel/core/CallLog/JsonLines"
import * as Sentry from "@keel/core/CallLog/Sentry"
import * as CallRecord from "@keel/core/CallRecord"
import * as LanguageModel from "@keel/core/LanguageModel"
import * as Llm from "@keel/core/Llm"
import type * as LlmRequest from "@keel/core/LlmRequest"
import * as Money from "@keel/core/Money"
import * as RetryPolicy from "@keel/core/RetryPolicy"
import * as Usage from "@keel/core/Usage"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Fs from "node:fs"
import * as Http from "node:http"
import type * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Zlib from "node:zlib"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../src/OpenAiLanguageModel.js"
import * as OpenAiPricing from "../src/OpenAiPricing.js"
import * as Simulator from "../src/Simulator.js"
import { fakeKey } from "./utils/fakeKey.js"
import { everyFault, fastPolicy, scoreTool } from "./utils/faultRun.js"

const CALLS = 1_000
const apiKey = fakeKey("calllog-0123456789abcdefghijklmnop")
const promptPrefix = "Score listing number"

/** 20% of attempts in all, spread over every fault kind. */
const faults = everyFault(0.2)

/** A Sentry envelope receiver on 127.0.0.1 keeping every body. */
const envelopeReceiver = Effect.acquireRelease(
  Effect.async<{ readonly server: Http.Server; readonly bodies: Array<string> }>((resume) => {
    const bodies: Array<string> = []
    const server = Http.createServer((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => chunks.push(chunk))
      req.on("end", () => {
        const raw = Buffer.concat(chunks)
        bodies.push((req.headers["content-encoding"] === "gzip" ? Zlib.gunzipSync(raw) : raw).toString("utf8"))
        res.writeHead(200).end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, bodies })))
  }),
  ({ server }) =>
    Effect.async<void>((resume) => {
      server.closeAllConnections()
      server.close(() => resume(Effect.void))
    })
)

/** Tokens of every answer the provider gave, counted at the port: the independent tally. */
let answered: Usage.Usage = Usage.empty
const tallying = Layer.effect(
  LanguageModel.LanguageModel,
  Effect.map(OpenAiLanguageModel.make(), (inner) =>
    LanguageModel.make({
      provider: inner.provider,
      timesOut: true,
      complete: (request, timeout) =>
        Effect.tap(inner.complete(request, timeout), (response) =>
          Effect.sync(() => {
            answered = Usage.add(answered, response.usage)
          }))
    }))
)

const request = (i: number): LlmRequest.Input => ({
  messages: [{ role: "user", content: `${promptPrefix} ${i}` }],
  tools: [scoreTool],
  toolChoice: { tool: "score" },
  maxOutputTokens: 300,
  scope: "run:calllog"
})

describe("CallLog over the simulator", () => {
  it.live(
    "1,000 calls with 20% faults: one record per call, every line decodes, sums match the ledger, Sentry gets failures only",
    () =>
      Effect.gen(function*() {
        answered = Usage.empty
        const receiver = yield* envelopeReceiver
        const dsn = Redacted.make(`http://public@127.0.0.1:${(receiver.server.address() as Net.AddressInfo).port}/1`)
        const path = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-calllog-sim-")), "calls.jsonl")
        const memory = CallLog.memory()
        const callLog = CallLog.layer({
          sinks: [memory.sink, JsonLines.sink(path), Sentry.sink({ dsn })],
          content: true
        })

        const stack = Layer.unwrapEffect(
          Effect.map(Simulator.Simulator, (simulator) =>
            Llm.layer({ defaultModel: "gpt-4.1-mini" }).pipe(
              Layer.provide(Layer.mergeAll(tallying, callLog)),
              Layer.provide(OpenAiClient.layerUndici({ apiKey: Redacted.make(apiKey), baseUrl: simulator.url })),
              Layer.provideMerge(Layer.merge(Budget.layerMemory(), OpenAiPricing.layer()))
            ))
        ).pipe(Layer.provideMerge(Simulator.layer({ seed: 11, apiKey, faults, retryAfterMs: 5 })))

        const { exits, ledger, stats } = yield* Effect.gen(function*() {
          const exits = yield* Effect.forEach(
            Array.from({ length: CALLS }, (_, i) => i),
            (i) => Effect.exit(Llm.generate(request(i))),
            { concurrency: 32 }
          )
          const ledger = yield* Budget.status("run:calllog")
          const stats = yield* Effect.flatMap(Simulator.Simulator, (s) => s.stats)
          return { exits, ledger, stats }
        }).pipe(RetryPolicy.withPolicy(fastPolicy), Effect.provide(stack))

        // Exactly one record per call, and the outcomes agree with the calls' exits.
        const records = memory.records
        assert.strictEqual(records.length, CALLS)
        assert.strictEqual(new Set(records.map((r) => r.callId)).size, CALLS)
        const tally = (list: ReadonlyArray<string>) => {
          const counts: Record<string, number> = {}
          for (const key of list) counts[key] = (counts[key] ?? 0) + 1
          return counts
        }
        assert.deepStrictEqual(
          tally(records.map((r) => r.outcome === "ok" ? "ok" : r.errorTag!)),
          tally(exits.map((exit) =>
            Exit.isSuccess(exit) ? "ok" : Exit.isFailure(exit) && exit.cause._tag === "Fail"
              ? exit.cause.error._tag
              : "other"
          ))
        )
        const failedCalls = records.filter((r) => r.outcome === "error").length
        assert.isAbove(failedCalls, 0)
        assert.isAbove(records.filter((r) => r.attempts > 1).length, 0, "some calls were retried")
        assert.isAbove(stats.requests, CALLS, "more attempts than calls")

        // Every line of the file decodes with the CallRecord Schema, and the file holds what memory holds.
        const lines = Fs.readFileSync(path, "utf8").trimEnd().split("\n")
        assert.strictEqual(lines.length, CALLS)
        const decoded = lines.map((line) => CallRecord.decodeUnknownSync(JSON.parse(line)))
        assert.deepStrictEqual(decoded.map((r) => r.callId).sort(), records.map((r) => r.callId).sort())

        // Tokens: the records' sums equal what the provider answered; cost: the ledger's spend, exactly.
        const sum = (field: "inputTokens" | "cachedInputTokens" | "outputTokens" | "reasoningTokens") =>
          decoded.reduce((n, r) => n + r[field], 0)
        assert.strictEqual(sum("inputTokens"), answered.inputTokens)
        assert.strictEqual(sum("cachedInputTokens"), answered.cachedInputTokens)
        assert.strictEqual(sum("outputTokens"), answered.outputTokens)
        assert.strictEqual(sum("reasoningTokens"), answered.reasoningTokens)
        const recordedCost = Money.sum(decoded.map((r) => Either.getOrThrow(Money.parse(r.costUsd!))))
        const total = ledger.find((s) => s.scope === "run:calllog" && s.window === "total")!
        assert.isAbove(Number(recordedCost), 0)
        assert.strictEqual(recordedCost, total.spent)
        assert.strictEqual(total.reserved, 0n)

        // Sentry: one event per failed call (retried attempts are not events), with the tags; no key, no prompt.
        const events = receiver.bodies.filter((body) => body.includes("\"type\":\"event\""))
        assert.strictEqual(events.length, failedCalls)
        for (const body of receiver.bodies) {
          assert.notInclude(body, apiKey)
          assert.notInclude(body, promptPrefix)
        }
        const event = JSON.parse(events[0]!.split("\n")[2]!)
        assert.hasAllKeys(event.tags, ["model", "errorTag", "promptHash", "scope", "provider"])
        assert.strictEqual(event.tags.scope, "run:calllog")
        assert.strictEqual(event.tags.provider, "openai")
        console.log(
          `calllog: ${CALLS} calls, ${stats.requests} attempts, ${failedCalls} failed ${
            JSON.stringify(tally(records.filter((r) => r.outcome === "error").map((r) => r.errorTag!)))
          }, ${records.filter((r) => r.estimated).length} with estimated cost; $${Money.format(recordedCost)} in all`
        )
        // The file has the prompt (content opted in) but never the key.
        assert.notInclude(Fs.readFileSync(path, "utf8"), apiKey)
        assert.include(lines[0]!, promptPrefix)
      }).pipe(Effect.scoped),
    120_000
  )
})
