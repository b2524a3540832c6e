/**
 * When and how long to wait before retrying a model call. The policy is a `Schedule` value (the
 * delays) plus a predicate (`isRetryable`: whether an error may be retried at all), kept apart.
 *
 * Defaults, and why:
 * - Retries are bounded by time, not by a count: a retryable failure is retried until the call's
 *   deadline (3 min), so a 2 s outage or a saturated rate limit costs latency, not a failed call.
 *   (The official openai SDK gives up after 3 attempts, the Vercel AI SDK after 3: measured against
 *   a 3,000 requests/min limit, both fail most of 2,000 calls; see `BENCHMARKS.md`.) What bounds the
 *   extra load is the `RateLimiter` layer's retry budget and admission gate, not the policy.
 * - Attempts that may have been billed without an answer (a timeout, a cut or unreadable answer:
 *   `LlmError.mayHaveBeenBilled`) end the call at the 4th: each may cost a whole attempt.
 *   `maxAttempts` bounds every attempt when an app wants a count.
 * - Exponential backoff from 500 ms, doubling, capped at 20 s, with **full jitter**: each delay is
 *   uniform in [0, min(cap, base·2ⁿ)]. Full jitter spreads clients that failed together, so a
 *   rate-limited API is not hit by the whole herd again at one instant. (openai-node takes at most a
 *   quarter off its delay, so retries still cluster; the Vercel AI SDK waits exactly 2 s then 4 s.)
 * - A provider hint (`retry-after-ms`, then `retry-after`) is a floor, and the jitter goes **above**
 *   it: the wait is the hint plus the jittered backoff, so fibers given the same `retry-after: 1` do
 *   not all wake at the same instant, and none wakes early. A hint above `maxRetryAfter` (60 s) fails
 *   at once with the `RateLimited` that holds it, rather than sleeping for an hour inside a request;
 *   the caller decides. Without jitter ("none") the wait is max(backoff, hint).
 * - Each attempt times out after 60 s (a hang becomes a retryable `Timeout`); the whole call,
 *   retries included, after 3 min, measured from the call's start by both `retry` and the schedule.
 *   No wait is started that would end at or past the deadline: the last real error stands instead.
 *   (The schedule used alone, outside `retry`, measures from the first failure it sees.)
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as Interval from "effect/ScheduleInterval"
import * as LlmError from "./LlmError.js"

/** How delays are randomised. "full": U[0, d]; "equal": d/2 + U[0, d/2]; "decorrelated": min(cap, U[base, 3·previous]); "none": d. */
export type Jitter = "full" | "equal" | "decorrelated" | "none"

export interface Options {
  /** Attempts in all, the first included. Default: no count, retries run until the deadline. */
  readonly maxAttempts?: number
  /**
   * Attempts that may have been billed without an answer (`LlmError.mayHaveBeenBilled`: timed out, cut,
   * unreadable) after which the call ends. Default 4.
   */
  readonly maxUnansweredAttempts?: number
  /** The first backoff step. Default 500 ms. */
  readonly base?: Duration.DurationInput
  /** No backoff delay exceeds this (a provider hint may). Default 20 s. */
  readonly cap?: Duration.DurationInput
  /** Default "full". */
  readonly jitter?: Jitter
  /** A provider hint longer than this fails at once instead of waiting. Default 60 s. */
  readonly maxRetryAfter?: Duration.DurationInput
  /** Each attempt's limit; a slower attempt fails with a retryable `Timeout`. Default 60 s. */
  readonly attemptTimeout?: Duration.DurationInput
  /** The whole call's limit, retries and waits included. Default 3 min. */
  readonly deadline?: Duration.DurationInput
  /** Which errors may be retried. Default: the error's own `retryable`. */
  readonly isRetryable?: (error: LlmError.LlmError) => boolean
}

/**
 * The policy `Llm` takes when its layer is built (provide it to `Llm.layer`; the default when none is).
 * `withPolicy` overrides it for the effects it wraps.
 */
export class RetryPolicy extends Context.Reference<RetryPolicy>()("@keel/core/RetryPolicy", {
  defaultValue: () => make()
}) {}

/** When the call being retried started (epoch ms), set by `retry`, so the schedule's deadline counts from it. */
class CallStart extends Context.Reference<CallStart>()("@keel/core/RetryPolicy/CallStart", {
  defaultValue: (): number | undefined => undefined
}) {}

