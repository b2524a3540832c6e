import * as Clock from "effect/Clock"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Llm from "../../src/Llm.js"
import * as LlmError from "../../src/LlmError.js"
import * as RetryPolicy from "../../src/RetryPolicy.js"
import * as TestKit from "../../src/TestKit.js"

/** A step that records the time (virtual ms) at which each attempt reached the model, then plays `step`. */
export const recordingTimes = (times: Array<number>, step: TestKit.Step): TestKit.Step => (request, attempt) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    times.push(now)
    return typeof step === "function"
      ? step(request, attempt)
      : LlmError.isLlmError(step)
      ? Effect.fail(step)
      : Effect.succeed(step)
  })

/** Runs `effect` through the pipeline over a scripted model, under `policy`, in virtual time. */
export const runUnderPolicy = <A, E>(
  effect: Effect.Effect<A, E, Llm.Llm>,
  model: TestKit.Scripted,
  policy: RetryPolicy.Options = {},
  clock: { readonly step?: Duration.DurationInput } = {}
) =>
  effect.pipe(
    RetryPolicy.withPolicy(RetryPolicy.make(policy)),
    Effect.provide(Llm.layer()),
    Effect.provide(model.layer),
    (self) => TestKit.runWithTestClock(self, clock)
  )
