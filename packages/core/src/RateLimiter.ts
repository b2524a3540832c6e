/**
 * Client-side admission per model, at the attempt level of `Llm`: requests/min, tokens/min (estimated
 * with the `Tokenizer` before an attempt, corrected with the billed usage after) and a concurrency cap,
 * plus a retry budget and slow start. Provide a layer of it to `Llm.layer` and every attempt passes
 * through it.
 *
 * It learns from the provider. Until a model's limits are known (configured, or read from the
 * `x-ratelimit-*` snapshot of an answer) its attempts go one at a time; then they are paced to 97% of
 * the limit, evenly: the requests bucket holds 10 ms of that rate, not a minute's worth, so the calls
 * held while a limit was learned or an outage lasted go out at the rate, not at once; and the attempts
 * whose slots fell due while the process stalled are spaced again when they wake. Every snapshot brings the local bucket down to what the provider says remains, and every
 * 429 empties it and pauses the model for the hint, so one fiber's 429 slows every fiber on that model.
 *
 * Retry budget: retries to a model may add at most `retryBudget` (20%) of its first attempts over the
 * last 10 s, plus `minRetriesPerSecond`. Past that the model is taken as down: its attempts wait in an
 * admission queue, and a retryable failure that cannot have been billed waits there again instead of
 * retrying; one probe goes out per `probeInterval`. When a probe succeeds, admission ramps back up (slow
 * start) from `slowStartRate` per second, doubling every 100 ms, to the model's known rate (halving on a
 * failure and then growing linearly), until the queue is empty. No wait runs past the call's deadline:
 * the call's last real error (or a call `Timeout`) ends it instead.
 *
 * The requests and tokens buckets are token buckets (see `internal/tokenBuckets`): in process memory
 * (`layerMemory`), or `@effect/experimental`'s `RateLimiter` over a shared `RateLimiterStore` such as
 * Redis (`layer` with `RateLimiter/Redis`) so several processes share one provider quota. Learned
 * limits, pauses, the retry budget and the admission queue are per process. When the shared store
 * fails, the limiter keeps limiting in process memory and logs it once (and once when the store
 * answers again).
 */
import type * as ExperimentalLimiter from "@effect/experimental/RateLimiter"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Gate from "./Gate.js"
import * as TokenBuckets from "./internal/tokenBuckets.js"
import * as LlmError from "./LlmError.js"
import type { LlmResponse, RateLimitSnapshot } from "./LlmResponse.js"

export class RateLimiter extends Context.Tag("@keel/core/RateLimiter")<RateLimiter, RateLimiter.Service>() {}

/** Limits of one model; an unset one is learned from the provider's headers, or does not bind. */
export interface ModelLimits {
  readonly requestsPerMinute?: number
  readonly tokensPerMinute?: number
  /** Attempts in flight at once, in this process. */
  readonly maxConcurrent?: number
}

export interface Options {
  /** Limits for every model (each model has its own buckets). */
  readonly limits?: ModelLimits
  /** Limits for named models, instead of `limits`. */
  readonly limitsByModel?: Readonly<Record<string, ModelLimits>>
  /** The share of a model's recent first attempts that retries may add, in (0, 1]. Default 0.2. */
  readonly retryBudget?: number
  /** Retries per second always allowed on top of the share, so a quiet model can still retry. Default 10. */
  readonly minRetriesPerSecond?: number
  /** While a model is down, one probe per this interval. Default 200 ms. */
  readonly probeInterval?: Duration.DurationInput
  /** Admissions per second when a model comes back, doubling every 100 ms. Default 20. */
  readonly slowStartRate?: number
  /** Prefix of the store's keys. Default "keel:ratelimit:". */
  readonly prefix?: string
}

/** Where a model stands. */
export type Phase = "learning" | "open" | "down" | "recovering"

/** What the limiter knows about a model, for logs and tests. */
export interface ModelState {
  readonly phase: Phase
  /** The requests/min paced to (configured, or 97% of the learned limit), when known. */
  readonly requestsPerMinute: number | undefined
  readonly tokensPerMinute: number | undefined
  /** Epoch ms until which the model is paused after a 429; 0 when it never was. */
  readonly pausedUntil: number
  /** Attempts waiting in the admission queue. */
  readonly waiting: number
  /** Admissions per second while recovering. */
  readonly rate: number | undefined
}

