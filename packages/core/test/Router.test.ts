/**
 * The router from the outside, through the real pipeline: which tier and model a call goes to and
 * why (task rule, tier, heuristics, classifier, budget-aware downgrade), how it falls back along its
 * chain (context windows, the fallback model's budget, errors it never falls back on), what the call
 * record and the span say, and the configurations it refuses when the layer is built.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { assert, describe, it } from "@effect/vitest"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Budget from "../src/Budget.js"
import * as CallLog from "../src/CallLog.js"
import * as Llm from "../src/Llm.js"
import { AuthenticationFailed, ProviderUnavailable, RateLimited } from "../src/LlmError.js"
import type * as LlmRequest from "../src/LlmRequest.js"
import * as Money from "../src/Money.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as Router from "../src/Router.js"
import * as TestKit from "../src/TestKit.js"
import * as Tokenizer from "../src/Tokenizer.js"
import * as TestPrices from "./utils/prices.js"

const user = (content: string) => ({ role: "user" as const, content })

/** A tokenizer that counts every request as `tokens` input tokens. */
const fixedTokenizer = (tokens: number) =>
  Tokenizer.layer({ name: `fixed ${tokens}`, load: Effect.void, input: () => Effect.succeed(tokens) })

const classification = user("Classify the sentiment of this review as positive or negative: 'Arrived fast, works.'")

const reasoning = user(
  [
    "You are reviewing the design of a replicated key-value store. Think through it step by step.",
    "1. Analyse the failure modes of its replication protocol under partitions.",
    "2. Compare leader-based and leaderless replication and the trade-offs for this workload.",
    "3. Prove that the proposed read and write quorum sizes give linearizable reads.",
    "4. Finally, plan a migration from the current design that keeps the service available.",
    "Context:",
    ...Array.from(
      { length: 60 },
      (_, i) =>
        `Node ${i} holds shards ${i * 4}-${i * 4 + 3}, replicates to nodes ${(i + 1) % 60} and ${(i + 2) % 60}, ` +
        `and has seen ${i % 7} leader elections in the last week with a median failover of ${200 + i * 3} ms.`
    )
  ].join("\n")
)

/** A model answering every request with the model it was sent to, unless `fail` says otherwise. */
const answering = (
  fail: (request: LlmRequest.Resolved) => ProviderUnavailable | RateLimited | undefined = () => undefined
) =>
  TestKit.scripted([], {
    otherwise: (request) => {
      const error = fail(request)
      return error === undefined ? Effect.succeed(TestKit.response({ model: request.model })) : Effect.fail(error)
    }
  })

const oneAttempt = Layer.succeed(RetryPolicy.RetryPolicy, RetryPolicy.make({ maxAttempts: 1 }))

const pipeline = (
  model: TestKit.Scripted,
  router: Router.Options,
  extra: Layer.Layer<never> = Layer.empty
) => {
  const log = CallLog.memory()
  const layer = Llm.layer().pipe(
    Layer.provide(Layer.mergeAll(model.layer, log.layer, Router.layer(router), TestPrices.layer(), oneAttempt, extra))
  )
  return { log, layer }
}

