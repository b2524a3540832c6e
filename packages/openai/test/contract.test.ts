/**
 * Contract: every request shape the OpenAI client can build is sent to Stoplight Prism serving
 * OpenAI's own OpenAPI spec (`test/fixtures/openai-openapi/openapi.patched.json`, a copy kept in the repository), which answers 422
 * `application/problem+json` listing each violation. Zero violations allowed. Files and Batches too: the
 * multipart upload of a batch input file, batch create (with metadata), retrieve, cancel and list (with `after`).
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as HttpClient from "@effect/platform/HttpClient"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { LanguageModel } from "@keel/core/LanguageModel"
import type * as LlmRequest from "@keel/core/LlmRequest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as OpenAiBatch from "../src/OpenAiBatch.js"
import * as OpenAiClient from "../src/OpenAiClient.js"
import * as OpenAiLanguageModel from "../src/OpenAiLanguageModel.js"

const repoRoot = Path.resolve(import.meta.dirname, "..", "..", "..")
const spec = Path.join(import.meta.dirname, "fixtures", "openai-openapi", "openapi.patched.json")
const prismBin = Path.join(repoRoot, "node_modules", ".bin", "prism")

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resolve(port))
    })
  })

let prism: ChildProcess | undefined
let baseUrl = ""
let output = ""

beforeAll(async () => {
  assert.isTrue(Fs.existsSync(spec), `the OpenAPI spec is missing at ${spec}`)
  const port = await freePort()
  baseUrl = `http://127.0.0.1:${port}`
  // Its own process group, so that afterAll ends Prism and anything it started, and nothing else.
  prism = spawn(prismBin, ["mock", "-h", "127.0.0.1", "-p", String(port), spec], {
    detached: true,
    stdio: ["ignore", "pipe", "pipe"]
  })
  prism.stdout!.on("data", (chunk) => (output = (output + String(chunk)).slice(-4000)))
  prism.stderr!.on("data", (chunk) => (output = (output + String(chunk)).slice(-4000)))
  const deadline = Date.now() + 100_000
  while (Date.now() < deadline) {
    if (prism.exitCode !== null) throw new Error(`Prism exited (${prism.exitCode}):\n${output}`)
    const up = await fetch(`${baseUrl}/models`, { headers: { authorization: "Bearer sk-contract" } }).then(
      () => true,
      () => false
    )
    if (up) return
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  throw new Error(`Prism did not answer within 100 s:\n${output}`)
}, 120_000)

afterAll(() => {
  if (prism?.pid !== undefined && prism.exitCode === null) process.kill(-prism.pid, "SIGTERM")
})

/** The problem+json bodies Prism answered with, by request model name. */
const violations = new Map<string, string>()

const recording = Layer.effect(
  HttpClient.HttpClient,
  Effect.map(HttpClient.HttpClient, (client) =>
    HttpClient.tap(client, (response) =>
      response.status >= 400
        ? Effect.orElseSucceed(
          Effect.map(response.text, (text) => violations.set(`${response.request.url} ${response.status}`, text)),
          () => undefined
        )
        : Effect.void))
).pipe(Layer.provide(NodeHttpClient.layerUndici))

const model = () =>
  OpenAiLanguageModel.layer().pipe(
    Layer.provide(OpenAiClient.layer({ apiKey: Redacted.make("sk-contract-test"), baseUrl })),
    Layer.provide(recording)
  )

const strictSchema = {
  type: "object",
  properties: {
    title: { type: "string", description: "Job title" },
    seniority: { type: "string", enum: ["junior", "mid", "senior"] },
    salary: { anyOf: [{ type: "number", minimum: 0 }, { type: "null" }] },
    skills: { type: "array", items: { type: "string" }, maxItems: 10 },
    location: { $ref: "#/$defs/location" }
  },
  required: ["title", "seniority", "salary", "skills", "location"],
  additionalProperties: false,
  $defs: {
    location: {
      type: "object",
      properties: { city: { type: ["string", "null"] }, remote: { type: "boolean" } },
      required: ["city", "remote"],
      additionalProperties: false
    }
  }
}

const user: LlmRequest.Message = { role: "user", content: "Score this listing: Senior Go engineer, Oslo." }
const tools: ReadonlyArray<LlmRequest.ToolDefinition> = [
  { name: "score_listing", description: "Record the score of a listing", parameters: strictSchema, strict: true },
  { name: "lookup-company_2", parameters: { type: "object", properties: {} }, strict: false }
]