export declare namespace RateLimiter {
  export interface Service {
    /** Runs one attempt once it is admitted, and learns from its outcome. */
    readonly admit: (
      attempt: Attempt,
      self: Effect.Effect<LlmResponse, LlmError.LlmError>
    ) => Effect.Effect<LlmResponse, LlmError.LlmError>
    readonly state: (model: string) => Effect.Effect<ModelState>
    /** Named in the line `Llm` logs when it is built. */
    readonly description: string
  }

  export interface Attempt {
    readonly model: string
    /** Whether this attempt retries an earlier one of the same round. */
    readonly retry: boolean
    /** The attempt's tokens for tokens/min: input plus the output allowance (read only when a tokens limit applies). */
    readonly tokens: Effect.Effect<number>
    /** Epoch ms of the call's deadline: no wait runs past it. */
    readonly deadlineAt: number
    /** The error that ends the call when no wait fits: its last real error, or a call `Timeout`. */
    readonly onDeadline: () => LlmError.LlmError
  }
}

/** A limiter option that cannot work, found when the layer is built. */
export class RateLimiterConfigError extends Schema.TaggedError<RateLimiterConfigError>(
  "@keel/core/RateLimiter/RateLimiterConfigError"
)("RateLimiterConfigError", { field: Schema.String, reason: Schema.String }) {
  override get message() {
    return `RateLimiter: ${this.field}: ${this.reason}`
  }
}

/** Pacing stays this far under a learned limit, so clock skew and in-flight requests do not earn a 429. */
const HEADROOM = 0.97
/** The requests bucket's burst: this many ms of the paced rate (see `requestsBucket`). */
const REQUESTS_BURST_MS = 10
const BUDGET_SLOTS = 10
const SLOT_MS = 1_000
const TICK_MS = 10
/** Health failures in a row that send a recovering model back down. */
const DOWN_AGAIN_AFTER = 5

const validate = (options: Options): RateLimiterConfigError | undefined => {
  const positive = (field: string, value: number | undefined) =>
    value !== undefined && !(Number.isFinite(value) && value > 0)
      ? new RateLimiterConfigError({ field, reason: `must be a positive number, got ${value}` })
      : undefined
  const limits = (prefix: string, l: ModelLimits | undefined) =>
    l === undefined ? undefined : positive(`${prefix}.requestsPerMinute`, l.requestsPerMinute) ??
      positive(`${prefix}.tokensPerMinute`, l.tokensPerMinute) ??
      (l.maxConcurrent !== undefined && !(Number.isInteger(l.maxConcurrent) && l.maxConcurrent > 0)
        ? new RateLimiterConfigError({
          field: `${prefix}.maxConcurrent`,
          reason: `must be a positive whole number, got ${l.maxConcurrent}`
        })
        : undefined)
  if (options.retryBudget !== undefined && !(options.retryBudget > 0 && options.retryBudget <= 1)) {
    return new RateLimiterConfigError({
      field: "retryBudget",
      reason: `is a share of recent requests and must be in (0, 1], got ${options.retryBudget}`
    })
  }
  if (
    options.minRetriesPerSecond !== undefined &&
    !(Number.isFinite(options.minRetriesPerSecond) && options.minRetriesPerSecond >= 0)
  ) {
    return new RateLimiterConfigError({
      field: "minRetriesPerSecond",
      reason: `must be zero or more, got ${options.minRetriesPerSecond}`
    })
  }
  const probe = options.probeInterval === undefined
    ? undefined
    : Duration.decodeUnknown(options.probeInterval)
  if (options.probeInterval !== undefined && (probe?._tag !== "Some" || Duration.toMillis(probe.value) <= 0)) {
    return new RateLimiterConfigError({ field: "probeInterval", reason: "must be a positive duration" })
  }
  return positive("slowStartRate", options.slowStartRate) ?? limits("limits", options.limits) ??
    Object.entries(options.limitsByModel ?? {}).reduce<RateLimiterConfigError | undefined>(
      (found, [model, l]) => found ?? limits(`limitsByModel.${model}`, l),
      undefined
    )
}

