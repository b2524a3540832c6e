/**
 * The model the examples call: keel's OpenAI-compatible simulator, started in this process on
 * 127.0.0.1, behind the real OpenAI client. With a real key, use `OpenAiClient.layerConfigUndici`.
 */
import * as OpenAiClient from "@keel/openai/OpenAiClient"
import * as OpenAiLanguageModel from "@keel/openai/OpenAiLanguageModel"
import * as Simulator from "@keel/openai/Simulator"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"

export const simulatedModel = (options: Simulator.Options = {}) =>
  Layer.unwrapEffect(
    Effect.map(Simulator.Simulator, (simulator) =>
      OpenAiLanguageModel.layer().pipe(
        Layer.provide(OpenAiClient.layerUndici({ apiKey: Redacted.make("sk-simulated"), baseUrl: simulator.url }))
      ))
  ).pipe(Layer.provide(Simulator.layer(options)))
