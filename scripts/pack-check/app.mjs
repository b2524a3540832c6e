// The scratch app of scripts/pack-check.sh: plain node on the packed @keel/core and @keel/openai,
// with the app's own copy of effect. One structured call against the simulator; exits non-zero on failure.
import * as Llm from "@keel/core/Llm"
import * as OpenAiClient from "@keel/openai/OpenAiClient"
import * as OpenAiLanguageModel from "@keel/openai/OpenAiLanguageModel"
import * as Simulator from "@keel/openai/Simulator"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"

const Answer = Schema.Struct({ score: Schema.Int.pipe(Schema.between(0, 100)) })

const Model = Layer.unwrapEffect(
  Effect.map(Simulator.Simulator, (simulator) =>
    OpenAiLanguageModel.layer().pipe(
      Layer.provide(OpenAiClient.layerUndici({ apiKey: Redacted.make("sk-pack-check"), baseUrl: simulator.url }))
    ))
).pipe(Layer.provide(Simulator.layer({ seed: 1 })))

const program = Llm.generateObject({
  schema: Answer,
  messages: [{ role: "user", content: "Score this listing from 0 to 100: staff engineer, remote" }],
  maxOutputTokens: 50
}).pipe(Effect.provide(Llm.layer({ defaultModel: "gpt-4.1-mini" }).pipe(Layer.provide(Model))))

const answer = await Effect.runPromise(program)
if (!Schema.is(Answer)(answer)) throw new Error(`pack-check: the call returned ${JSON.stringify(answer)}`)
console.log(`pack-check: one call against the simulator answered ${JSON.stringify(answer)}`)