/** The provider failed to serve (not the request's fault), so admission should slow down. */
const isHealthFailure = (error: LlmError.LlmError): boolean =>
  error.retryable &&
  (error._tag === "ProviderUnavailable" || (error._tag === "Transport" && error.afterResponse !== true) ||
    (error._tag === "Timeout" && error.level === "attempt"))

/** Fails with `onDeadline()` if `self` would run past `deadlineAt`. */
const beforeDeadline = <A>(
  self: Effect.Effect<A, LlmError.LlmError>,
  attempt: RateLimiter.Attempt
): Effect.Effect<A, LlmError.LlmError> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const left = attempt.deadlineAt - now
    if (left <= 0) return Effect.fail(attempt.onDeadline())
    return Effect.timeoutFail(self, { duration: Duration.millis(left), onTimeout: attempt.onDeadline })
  })

/**
 * The limiter over the `RateLimiterStore` in context (memory, or shared): buckets in the store, the rest
 * in this process. Fails with `RateLimiterConfigError` naming a field that cannot work.
 */
export const make = (
  options: Options = {}
): Effect.Effect<
  RateLimiter.Service,
  RateLimiterConfigError,
  ExperimentalLimiter.RateLimiterStore | Scope.Scope
> => Effect.flatMap(TokenBuckets.shared, (buckets) => makeWith(options, buckets))

/** A limiter for one process, its buckets in memory. Fails with `RateLimiterConfigError` naming a field that cannot work. */
export const makeMemory = (
  options: Options = {}
): Effect.Effect<RateLimiter.Service, RateLimiterConfigError, Scope.Scope> =>
  Effect.suspend(() => makeWith(options, TokenBuckets.memory()))