describe("Router: choosing", () => {
  it.effect("a task declared simple goes to the simple tier; the record says why", () =>
    Effect.gen(function*() {
      const model = answering()
      const { layer, log } = pipeline(model, { tasks: { classify: "simple", report: "complex" } })
      yield* Llm.generate({ task: "classify", messages: [reasoning] }).pipe(Effect.provide(layer))
      yield* Llm.generate({ task: "report", messages: [classification] }).pipe(Effect.provide(layer))
      assert.deepStrictEqual(model.requests.map((request) => request.model), ["gpt-4o-mini", "gpt-4.1"])
      const [simple, complex] = log.records
      assert.strictEqual(simple!.tier, "simple")
      assert.strictEqual(simple!.task, "classify")
      assert.deepStrictEqual(simple!.route, { reason: `task "classify" → simple`, models: ["gpt-4o-mini"] })
      assert.strictEqual(complex!.tier, "complex")
      assert.strictEqual(complex!.model, "gpt-4.1")
    }))

  it.effect("the heuristics send a long multi-step reasoning prompt to the complex tier, a classification to the simple one", () =>
    Effect.gen(function*() {
      const model = answering()
      const { layer, log } = pipeline(model, {}, fixedTokenizer(2_600))
      yield* Llm.generate({ messages: [reasoning] }).pipe(Effect.provide(layer))
      assert.strictEqual(model.requests[0]!.model, "gpt-4.1")
      assert.strictEqual(log.records[0]!.tier, "complex")
      assert.strictEqual(
        log.records[0]!.route.reason,
        "heuristics: score 5 ≥ 2 (input 2,600 tokens; reasoning: step by step, prove, analyse, compare, reason, plan; 4 numbered steps)"
      )
      const short = pipeline(model, {}, fixedTokenizer(40))
      yield* Llm.generate({ messages: [classification] }).pipe(Effect.provide(short.layer))
      assert.strictEqual(model.requests[1]!.model, "gpt-4o-mini")
      assert.strictEqual(short.log.records[0]!.route.reason, "heuristics: score 0 < 2")
    }))

  it("the heuristics score tools, output size and code", () => {
    const tools = Array.from({ length: 8 }, (_, i) => ({ name: `tool_${i}`, parameters: {}, strict: true }))
    const assessed = Router.assess({
      messages: [user("Fix this:\n```ts\nconst f = () => {}\n```")],
      tools,
      maxOutputTokens: 8_000
    }, 10)
    assert.deepStrictEqual(assessed, { score: 5, signals: ["8 tools", "up to 8,000 output tokens", "code"] })
  })

  it.effect("a classifier overrides the heuristics; when it fails, the heuristics decide and the reason says so", () =>
    Effect.gen(function*() {
      const model = answering()
      const seen: Array<number> = []
      const { layer, log } = pipeline(model, {
        classifier: (_request, assessment) => {
          seen.push(assessment.score)
          return Effect.succeed({ tier: "complex", reason: "legal wording" })
        }
      })
      yield* Llm.generate({ messages: [classification] }).pipe(Effect.provide(layer))
      assert.strictEqual(model.requests[0]!.model, "gpt-4.1")
      assert.deepStrictEqual(seen, [0])
      assert.strictEqual(log.records[0]!.route.reason, "classifier → complex: legal wording")

      const broken = pipeline(model, { classifier: () => Effect.fail("classifier model down") })
      yield* Llm.generate({ messages: [classification] }).pipe(Effect.provide(broken.layer))
      assert.strictEqual(model.requests[1]!.model, "gpt-4o-mini")
      assert.strictEqual(broken.log.records[0]!.route.reason, "classifier did not decide; heuristics: score 0 < 2")

      const confused = pipeline(model, { classifier: () => Effect.succeed({ tier: "medium" }) })
      yield* Llm.generate({ messages: [classification] }).pipe(Effect.provide(confused.layer))
      assert.strictEqual(model.requests[2]!.model, "gpt-4o-mini")
    }))

  it.effect("a request's tier wins over its task; an unknown tier is InvalidRequest naming `tier`, nothing sent", () =>
    Effect.gen(function*() {
      const model = answering()
      const { layer } = pipeline(model, { tasks: { classify: "simple" } })
      yield* Llm.generate({ task: "classify", tier: "complex", messages: [classification] }).pipe(Effect.provide(layer))
      assert.strictEqual(model.requests[0]!.model, "gpt-4.1")
      const error = yield* Effect.flip(
        Llm.generate({ tier: "medium", messages: [classification] }).pipe(Effect.provide(layer))
      )
      assert.isTrue(error._tag === "InvalidRequest" && error.field === "tier")
      assert.match(error.message, /no tier "medium": the tiers are simple, complex/)
      assert.strictEqual(model.requests.length, 1)
    }))

  it.effect("a model named in the request keeps it and its place in a chain; a model in no chain has no fallback", () =>
    Effect.gen(function*() {
      const model = answering((request) =>
        request.model === "gpt-4.1" || request.model === "o4-mini"
          ? new ProviderUnavailable({ status: 503 })
          : undefined
      )
      const { layer, log } = pipeline(model, {})
      const response = yield* Llm.generate({ model: "gpt-4.1", messages: [classification] }).pipe(Effect.provide(layer))
      assert.strictEqual(response.model, "gpt-4o")
      assert.strictEqual(log.records[0]!.route.reason, "request")
      assert.deepStrictEqual(log.records[0]!.route.models, ["gpt-4.1", "gpt-4o"])
      const error = yield* Effect.flip(
        Llm.generate({ messages: [classification] }).pipe(Llm.withModel("o4-mini"), Effect.provide(layer))
      )
      assert.strictEqual(error._tag, "ProviderUnavailable")
      assert.deepStrictEqual(model.requests.map((request) => request.model), ["gpt-4.1", "gpt-4o", "o4-mini"])
      assert.deepStrictEqual(log.records[1]!.route, { reason: "withModel", models: ["o4-mini"] })
    }))

  it.effect("budget-aware downgrade: with less than the configured share left in the scope, complex routes down", () =>
    Effect.gen(function*() {
      const model = answering()
      const log = CallLog.memory()
      const layer = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(
          model.layer,
          log.layer,
          TestPrices.layer(),
          Router.layer({ tasks: { report: "complex" }, downgrade: { below: 0.2 } })
        )),
        Layer.provideMerge(Budget.layerMemory({
          limits: [{ scope: "tenant:low", limit: "1" }, { scope: "tenant:rich", limit: "1" }]
        }))
      )
      yield* Effect.gen(function*() {
        const spent = yield* Budget.reserve("tenant:low", Money.unsafeParse("0.85"))
        yield* Effect.flatMap(Budget.Budget, (budget) => budget.settle(spent, Money.unsafeParse("0.85")))
        yield* Llm.generate({ task: "report", scope: "tenant:low", messages: [classification] })
        yield* Llm.generate({ task: "report", scope: "tenant:rich", messages: [classification] })
      }).pipe(Effect.provide(layer))
      assert.deepStrictEqual(model.requests.map((request) => request.model), ["gpt-4o-mini", "gpt-4.1"])
      const [low, rich] = log.records
      assert.strictEqual(low!.tier, "simple")
      assert.strictEqual(
        low!.route.reason,
        `task "report" → complex; downgraded complex → simple: budget tenant:low has 15% left (below 20%)`
      )
      assert.strictEqual(rich!.tier, "complex")
      assert.strictEqual(rich!.route.reason, `task "report" → complex`)
    }))
})

