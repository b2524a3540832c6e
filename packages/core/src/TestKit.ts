/**
 * Deterministic testing for code that calls models: a scripted `LanguageModel` (a queue of answers
 * and errors that records every request it saw), built through the real `LanguageModel.make`, and
 * a helper that runs an effect to completion under `TestClock`, so backoff, hints and deadlines
 * play out without real sleeping.
 */
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import * as LanguageModel from "./LanguageModel.js"
import * as LlmError from "./LlmError.js"
import type * as LlmRequest from "./LlmRequest.js"
import type { LlmResponse } from "./LlmResponse.js"
import type { Usage } from "./Usage.js"

/** One scripted attempt: an answer, an error, or a function of the request (for delays, hangs, echoes). */
export type Step =
  | LlmResponse
  | LlmError.LlmError
  | ((request: LlmRequest.Resolved, attempt: number) => Effect.Effect<LlmResponse, LlmError.LlmError>)

export interface Scripted {
  /** The port, to provide as `LanguageModel`. */
  readonly model: LanguageModel.LanguageModel.Service
  readonly layer: Layer.Layer<LanguageModel.LanguageModel>
  /** Every request received, in order: one per attempt. */
  readonly requests: ReadonlyArray<LlmRequest.Resolved>
}

/**
 * A model that answers each attempt with the next step; when the steps run out it answers with
 * `otherwise` (default: a defect naming the exhausted script, since the test expected fewer calls).
 */
export const scripted = (
  steps: Iterable<Step>,
  options: { readonly otherwise?: Step; readonly provider?: string } = {}
): Scripted => {
  const queue = Array.from(steps)
  const requests: Array<LlmRequest.Resolved> = []
  let next = 0
  const run = (step: Step, request: LlmRequest.Resolved, attempt: number) =>
    typeof step === "function"
      ? step(request, attempt)
      : LlmError.isLlmError(step)
      ? Effect.fail(step)
      : Effect.succeed(step)
  const model = LanguageModel.make({
    provider: options.provider ?? "scripted",
    complete: (request) =>
      Effect.suspend(() => {
        const attempt = requests.push(request)
        const step = next < queue.length ? queue[next++] : options.otherwise
        return step === undefined
          ? Effect.dieMessage(`TestKit.scripted: the script ran out after ${queue.length} steps`)
          : run(step, request, attempt)
      })
  })
  return { model, layer: Layer.succeed(LanguageModel.LanguageModel, model), requests }
}

/** A step that never answers: the per-attempt timeout has to end it. */
export const hang: Step = () => Effect.never

/** A step that answers after `delay` (virtual time under `TestClock`). */
export const delayed = (delay: Duration.DurationInput, step: LlmResponse | LlmError.LlmError): Step => () =>
  Effect.delay(LlmError.isLlmError(step) ? Effect.fail(step) : Effect.succeed(step), delay)

/** A successful answer with sensible defaults: text "ok", finish "stop", 10 input and 5 output tokens. */
export const response = (
  fields: Partial<Omit<LlmResponse, "usage">> & { readonly usage?: Partial<Usage> } = {}
): LlmResponse => {
  const { usage, ...rest } = fields
  return {
    id: "chatcmpl-test",
    model: "test-model",
    text: "ok",
    toolCalls: [],
    finishReason: "stop",
    ...rest,
    usage: { inputTokens: 10, cachedInputTokens: 0, outputTokens: 5, reasoningTokens: 0, ...usage }
  }
}

/** Lets real I/O (a module import, a socket) progress for a few milliseconds of real time. */
const realPause = Effect.async<void>((resume) => {
  const timer = setTimeout(() => resume(Effect.void), 5)
  return Effect.sync(() => clearTimeout(timer))
})

/**
 * Runs `self` to completion under `TestClock`: whenever every fiber is suspended, virtual time jumps
 * to the next pending sleep, so an hour of backoff takes no real time. When nothing sleeps, real I/O
 * gets up to two seconds to move things along; after that, or past `limit` of virtual time, it fails
 * with a defect (the effect waits on something time will not bring). With many fibers sleeping to
 * scattered instants, `step` moves time at least that far per jump (fewer, coarser jumps; each sleep
 * still ends at its own instant).
 */
export const runWithTestClock = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  options: { readonly limit?: Duration.DurationInput; readonly step?: Duration.DurationInput } = {}
): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    const limit = Duration.toMillis(options.limit ?? Duration.days(1))
    const step = Duration.toMillis(options.step ?? Duration.zero)
    const start = yield* TestClock.currentTimeMillis
    const fiber = yield* Effect.fork(self)
    let idle = 0
    while (Option.isNone(yield* Fiber.poll(fiber))) {
      yield* TestClock.adjust(0) // waits until every fiber is done or suspended
      if (Option.isSome(yield* Fiber.poll(fiber))) break
      const pending = yield* TestClock.sleeps()
      const next = Chunk.reduce(pending, Infinity, (min, at) => Math.min(min, at))
      if (next === Infinity && idle++ < 400) {
        yield* realPause
        continue
      }
      if (next === Infinity || next - start > limit) {
        yield* Fiber.interrupt(fiber)
        return yield* Effect.dieMessage(
          next === Infinity
            ? "TestKit.runWithTestClock: the effect waits on something other than time"
            : `TestKit.runWithTestClock: still running after ${Duration.format(limit)} of virtual time`
        )
      }
      idle = 0
      const now = yield* TestClock.currentTimeMillis
      // An absolute whole millisecond: adjusting by the difference of two fractional times can fall
      // short of a sleep's wake time by a rounding error and never wake it.
      yield* TestClock.setTime(Math.ceil(Math.max(next, now + step)))
    }
    return yield* Fiber.join(fiber)
  })