/** Every shape the client can build, named. */
const shapes: ReadonlyArray<readonly [string, LlmRequest.Resolved]> = [
  ["plain text", { model: "gpt-4.1-mini", messages: [user] }],
  ["every role", {
    model: "gpt-4.1-mini",
    messages: [
      { role: "system", content: "You score job listings." },
      { role: "developer", content: "Always call score_listing." },
      { role: "user", content: "Listing 1", name: "pipeline" },
      {
        role: "assistant",
        toolCalls: [
          { id: "call_1", name: "score_listing", arguments: "{\"title\":\"x\"}" },
          { id: "call_2", name: "lookup-company_2", arguments: "{}" }
        ]
      },
      { role: "tool", toolCallId: "call_1", content: "{\"ok\":true}" },
      { role: "tool", toolCallId: "call_2", content: "Acme" },
      { role: "assistant", content: "Scored." },
      {
        role: "assistant",
        content: "Also this.",
        toolCalls: [{ id: "call_3", name: "score_listing", arguments: "{}" }]
      },
      { role: "tool", toolCallId: "call_3", content: "done" },
      { role: "assistant", refusal: "I can't help with that." },
      user
    ],
    tools
  }],
  ["strict tools, no choice", { model: "gpt-4.1-mini", messages: [user], tools }],
  ...(["auto", "none", "required"] as const).map((choice) =>
    [`tool choice ${choice}`, { model: "gpt-4.1-mini", messages: [user], tools, toolChoice: choice }] as const
  ),
  ["tool choice by name", {
    model: "gpt-4.1-mini",
    messages: [user],
    tools,
    toolChoice: { tool: "score_listing" }
  }],
  ["json_schema format, strict, described", {
    model: "gpt-4.1-mini",
    messages: [user],
    responseFormat: {
      _tag: "json_schema",
      name: "listing_score",
      description: "The score",
      schema: strictSchema,
      strict: true
    }
  }],
  ["json_schema format, not strict", {
    model: "gpt-4.1-mini",
    messages: [user],
    responseFormat: { _tag: "json_schema", name: "loose", schema: { type: "object" }, strict: false }
  }],
  ["json_object format", { model: "gpt-4.1-mini", messages: [user], responseFormat: { _tag: "json_object" } }],
  ["text format", { model: "gpt-4.1-mini", messages: [user], responseFormat: { _tag: "text" } }],
  ["limits and sampling", {
    model: "o4-mini",
    messages: [user],
    maxOutputTokens: 1,
    temperature: 0,
    seed: -42
  }],
  ["upper bounds", {
    model: "gpt-4.1",
    messages: [user],
    maxOutputTokens: 128_000,
    temperature: 2,
    seed: 9_007_199_254_740_991
  }],
  ["metadata", {
    model: "gpt-4.1-mini",
    messages: [user],
    metadata: { task: "score", "tenant-id": "acme", run: "2026-11-29T05:00Z" }
  }],
  ["everything at once", {
    model: "gpt-4.1-mini",
    messages: [{ role: "system", content: "s" }, user],
    tools,
    toolChoice: "required",
    responseFormat: { _tag: "json_schema", name: "listing_score", schema: strictSchema, strict: true },
    maxOutputTokens: 500,
    temperature: 0.3,
    seed: 1,
    metadata: { task: "score" },
    task: "score",
    tier: "simple",
    scope: "tenant:acme/run:1"
  }]
]

describe("contract: requests against OpenAI's OpenAPI spec (Prism)", () => {
  for (const [name, request] of shapes) {
    it.effect(name, () =>
      Effect.gen(function*() {
        violations.clear()
        const result = yield* Effect.either(
          Effect.flatMap(LanguageModel, (lm) => lm.complete(request)).pipe(Effect.provide(model()))
        )
        const problems = [...violations.values()].join("\n")
        assert.strictEqual(problems, "", `Prism reported violations for "${name}"`)
        assert(result._tag === "Right", result._tag === "Left" ? result.left.message : "")
        assert.strictEqual(result.right.usage.inputTokens, 0)
      }))
  }

  it.effect("the undici transport (layerUndici) sends the same accepted request", () =>
    Effect.gen(function*() {
      for (const [name, request] of shapes) {
        const result = yield* Effect.either(
          Effect.flatMap(LanguageModel, (lm) => lm.complete(request)).pipe(
            Effect.provide(
              OpenAiLanguageModel.layer().pipe(
                Layer.provide(OpenAiClient.layerUndici({ apiKey: Redacted.make("sk-contract-test"), baseUrl }))
              )
            )
          )
        )
        assert(result._tag === "Right", `${name}: ${result._tag === "Left" ? result.left.message : ""}`)
      }
    }))

  it.effect("the check has teeth: a request that breaks the spec is rejected", () =>
    Effect.gen(function*() {
      violations.clear()
      const error = yield* Effect.flip(
        Effect.flatMap(LanguageModel, (lm) => lm.complete({ model: "gpt-4.1-mini", messages: [user], temperature: 5 }))
          .pipe(Effect.provide(model()))
      )
      assert.strictEqual(error._tag, "InvalidRequest")
      assert.include([...violations.values()].join("\n"), "temperature")
      // Prism's problem+json is not OpenAI's error shape: its violations still reach the error, not just "HTTP 422"
      assert.include(error.message, "temperature")
      assert.notInclude(error.message, "HTTP 422")
    }))

  it.effect("listModels (GET /models through the client's HttpClient) decodes the spec's answer, on both transports", () =>
    Effect.gen(function*() {
      const options = { apiKey: Redacted.make("sk-contract-test"), baseUrl }
      for (
        const layer of [
          OpenAiClient.layer(options).pipe(Layer.provide(recording)),
          OpenAiClient.layerUndici(options)
        ]
      ) {
        violations.clear()
        const models = yield* OpenAiClient.listModels.pipe(Effect.provide(layer))
        assert.strictEqual([...violations.values()].join("\n"), "")
        assert.isAbove(models.length, 0)
        for (const m of models) assert.isString(m.id)
      }
    }))
})