describe("Router: falling back", () => {
  it.effect("a 10,000-token prompt skips an 8,000-token-window fallback with the reason, and takes the next", () =>
    Effect.gen(function*() {
      const model = answering((request) =>
        request.model === "gpt-4.1" ? new ProviderUnavailable({ status: 503 }) : undefined
      )
      const { layer, log } = pipeline(model, {
        tiers: { simple: { model: "gpt-4o-mini" }, complex: { model: "gpt-4.1", fallbacks: ["gpt-4o", "gpt-5"] } },
        models: { "gpt-4o": { contextWindow: 8_000 } }
      }, fixedTokenizer(10_000))
      const response = yield* Llm.generate({ tier: "complex", messages: [reasoning], maxOutputTokens: 500 }).pipe(
        Effect.provide(layer)
      )
      assert.strictEqual(response.model, "gpt-5")
      assert.deepStrictEqual(model.requests.map((request) => request.model), ["gpt-4.1", "gpt-5"])
      const record = log.records[0]!
      assert.strictEqual(record.model, "gpt-5")
      assert.deepStrictEqual(record.route.models, ["gpt-4.1", "gpt-5"])
      assert.deepStrictEqual(record.route.hops!.map((hop) => hop.model), ["gpt-4.1", "gpt-4o"])
      assert.strictEqual(
        record.route.hops![1]!.reason,
        "skipped: context window 8,000 tokens < 10,000 input + 500 output tokens"
      )
    }))

  it.effect("when no model of the chain can hold the prompt, InvalidRequest names every window and nothing is sent", () =>
    Effect.gen(function*() {
      const model = answering()
      const { layer } = pipeline(model, {
        models: { "gpt-4.1": { contextWindow: 8_000 }, "gpt-4o": { contextWindow: 8_000 } }
      }, fixedTokenizer(10_000))
      const error = yield* Effect.flip(
        Llm.generate({ tier: "complex", messages: [reasoning] }).pipe(Effect.provide(layer))
      )
      assert.isTrue(error._tag === "InvalidRequest" && error.field === "messages")
      assert.match(
        error.message,
        /no model of the chain can hold the request: gpt-4\.1 \(skipped: context window 8,000 tokens < 10,000 input tokens\); gpt-4o/
      )
      assert.strictEqual(model.requests.length, 0)
    }))

  it.effect("a scope without budget for the fallback's price gets BudgetExceeded, with nothing sent to the fallback", () =>
    Effect.gen(function*() {
      const model = answering((request) =>
        request.model === "gpt-4o-mini" ? new ProviderUnavailable({ status: 503 }) : undefined
      )
      const log = CallLog.memory()
      // 1,000 input and 1,000 output tokens: $0.00075 worst case on gpt-4o-mini, $0.01 on gpt-4.1.
      const layer = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(
          model.layer,
          log.layer,
          TestPrices.layer(),
          oneAttempt,
          fixedTokenizer(1_000),
          Router.layer({
            tiers: { simple: { model: "gpt-4o-mini", fallbacks: ["gpt-4.1"] }, complex: { model: "gpt-4.1" } }
          })
        )),
        Layer.provideMerge(Budget.layerMemory({ limits: [{ scope: "tenant:tight", limit: "0.005" }] }))
      )
      const { error, status } = yield* Effect.gen(function*() {
        const error = yield* Effect.flip(
          Llm.generate({ tier: "simple", scope: "tenant:tight", messages: [classification], maxOutputTokens: 1_000 })
        )
        const status = (yield* Budget.status("tenant:tight")).find((s) => s.scope === "tenant:tight")!
        return { error, status }
      }).pipe(Effect.provide(layer))
      assert.isTrue(error._tag === "BudgetExceeded" && error.model === "gpt-4.1" && error.requested === "0.01")
      assert.deepStrictEqual(model.requests.map((request) => request.model), ["gpt-4o-mini"])
      assert.deepStrictEqual([status.spent, status.reserved], [0n, 0n])
      assert.deepStrictEqual(log.records[0]!.route.models, ["gpt-4o-mini", "gpt-4.1"])
      assert.strictEqual(log.records[0]!.errorTag, "BudgetExceeded")
    }))

  it.effect("a 401 on the primary causes no failover", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([new AuthenticationFailed({ status: 401, model: "gpt-4.1" })], {
        otherwise: TestKit.response()
      })
      const { layer, log } = pipeline(model, {})
      const error = yield* Effect.flip(
        Llm.generate({ tier: "complex", messages: [classification] }).pipe(Effect.provide(layer))
      )
      assert.strictEqual(error._tag, "AuthenticationFailed")
      assert.deepStrictEqual(model.requests.map((request) => request.model), ["gpt-4.1"])
      assert.deepStrictEqual(log.records[0]!.route.models, ["gpt-4.1"])
      assert.isUndefined(log.records[0]!.route.hops)
    }))

  it.effect("a 429 that outlasts its retries moves the call on; the fallback's answer is decoded by generateObject", () =>
    Effect.gen(function*() {
      const model = TestKit.scripted([], {
        otherwise: (request) =>
          request.model === "gpt-4o-mini"
            ? Effect.fail(new RateLimited({ model: request.model }))
            : Effect.succeed(TestKit.response({ model: request.model, text: `{"label":"positive"}` }))
      })
      const { layer, log } = pipeline(model, {})
      const { Schema } = yield* Effect.promise(() => import("effect"))
      const label = yield* Llm.generateObject({
        schema: Schema.Struct({ label: Schema.Literal("positive", "negative") }),
        mode: "json_schema",
        tier: "simple",
        messages: [classification]
      }).pipe(Effect.provide(layer))
      assert.deepStrictEqual(label, { label: "positive" })
      assert.strictEqual(log.records[0]!.model, "gpt-4.1-mini")
      assert.match(log.records[0]!.route.hops![0]!.reason, /^RateLimited: Rate limited by the provider/)
    }))

  it.effect("the call span carries the models tried and each hop", () =>
    Effect.gen(function*() {
      const spans = new InMemorySpanExporter()
      const model = answering((request) =>
        request.model === "gpt-4.1" ? new ProviderUnavailable({ status: 503 }) : undefined
      )
      const { layer } = pipeline(model, {})
      const sdk = NodeSdk.layer(() => ({
        resource: { serviceName: "keel-test" },
        spanProcessor: new SimpleSpanProcessor(spans)
      }))
      const finished = yield* Effect.gen(function*() {
        yield* Llm.generate({ tier: "complex", messages: [classification] })
        return spans.getFinishedSpans()
      }).pipe(Effect.provide(Layer.merge(layer, sdk)))
      const call = finished.find((span) => span.name === "chat gpt-4.1")!
      // Effect hands array attributes to OpenTelemetry as JSON text.
      assert.deepStrictEqual(JSON.parse(call.attributes["keel.route.models"] as string), ["gpt-4.1", "gpt-4o"])
      assert.match(JSON.parse(call.attributes["keel.route.hops"] as string)[0], /^gpt-4\.1: ProviderUnavailable/)
      assert.strictEqual(call.attributes["keel.route.reason"], `tier "complex" named in the request`)
      assert.strictEqual(call.attributes["gen_ai.response.model"], "gpt-4o")
    }))

  it.effect("without a Router, the record has no route models (the pipeline behaves as before)", () =>
    Effect.gen(function*() {
      const model = answering()
      const log = CallLog.memory()
      yield* Llm.generate({ tier: "complex", messages: [classification] }).pipe(
        Effect.provide(
          Llm.layer({ defaultModel: "gpt-4o-mini" }).pipe(Layer.provide(Layer.merge(model.layer, log.layer)))
        )
      )
      assert.deepStrictEqual(log.records[0]!.route, { reason: "default" })
      assert.strictEqual(model.requests[0]!.model, "gpt-4o-mini")
    }))
})