/** The policy set by `withPolicy` for the effects it wraps, over the one a pipeline was built with. */
class Override extends Context.Reference<Override>()("@keel/core/RetryPolicy/Override", {
  defaultValue: (): RetryPolicy.Service | undefined => undefined
}) {}

export declare namespace RetryPolicy {
  export interface Service {
    /** Delays between attempts, fed with each failure; it stops on attempts, hint ceiling and deadline. */
    readonly schedule: Schedule.Schedule<Duration.Duration, LlmError.LlmError>
    readonly isRetryable: (error: LlmError.LlmError) => boolean
    readonly attemptTimeout: Duration.Duration
    readonly deadline: Duration.Duration
    /** One line saying what the policy does, for logs. */
    readonly description: string
  }
}

/**
 * The schedule of delays alone, for use with `Effect.retry` or anywhere a `Schedule` fits. Under `retry`
 * its deadline counts from the call's start; used alone, from the first failure it is fed.
 */
export const schedule = (options: Options = {}): Schedule.Schedule<Duration.Duration, LlmError.LlmError> => {
  const maxAttempts = options.maxAttempts ?? Infinity
  const maxUnanswered = options.maxUnansweredAttempts ?? 4
  const base = Duration.toMillis(options.base ?? Duration.millis(500))
  const cap = Duration.toMillis(options.cap ?? Duration.seconds(20))
  const jitter = options.jitter ?? "full"
  const maxRetryAfter = Duration.toMillis(options.maxRetryAfter ?? Duration.seconds(60))
  const deadline = Duration.toMillis(options.deadline ?? Duration.minutes(3))

  const backoff = (retry: number, previous: number): Effect.Effect<number> => {
    const ceiling = Math.min(cap, base * 2 ** retry)
    switch (jitter) {
      case "none":
        return Effect.succeed(ceiling)
      case "full":
        return Effect.map(Random.next, (u) => u * ceiling)
      case "equal":
        return Effect.map(Random.next, (u) => ceiling / 2 + (u * ceiling) / 2)
      case "decorrelated":
        return Effect.map(Random.next, (u) => Math.min(cap, base + u * (previous * 3 - base)))
    }
  }

  type State = {
    readonly retries: number
    readonly unanswered: number
    readonly previous: number
    readonly start: number | undefined
  }
  const done = (state: State) => Effect.succeed([state, Duration.zero, ScheduleDecision.done] as const)

  return Schedule.makeWithState<State, LlmError.LlmError, Duration.Duration>(
    { retries: 0, unanswered: 0, previous: base, start: undefined },
    (now, error, state) =>
      Effect.flatMap(CallStart, (callStart) => {
        const start = state.start ?? callStart ?? now
        const unanswered = state.unanswered + (LlmError.mayHaveBeenBilled(error) ? 1 : 0)
        if (state.retries + 1 >= maxAttempts || unanswered >= maxUnanswered) return done(state)
        const hint = LlmError.retryAfter(error)
        const hintMillis = hint === undefined ? 0 : Duration.toMillis(hint)
        if (hintMillis > maxRetryAfter) return done(state)
        return Effect.flatMap(backoff(state.retries, state.previous), (delay) => {
          // Jitter goes above a hint, never below it: fibers given the same hint wake spread out.
          const wait = hintMillis === 0 ? delay : jitter === "none" ? Math.max(delay, hintMillis) : hintMillis + delay
          if (now + wait - start >= deadline) return done(state)
          return Effect.succeed(
            [
              { retries: state.retries + 1, unanswered, previous: delay, start },
              Duration.millis(wait),
              ScheduleDecision.continueWith(Interval.after(now + wait))
            ] as const
          )
        })
      })
  )
}

/** Builds a policy; every option has a documented default (see the module header). */
export const make = (options: Options = {}): RetryPolicy.Service => {
  const attemptTimeout = Duration.decode(options.attemptTimeout ?? Duration.seconds(60))
  const deadline = Duration.decode(options.deadline ?? Duration.minutes(3))
  return {
    schedule: schedule(options),
    isRetryable: options.isRetryable ?? LlmError.isRetryable,
    attemptTimeout,
    deadline,
    description: `${
      options.maxAttempts === undefined ? "retries until the deadline" : `${options.maxAttempts} attempts`
    }, ${options.jitter ?? "full"} jitter from ${
      Duration.format(Duration.decode(options.base ?? Duration.millis(500)))
    }, attempt timeout ${Duration.format(attemptTimeout)}, deadline ${Duration.format(deadline)}`
  }
}

