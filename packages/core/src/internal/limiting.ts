/**
 * The rate-limit stage of `Llm`, at attempt level (the outermost there, so its waits are outside the
 * attempt's span and the budget's extension): each attempt is admitted by the `RateLimiter`, which knows
 * whether it retries an earlier one of its round, its tokens, and the call's deadline. A round only
 * notes where its attempts start and, the first time, when the call started.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { type LlmError, Timeout } from "../LlmError.js"
import type * as RateLimiter from "../RateLimiter.js"
import * as RetryPolicy from "../RetryPolicy.js"
import type * as Tokenizer from "../Tokenizer.js"
import type { Stage } from "./stage.js"

export interface Options {
  readonly limiter: RateLimiter.RateLimiter.Service
  readonly tokenizer: Tokenizer.Tokenizer.Service
  readonly policy: RetryPolicy.RetryPolicy.Service
}

interface Progress {
  readonly startedAt: number
  attemptsBefore: number
  lastError: LlmError | undefined
}

export const make = ({ limiter, policy, tokenizer }: Options): Stage => {
  const calls = new WeakMap<object, Progress>()
  return {
    name: limiter.description,
    round: (state, self) =>
      Effect.clockWith((clock) => {
        const progress = calls.get(state)
        if (progress === undefined) {
          calls.set(state, {
            startedAt: clock.unsafeCurrentTimeMillis(),
            attemptsBefore: state.attempts,
            lastError: undefined
          })
        } else progress.attemptsBefore = state.attempts
        return self
      }),
    attempt: (state, self) =>
      Effect.flatMap(RetryPolicy.current(policy), (policy) => {
        const progress = calls.get(state)!
        const request = state.request
        return limiter.admit(
          {
            model: request.model,
            retry: state.attempts > progress.attemptsBefore,
            tokens: Effect.map(tokenizer.input(request), (input) => input + (request.maxOutputTokens ?? 0)),
            deadlineAt: progress.startedAt + Duration.toMillis(policy.deadline),
            onDeadline: () =>
              progress.lastError ??
                new Timeout({ model: request.model, after: policy.deadline, level: "call" })
          },
          Effect.tapError(self, (error) =>
            Effect.sync(() => {
              progress.lastError = error
            }))
        )
      })
  }
}