describe("Router: bad configuration is rejected when the layer is built, naming the field", () => {
  const cases: Array<[string, Router.Options, string, RegExp]> = [
    [
      "a tier with no model",
      { tiers: { simple: { model: "" }, complex: { model: "gpt-4.1" } } },
      "tiers.simple.model",
      /a tier needs a model/
    ],
    [
      "a fallback cycle",
      { tiers: { simple: { model: "gpt-4o-mini" }, complex: { model: "gpt-4.1", fallbacks: ["gpt-4o", "gpt-4.1"] } } },
      "tiers.complex.fallbacks[1]",
      /"gpt-4\.1" is already in the chain gpt-4\.1 → gpt-4o: a fallback cycle/
    ],
    [
      "a task naming no tier",
      { tasks: { classify: "cheap" } },
      "tasks.classify",
      /no tier "cheap": the tiers are simple, complex/
    ],
    [
      "no complex tier for the heuristics",
      { tiers: { simple: { model: "gpt-4o-mini" } } },
      "heuristics.complexTier",
      /no tier "complex"/
    ],
    ["a downgrade share of 0", { downgrade: { below: 0 } }, "downgrade.below", /must be a share in \(0, 1\]/],
    ["a downgrade share above 1", { downgrade: { below: 1.2 } }, "downgrade.below", /must be a share in \(0, 1\]/],
    ["a zero context window", { models: { "gpt-4o": { contextWindow: 0 } } }, "models.gpt-4o.contextWindow", /above 0/],
    [
      "an unknown error to fall back on",
      { fallbackOn: ["Oops" as never] },
      "fallbackOn[0]",
      /"Oops" is not an LlmError tag/
    ],
    ["a zero threshold", { heuristics: { threshold: 0 } }, "heuristics.threshold", /must be a score above 0/]
  ]
  for (const [name, options, field, reason] of cases) {
    it.effect(name, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Layer.build(Router.layer(options)).pipe(Effect.scoped))
        assert.strictEqual(error._tag, "RouterConfigError")
        assert.strictEqual(error.field, field)
        assert.match(error.message, reason)
      }))
  }

  it.effect("with a Budget, a routed model without a price fails Llm.layer naming the field", () =>
    Effect.gen(function*() {
      const layer = Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(
          answering().layer,
          TestPrices.layer(),
          Budget.layerMemory(),
          Router.layer({
            tiers: { simple: { model: "gpt-4o-mini", fallbacks: ["mystery-1"] }, complex: { model: "gpt-4.1" } }
          })
        ))
      )
      const error = yield* Effect.flip(Layer.build(layer).pipe(Effect.scoped))
      assert.strictEqual(error._tag, "LlmConfigError")
      assert.match(
        error.message,
        /^Llm\.layer: router: tiers\.simple\.fallbacks\[0\]: model "mystery-1" has no price, so the Budget cannot reserve for it/
      )
      // Without a Budget, nothing needs reserving: the layer builds.
      yield* Layer.build(
        Llm.layer().pipe(
          Layer.provide(
            Layer.mergeAll(
              answering().layer,
              Router.layer({ tiers: { simple: { model: "mystery-1" }, complex: { model: "gpt-4.1" } } })
            )
          )
        )
      ).pipe(Effect.scoped)
    }))

  it.effect("layerConfig reads the options from Config", () =>
    Effect.gen(function*() {
      const { Config, ConfigProvider } = yield* Effect.promise(() => import("effect"))
      const router = yield* Router.Router.pipe(
        Effect.provide(Router.layerConfig({
          tiers: {
            simple: { model: Config.string("SIMPLE_MODEL") },
            complex: { model: Config.string("COMPLEX_MODEL") }
          }
        })),
        Effect.withConfigProvider(ConfigProvider.fromJson({ SIMPLE_MODEL: "gpt-4.1-nano", COMPLEX_MODEL: "o3" }))
      )
      assert.deepStrictEqual(Array.from(router.tiers), [["simple", ["gpt-4.1-nano"]], ["complex", ["o3"]]])
    }))
})