describe("contract: Files and Batches requests against OpenAI's OpenAPI spec (Prism)", () => {
  const options = () => ({ apiKey: Redacted.make("sk-contract-test"), baseUrl })
  const clients = () =>
    [
      ["HttpClient (layer)", OpenAiClient.layer(options()).pipe(Layer.provide(recording))],
      ["undici (layerUndici)", OpenAiClient.layerUndici(options())]
    ] as const

  /** Runs `f` with a client on each transport; Prism must report nothing. */
  const onBothTransports = <A>(f: (client: OpenAiClient.OpenAiClient["Type"]) => Effect.Effect<A, unknown>) =>
    Effect.gen(function*() {
      for (const [name, layer] of clients()) {
        violations.clear()
        const result = yield* Effect.either(Effect.flatMap(OpenAiClient.OpenAiClient, f).pipe(Effect.provide(layer)))
        assert.strictEqual([...violations.values()].join("\n"), "", `Prism reported violations (${name})`)
        assert(result._tag === "Right", `${name}: ${result._tag === "Left" ? String(result.left) : ""}`)
      }
    })

  it.effect("file upload: multipart/form-data with purpose batch and a JSONL file of the request builder's lines", () =>
    onBothTransports((client) =>
      Effect.gen(function*() {
        const content = shapes.slice(0, 3).map(([name, request]) =>
          JSON.stringify({
            custom_id: name,
            method: "POST",
            url: OpenAiBatch.endpoint,
            body: OpenAiLanguageModel.toWire(request)
          })
        ).join("\n") + "\n"
        const file = yield* client.uploadFile({ content, filename: "keel-batch.jsonl", purpose: "batch" })
        assert.isString(file.id)
      })
    ))

  it.effect("the check has teeth for multipart: a purpose outside the spec's enum is rejected", () =>
    Effect.gen(function*() {
      violations.clear()
      const error = yield* Effect.flip(
        Effect.flatMap(
          OpenAiClient.OpenAiClient,
          (client) => client.uploadFile({ content: "{}\n", filename: "x.jsonl", purpose: "nonsense" as "batch" })
        ).pipe(Effect.provide(OpenAiClient.layer(options()).pipe(Layer.provide(recording))))
      )
      assert.strictEqual(error._tag, "InvalidRequest")
      assert.include([...violations.values()].join("\n"), "purpose")
    }))

  it.effect("batch create (with metadata), retrieve, cancel and list (with after and limit)", () =>
    onBothTransports((client) =>
      Effect.gen(function*() {
        const created = yield* client.createBatch({
          input_file_id: "file-abc123",
          endpoint: OpenAiBatch.endpoint,
          completion_window: "24h",
          metadata: { run: "2026-11-29T05:00Z", chunk: "0" }
        })
        assert.isString(created.id)
        yield* client.retrieveBatch("batch_abc123")
        yield* client.cancelBatch("batch_abc123")
        const page = yield* client.listBatches({ after: "batch_abc123", limit: 100 })
        assert.isArray(page.data)
        yield* client.listBatches()
      })
    ))

  it.effect("file content and delete", () =>
    onBothTransports((client) =>
      Effect.gen(function*() {
        yield* Stream.runDrain(client.fileContent("file-abc123"))
        yield* client.deleteFile("file-abc123")
      })
    ))
})