/**
 * The limit on one attempt, handed to it by `retry`: the attempt must stop and fail with
 * `onTimeout()` once `millis` have passed. It is the per-attempt timeout or what is left of the
 * call's deadline, whichever is sooner.
 */
export interface AttemptTimeout {
  readonly millis: number
  readonly onTimeout: () => LlmError.Timeout
}

/**
 * Runs attempts under a policy: the one set by `withPolicy` around the call, else `options.policy`
 * (a pipeline's own), else the `RetryPolicy` in context. Retryable errors are retried on the
 * schedule, each attempt given its `AttemptTimeout`. An attempt that cannot time itself out (a
 * provider without a timer of its own) wraps itself in `within`.
 */
export const retry = <A, R>(
  attempt: (timeout: AttemptTimeout) => Effect.Effect<A, LlmError.LlmError, R>,
  options?: { readonly model?: string | undefined; readonly policy?: RetryPolicy.Service | undefined }
): Effect.Effect<A, LlmError.LlmError, R> =>
  Effect.flatMap(current(options?.policy), (policy) => run(attempt, policy, options?.model))

/** The policy in force: the one set by `withPolicy`, else `policy`, else the `RetryPolicy` in context. */
export const current = (policy?: RetryPolicy.Service | undefined): Effect.Effect<RetryPolicy.Service> =>
  Effect.flatMap(Override, (override) =>
    override !== undefined
      ? Effect.succeed(override)
      : policy !== undefined
      ? Effect.succeed(policy)
      : RetryPolicy)

const run = <A, R>(
  attempt: (timeout: AttemptTimeout) => Effect.Effect<A, LlmError.LlmError, R>,
  policy: RetryPolicy.Service,
  model: string | undefined
): Effect.Effect<A, LlmError.LlmError, R> =>
  Effect.clockWith((clock) => {
    const start = clock.unsafeCurrentTimeMillis()
    const perAttempt = Duration.toMillis(policy.attemptTimeout)
    const deadlineAt = start + Duration.toMillis(policy.deadline)
    const callTimeout = () => new LlmError.Timeout({ model, after: policy.deadline, level: "call" })
    const attemptTimeout: AttemptTimeout = {
      millis: perAttempt,
      onTimeout: () => new LlmError.Timeout({ model, after: policy.attemptTimeout, level: "attempt" })
    }
    const bounded = Effect.suspend(() => {
      const left = deadlineAt - clock.unsafeCurrentTimeMillis()
      if (left <= 0) return Effect.fail(callTimeout())
      return attempt(left < perAttempt ? { millis: left, onTimeout: callTimeout } : attemptTimeout)
    })
    // The schedule's driver is built at the first retryable failure: the success path pays nothing for it.
    const retryAfter = (first: LlmError.LlmError) =>
      Effect.flatMap(Schedule.driver(policy.schedule), (driver) => {
        const next = (error: LlmError.LlmError): Effect.Effect<A, LlmError.LlmError, R> =>
          Effect.matchEffect(Effect.provideService(driver.next(error), CallStart, start), {
            onFailure: () => Effect.fail(error), // the schedule is done: the last error stands
            onSuccess: () => Effect.catchIf(bounded, policy.isRetryable, next)
          })
        return next(first)
      })
    return Effect.catchIf(bounded, policy.isRetryable, retryAfter)
  })

/** Bounds an effect by an `AttemptTimeout`, for providers without a timer of their own. */
export const within = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  timeout: AttemptTimeout
): Effect.Effect<A, E | LlmError.Timeout, R> =>
  Effect.timeoutFail(self, { duration: Duration.millis(timeout.millis), onTimeout: timeout.onTimeout })

/** Runs an effect with the given policy in force, over the one any pipeline in it was built with. */
export const withPolicy: {
  (policy: RetryPolicy.Service): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, policy: RetryPolicy.Service): Effect.Effect<A, E, R>
} = dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, policy: RetryPolicy.Service) => Effect.provideService(self, Override, policy)
)