const makeWith = (
  options: Options,
  buckets: TokenBuckets.Buckets
): Effect.Effect<RateLimiter.Service, RateLimiterConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const invalid = validate(options)
    if (invalid !== undefined) return yield* invalid
    const share = options.retryBudget ?? 0.2
    const minRetries = (options.minRetriesPerSecond ?? 10) * (BUDGET_SLOTS * SLOT_MS / 1000)
    const probeMs = Duration.toMillis(options.probeInterval ?? Duration.millis(200))
    const slowStartRate = options.slowStartRate ?? 20
    const prefix = options.prefix ?? "keel:ratelimit:"
    const scope = yield* Effect.scope

    const models = new Map<string, Model>()

    class Model {
      readonly configured: ModelLimits
      readonly requestsKey: string
      readonly tokensKey: string
      learnedRequests: number | undefined = undefined
      learnedTokens: number | undefined = undefined
      /** An answer came without a snapshot: the provider sends none, so nothing more is to be learned first. */
      headerless = false
      learning = false
      readonly learners: Array<Deferred.Deferred<void>> = []
      pausedUntil = 0
      /** The earliest time (epoch ms) the next attempt may be sent, by this process's spacing. */
      nextSend = 0
      /** The pace's virtual time: when the next attempt may go out, by the times attempts were sent. */
      sentClock = 0
      /** The earliest time for the next attempt the pace refused when it woke. */
      nextLate = 0
      /** `maxConcurrent`: a first-come gate, as thousands of calls may wait at it (see `Gate`). */
      readonly gate: Gate.Gate | undefined
      phase: "open" | "down" | "recovering" = "open"
      readonly queue: Array<Deferred.Deferred<void>> = []
      pacing = false
      rate = 0
      congested = false
      /** Health failures since the last answer. */
      streak = 0
      readonly firstAttempts = new Array<number>(BUDGET_SLOTS).fill(0)
      readonly retries = new Array<number>(BUDGET_SLOTS).fill(0)
      slot = 0

      constructor(readonly name: string) {
        this.configured = options.limitsByModel?.[name] ?? options.limits ?? {}
        this.requestsKey = `${prefix}${name}:requests`
        this.tokensKey = `${prefix}${name}:tokens`
        this.gate = this.configured.maxConcurrent === undefined
          ? undefined
          : Gate.unsafeMake(this.configured.maxConcurrent)
      }

      get requestsPerMinute(): number | undefined {
        return min(this.configured.requestsPerMinute, paced(this.learnedRequests))
      }
      get tokensPerMinute(): number | undefined {
        return min(this.configured.tokensPerMinute, paced(this.learnedTokens))
      }
      get known(): boolean {
        return this.headerless || this.requestsPerMinute !== undefined || this.tokensPerMinute !== undefined
      }

      /**
       * When an attempt that has its slot in the requests bucket goes out. Attempts whose slots fell due
       * while the process stalled (a long GC, a busy loop) wake together; spaced again here from when they
       * wake, one interval of the paced rate apart, they go out at the rate instead of at once. Up to
       * `REQUESTS_BURST_MS` of lateness is absorbed (the bucket's own burst); slots missed beyond it are
       * not made up.
       */
      sendTime(now: number, perMinute: number): number {
        const at = Math.max(this.nextSend, now - REQUESTS_BURST_MS)
        this.nextSend = at + 60_000 / perMinute
        return at
      }

      /**
       * Sends now if the pace allows it, counted by when attempts actually go out (a GCRA: `sentClock` is
       * the pace's virtual time, `REQUESTS_BURST_MS` its burst), so attempts waking together after a stall
       * go out at the rate, however their slots were handed out.
       */
      send(now: number, perMinute: number): boolean {
        const due = Math.max(this.sentClock, now)
        if (due - now > REQUESTS_BURST_MS) return false
        this.sentClock = due + 60_000 / perMinute
        return true
      }

      /** The next place in the line of attempts the pace refused when they woke. */
      lateTime(perMinute: number): number {
        const at = Math.max(this.nextLate, this.sentClock - REQUESTS_BURST_MS)
        this.nextLate = at + 60_000 / perMinute
        return at
      }

      /** Moves the budget's window to `now`, emptying slots that fell out of it. */
      advance(now: number) {
        const slot = Math.floor(now / SLOT_MS)
        for (let s = Math.max(this.slot + 1, slot - BUDGET_SLOTS + 1); s <= slot; s++) {
          this.firstAttempts[s % BUDGET_SLOTS] = 0
          this.retries[s % BUDGET_SLOTS] = 0
        }
        this.slot = Math.max(this.slot, slot)
      }
      /** Counts an attempt; false when it is a retry past the budget. */
      count(now: number, retry: boolean): boolean {
        this.advance(now)
        const index = this.slot % BUDGET_SLOTS
        if (!retry) {
          this.firstAttempts[index]!++
          return true
        }
        const firsts = this.firstAttempts.reduce((a, b) => a + b, 0)
        const retries = this.retries.reduce((a, b) => a + b, 0)
        if (retries + 1 > share * firsts + minRetries) return false
        this.retries[index]!++
        return true
      }
      resetBudget() {
        this.firstAttempts.fill(0)
        this.retries.fill(0)
      }
    }

    const model = (name: string) => {
      let found = models.get(name)
      if (found === undefined) {
        found = new Model(name)
        models.set(name, found)
      }
      return found
    }

    /** The releasing loop of a model's admission queue: probes while down, a growing rate while recovering. */
    const pace = (m: Model): Effect.Effect<void> =>
      Effect.gen(function*() {
        let allowance = 0
        while (m.queue.length > 0 && m.phase !== "open") {
          if (m.phase === "down") {
            yield* Deferred.succeed(m.queue.shift()!, void 0)
            yield* Effect.sleep(Duration.millis(probeMs))
            continue
          }
          allowance = Math.min(allowance + (m.rate * TICK_MS) / 1000, Math.max(1, m.rate * 0.1))
          while (allowance >= 1 && m.queue.length > 0) {
            allowance--
            yield* Deferred.succeed(m.queue.shift()!, void 0)
          }
          yield* Effect.sleep(Duration.millis(TICK_MS))
          const ceiling = m.requestsPerMinute === undefined ? Infinity : m.requestsPerMinute / 60
          m.rate = Math.min(
            ceiling,
            m.congested ? m.rate + slowStartRate * (TICK_MS / 100) : m.rate * 2 ** (TICK_MS / 100)
          )
        }
        if (m.phase === "recovering") {
          m.phase = "open"
          m.resetBudget()
          yield* Effect.logInfo(`RateLimiter: ${m.name} is open again`)
        }
        for (const waiter of m.queue.splice(0)) yield* Deferred.succeed(waiter, void 0)
        m.pacing = false
      })

    /** Waits for a place in the admission queue while the model is down or recovering. */
    const enqueue = (m: Model, attempt: RateLimiter.Attempt): Effect.Effect<void, LlmError.LlmError> =>
      Effect.suspend(() => {
        if (m.phase === "open") return Effect.void
        const waiter = Deferred.unsafeMake<void>(undefined as never)
        m.queue.push(waiter)
        const start = m.pacing ? Effect.void : Effect.asVoid(Effect.forkIn(pace(m), scope))
        m.pacing = true
        return Effect.zipRight(
          start,
          beforeDeadline(Deferred.await(waiter), attempt).pipe(
            Effect.onExit((exit) =>
              Exit.isSuccess(exit) ? Effect.void : Effect.sync(() => {
                const index = m.queue.indexOf(waiter)
                if (index >= 0) m.queue.splice(index, 1)
              })
            )
          )
        )
      })

    /** While a model's limits are unknown, one attempt at a time learns them. */
    const learn = (m: Model, attempt: RateLimiter.Attempt): Effect.Effect<boolean, LlmError.LlmError> =>
      Effect.suspend(() => {
        if (m.known) return Effect.succeed(false)
        if (!m.learning) {
          m.learning = true
          return Effect.succeed(true)
        }
        const waiter = Deferred.unsafeMake<void>(undefined as never)
        m.learners.push(waiter)
        return Effect.zipRight(beforeDeadline(Deferred.await(waiter), attempt), learn(m, attempt))
      })

    const learned = (m: Model) =>
      Effect.suspend(() => {
        m.learning = false
        const release = m.known ? m.learners.splice(0) : m.learners.splice(0, 1)
        return Effect.forEach(release, (waiter) => Deferred.succeed(waiter, void 0), { discard: true })
      })

    /** Learns from an answer's snapshot: the limits, and what remains. */
    const observe = (m: Model, snapshot: RateLimitSnapshot | undefined, now: number) => {
      if (snapshot === undefined) {
        m.headerless = true
        return Effect.void
      }
      if (snapshot.limitRequests !== undefined && snapshot.limitRequests > 0) m.learnedRequests = snapshot.limitRequests
      if (snapshot.limitTokens !== undefined && snapshot.limitTokens > 0) m.learnedTokens = snapshot.limitTokens
      const rpm = m.requestsPerMinute
      const tpm = m.tokensPerMinute
      return Effect.zipRight(
        rpm === undefined || snapshot.remainingRequests === undefined
          ? Effect.void
          : buckets.lower(requestsBucket(m.requestsKey, rpm), snapshot.remainingRequests, now),
        tpm === undefined || snapshot.remainingTokens === undefined
          ? Effect.void
          : buckets.lower(tokensBucket(m.tokensKey, tpm), snapshot.remainingTokens, now)
      )
    }

    const onSuccess = (m: Model, response: LlmResponse, estimate: number | undefined, clock: Clock.Clock) =>
      Effect.gen(function*() {
        m.streak = 0
        const now = clock.unsafeCurrentTimeMillis()
        yield* observe(m, response.rateLimit, now)
        const tpm = m.tokensPerMinute
        if (estimate !== undefined && tpm !== undefined) {
          const billed = response.usage.inputTokens + response.usage.outputTokens
          if (billed !== estimate) yield* buckets.take(tokensBucket(m.tokensKey, tpm), billed - estimate, now)
        }
        if (m.phase === "down") {
          m.phase = "recovering"
          m.rate = slowStartRate
          m.congested = false
          const ceiling = m.requestsPerMinute
          yield* Effect.logInfo(
            `RateLimiter: ${m.name} answers again; admitting from ${slowStartRate}/s, doubling every 100ms${
              ceiling === undefined ? "" : ` up to ${Math.round(ceiling / 60)}/s`
            }`
          )
        }
      })

    const onFailure = (m: Model, error: LlmError.LlmError, clock: Clock.Clock) =>
      Effect.gen(function*() {
        if (error._tag === "RateLimited") {
          const now = clock.unsafeCurrentTimeMillis()
          const hint = error.retryAfter === undefined ? 1_000 : Duration.toMillis(error.retryAfter)
          m.pausedUntil = Math.max(m.pausedUntil, now + hint)
          const rpm = m.requestsPerMinute
          if (rpm !== undefined) yield* buckets.lower(requestsBucket(m.requestsKey, rpm), 0, now)
        } else if (isHealthFailure(error)) {
          m.streak++
          if (m.phase !== "recovering") return
          if (m.streak >= DOWN_AGAIN_AFTER) {
            m.phase = "down"
            yield* Effect.logWarning(`RateLimiter: ${m.name} failed again while recovering; holding its attempts`)
          } else {
            m.rate = Math.max(slowStartRate, m.rate / 2)
            m.congested = true
          }
        }
      })

    /**
     * Waits out a 429's pause, the concurrency cap and the buckets, then runs the attempt and learns from
     * it. The clock is read where it is needed, without an Effect for each reading.
     */
    const run = (
      m: Model,
      attempt: RateLimiter.Attempt,
      self: Effect.Effect<LlmResponse, LlmError.LlmError>,
      clock: Clock.Clock
    ): Effect.Effect<LlmResponse, LlmError.LlmError> =>
      Effect.gen(function*() {
        const now = () => clock.unsafeCurrentTimeMillis()
        let waited = false
        /** Sleeps until `at`, ahead of now; fails with `onDeadline()` when that is at or past the deadline. */
        const sleepUntil = (at: number) => {
          waited = true
          return at >= attempt.deadlineAt ? Effect.fail(attempt.onDeadline()) : Effect.sleep(at - now())
        }
        if (m.pausedUntil > now()) yield* sleepUntil(m.pausedUntil)
        // Tokens before requests: the requests pace is checked last, at the moment of sending, so nothing
        // between it and the send (the first estimate loads the tokenizer: half a second of CPU) can bunch
        // the attempts it spaced.
        const tpm = m.tokensPerMinute
        let estimate: number | undefined
        if (tpm !== undefined) {
          estimate = yield* attempt.tokens
          if (estimate <= tpm) {
            const delay = yield* buckets.take(tokensBucket(m.tokensKey, tpm), estimate, now())
            if (delay > 0) yield* sleepUntil(now() + delay)
          }
        }
        const rpm = m.requestsPerMinute
        if (rpm !== undefined) {
          const delay = yield* buckets.take(requestsBucket(m.requestsKey, rpm), 1, now())
          if (delay > 0) yield* sleepUntil(now() + delay)
          // Sleeps until the attempt's send time, then checks the pace at the moment it wakes: the process
          // can stall during that sleep too (a busy stretch handing out slots to a thousand attempts, some
          // due before it ends), and every sleep due in a stall wakes when it ends. An attempt the pace
          // refuses then waits in the line of late attempts, one interval apart from the pace's next free moment.
          let at = m.sendTime(now(), rpm)
          while (true) {
            if (at > now()) yield* sleepUntil(at)
            if (m.send(now(), rpm)) break
            at = m.lateTime(rpm)
          }
        }
        // A wait may have eaten into the deadline the attempt's own timeout was computed from.
        const bounded = waited ? beforeDeadline(self, attempt) : self
        const limited = m.gate === undefined ? bounded : m.gate.withPermit()(bounded)
        return yield* Effect.tapBoth(limited, {
          onSuccess: (response) => onSuccess(m, response, estimate, clock),
          onFailure: (error) => onFailure(m, error, clock)
        })
      })

    /**
     * Admits and runs the attempt: at once while the model is open and its limits known, else through the
     * admission queue and the learning. While the model is held, a failure that was not billed waits for
     * admission again instead of retrying.
     */
    const admitted = (
      m: Model,
      attempt: RateLimiter.Attempt,
      self: Effect.Effect<LlmResponse, LlmError.LlmError>,
      clock: Clock.Clock
    ): Effect.Effect<LlmResponse, LlmError.LlmError> => {
      const runs = (probe: boolean) =>
        Effect.catchAllCause(
          probe ? Effect.ensuring(run(m, attempt, self, clock), learned(m)) : run(m, attempt, self, clock),
          (cause) => {
            const failure = failureOf(cause)
            return failure === undefined || m.phase === "open" || !isHealthFailure(failure) ||
                LlmError.mayHaveBeenBilled(failure)
              ? Effect.failCause(cause)
              : admitted(m, attempt, self, clock)
          }
        )
      return m.phase === "open" && m.known
        ? runs(false)
        : Effect.zipRight(enqueue(m, attempt), Effect.flatMap(learn(m, attempt), runs))
    }

    const admit = (
      attempt: RateLimiter.Attempt,
      self: Effect.Effect<LlmResponse, LlmError.LlmError>
    ): Effect.Effect<LlmResponse, LlmError.LlmError> =>
      Effect.clockWith((clock) => {
        const m = model(attempt.model)
        if (m.count(clock.unsafeCurrentTimeMillis(), attempt.retry) || m.phase !== "open") {
          return admitted(m, attempt, self, clock)
        }
        m.phase = "down"
        return Effect.zipRight(
          Effect.logWarning(
            `RateLimiter: ${m.name}: retries passed ${
              Math.round(share * 100)
            }% of recent requests; holding its attempts, one probe every ${probeMs}ms`
          ),
          admitted(m, attempt, self, clock)
        )
      })

    return RateLimiter.of({
      admit,
      state: (name) =>
        Effect.sync(() => {
          const m = model(name)
          return {
            phase: m.phase === "open" && !m.known ? "learning" : m.phase,
            requestsPerMinute: m.requestsPerMinute,
            tokensPerMinute: m.tokensPerMinute,
            pausedUntil: m.pausedUntil,
            waiting: m.queue.length,
            rate: m.phase === "recovering" ? m.rate : undefined
          }
        }),
      description: `rate limiter (retry budget ${Math.round(share * 100)}%, slow start from ${slowStartRate}/s)`
    })
  })

