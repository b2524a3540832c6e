/**
 * keel as the CPU benchmarks run it (bench/overhead.ts's keel contenders, bench/stages.ts's
 * configurations): the production stages' layers, each with the same settings in both, and the call
 * they make. Imported by a child process only when it is one of keel's, after its memory at start-up
 * is taken.
 */
import * as Budget from "@keel/core/Budget"
import * as CallLog from "@keel/core/CallLog"
import * as JsonLines from "@keel/core/CallLog/JsonLines"
import * as CircuitBreaker from "@keel/core/CircuitBreaker"
import type * as LanguageModel from "@keel/core/LanguageModel"
import * as Llm from "@keel/core/Llm"
import * as RateLimiter from "@keel/core/RateLimiter"
import * as Router from "@keel/core/Router"
import * as Tool from "@keel/core/Tool"
import * as OpenAiPricing from "@keel/openai/OpenAiPricing"
import * as OpenAiTokenizer from "@keel/openai/OpenAiTokenizer"
import * as Layer from "effect/Layer"
import { listing, systemPrompt } from "../fixtures.js"
import { Score } from "./score.js"

export const MODEL = "gpt-4.1-mini"
export const MAX_OUTPUT = 400

/** The production pipeline's stages, by name; `callLog` is the JSON-lines file the call log writes. */
export const stageLayers = (callLog: string) => ({
  router: Router.layer({ tiers: { simple: { model: MODEL }, complex: { model: "gpt-4.1" } } }),
  pricing: OpenAiPricing.layer(),
  tokenizer: OpenAiTokenizer.layer,
  budget: Budget.layerMemory({ limits: [{ scope: "tenant:acme", limit: "1000000" }] }),
  breaker: CircuitBreaker.layer(),
  limiter: RateLimiter.layerMemory({ limits: { requestsPerMinute: 10_000_000 } }),
  callLog: CallLog.layer({ sinks: [JsonLines.sink(callLog)] })
})
export type Stage = keyof ReturnType<typeof stageLayers>

/** Every stage: the production pipeline. */
export const productionStages: ReadonlyArray<Stage> = [
  "router",
  "pricing",
  "tokenizer",
  "budget",
  "breaker",
  "limiter",
  "callLog"
]

/** `Llm.layer` over the model, with the stages named. */
export const pipeline = <E>(
  model: Layer.Layer<LanguageModel.LanguageModel, E>,
  stages: ReadonlyArray<Stage>,
  callLog: string
) => {
  const layers = stageLayers(callLog)
  return Llm.layer({ defaultModel: MODEL }).pipe(
    Layer.provide(Layer.mergeAll(model, ...stages.map((stage) => layers[stage])))
  )
}

const ScoreTool = Tool.make("score_listing", { description: "Score a listing", parameters: Score })

/** The benchmarks' call: a strict tool call scoring a job listing. */
export const scoreListing = Llm.generateObject({
  schema: ScoreTool,
  scope: "tenant:acme/run:bench",
  messages: [{ role: "system", content: systemPrompt }, { role: "user", content: listing }],
  maxOutputTokens: MAX_OUTPUT
})