/**
 * The requests bucket paces to `perMinute` and holds `REQUESTS_BURST_MS`' worth (at least one request): a
 * bucket holding a minute's worth would let a minute's requests go at once, as a herd, after an outage or
 * once a limit is learned. (The rate is exact: the window is the burst's share of a minute.)
 */
const requestsBucket = (key: string, perMinute: number): TokenBuckets.Bucket => {
  const limit = Math.max(1, Math.round(perMinute * REQUESTS_BURST_MS / 60_000))
  return { key, limit, windowMs: 60_000 * limit / perMinute }
}

/** The tokens bucket holds a minute's worth: one request may need many tokens, and its size is not a herd. */
const tokensBucket = (key: string, perMinute: number): TokenBuckets.Bucket => ({
  key,
  limit: Math.floor(perMinute),
  windowMs: 60_000
})

const min = (a: number | undefined, b: number | undefined) => a === undefined ? b : b === undefined ? a : Math.min(a, b)

const paced = (limit: number | undefined) => limit === undefined ? undefined : limit * HEADROOM

/** The error an attempt failed with; undefined when it was interrupted or died. */
const failureOf = (cause: Cause.Cause<LlmError.LlmError>): LlmError.LlmError | undefined =>
  Cause.isInterrupted(cause) ? undefined : Option.getOrUndefined(Cause.failureOption(cause))

/** A limiter over the `RateLimiterStore` in context (e.g. `RateLimiter/Redis`'s). */
export const layer = (
  options: Options = {}
): Layer.Layer<RateLimiter, RateLimiterConfigError, ExperimentalLimiter.RateLimiterStore> =>
  Layer.scoped(RateLimiter, make(options))

/** A limiter for one process: its buckets in memory. */
export const layerMemory = (options: Options = {}): Layer.Layer<RateLimiter, RateLimiterConfigError> =>
  Layer.scoped(RateLimiter, makeMemory(options))
