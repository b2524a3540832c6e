/**
 * A circuit breaker per model: it stops sending to a model that keeps failing, so calls fail at once
 * with `CircuitOpen` (and a `Router` moves them to the next model of their chain) instead of spending
 * their retries on a provider that is down.
 *
 * - **closed**: requests go; their outcomes are counted over a sliding `window` (default 30 s, kept
 *   in 10 buckets). When at least `minimumRequests` (default 10) ended in it and the share that failed
 *   reaches `threshold` (default 0.5), the circuit opens.
 * - **open** for `cooldown` (default 30 s): every round and every retry to the model fails with
 *   `CircuitOpen` (`retryAt` says when it reopens), nothing is sent.
 * - **half-open** after the cool-down: `probes` requests (default 1) go through; when they all
 *   succeed the circuit closes with a fresh window, and the first that fails reopens it for another
 *   cool-down.
 *
 * Only provider-health failures count (`failures`): `ProviderUnavailable` (5xx, 408, 409), `Timeout`,
 * `Transport` and `ProtocolError` (an unreadable 2xx). A 429 does not by default: the model is up,
 * and pacing is the rate limiter's job (counting 429s would open the circuit of a healthy model at a
 * saturated quota). Any other error shows the provider answered (400, 401, quota, refusals) and is not
 * counted, nor is a request that ended before it was sent. Transitions are logged and set the gauge
 * `keel.circuit_breaker.state`. Time is Effect's `Clock`, so `TestClock` drives every transition.
 *
 * Provide it to `Llm.layer`: the pipeline checks it before each round's budget reservation and before
 * each attempt, and reports each attempt's outcome.
 */
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as DateTime from "effect/DateTime"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { CircuitOpen, LlmError } from "./LlmError.js"
import * as Telemetry from "./Telemetry.js"

/** The tag of an `LlmError`. */
export type ErrorTag = LlmError["_tag"]

export interface Options {
  /** The failed share of the window's requests that opens the circuit, in (0, 1]. Default 0.5. */
  readonly threshold?: number
  /** Requests that must have ended in the window before it can open. Default 10. */
  readonly minimumRequests?: number
  /** How far back outcomes count. Default 30 s. */
  readonly window?: Duration.DurationInput
  /** How long an open circuit fails fast before it lets probes through. Default 30 s. */
  readonly cooldown?: Duration.DurationInput
  /** Requests let through when half-open; all must succeed to close. Default 1. */
  readonly probes?: number
  /** The errors that count as failures. Default ProviderUnavailable, Timeout, Transport, ProtocolError. */
  readonly failures?: ReadonlyArray<ErrorTag>
}

/** A bad breaker configuration, rejected when the layer is built: the field and why. */
export class CircuitBreakerConfigError extends Schema.TaggedError<CircuitBreakerConfigError>(
  "@keel/core/CircuitBreaker/CircuitBreakerConfigError"
)("CircuitBreakerConfigError", { field: Schema.String, reason: Schema.String }) {
  override get message() {
    return `Invalid circuit breaker configuration at ${this.field}: ${this.reason}`
  }
}

/** A circuit's state, as the gauge encodes it. */
export type State = Telemetry.CircuitState

/** How one request ended, as the breaker counts it. */
export type Outcome = "success" | "failure" | "ignored"

export class CircuitBreaker
  extends Context.Tag("@keel/core/CircuitBreaker")<CircuitBreaker, CircuitBreaker.Service>()
{}

export declare namespace CircuitBreaker {
  export interface Service {
    /** Fails with `CircuitOpen` when a request to `model` would not be let through now; takes nothing. */
    readonly check: (model: string) => Effect.Effect<void, CircuitOpen>
    /** Runs one request to `model` when the circuit lets it through, and counts how it ended. */
    readonly protect: <A, E>(model: string, self: Effect.Effect<A, E>) => Effect.Effect<A, E | CircuitOpen>
    /** The circuit's state now (open becomes half-open once its cool-down is over). */
    readonly state: (model: string) => Effect.Effect<State>
    /** One line saying what the breaker does, for logs. */
    readonly description: string
  }
}

const defaultFailures: ReadonlyArray<ErrorTag> = ["ProviderUnavailable", "Timeout", "Transport", "ProtocolError"]
const errorTags: ReadonlySet<string> = new Set(LlmError.members.map((member) => member._tag))
const buckets = 10

interface Bucket {
  /** The bucket's index since the epoch (time ÷ bucket length); -1 when unused. */
  slot: number
  successes: number
  failures: number
}

interface Circuit {
  state: State
  readonly window: Array<Bucket>
  /** When an open circuit lets probes through (epoch millis). */
  openUntil: number
  probesInFlight: number
  probesSucceeded: number
}

const positiveDuration = (
  field: string,
  input: Duration.DurationInput | undefined,
  fallback: Duration.Duration
): Effect.Effect<Duration.Duration, CircuitBreakerConfigError> => {
  if (input === undefined) return Effect.succeed(fallback)
  const fail = (reason: string) => Effect.fail(new CircuitBreakerConfigError({ field, reason }))
  if (typeof input === "number" && !(input > 0)) return fail(`${input} ms: must be longer than zero`)
  const decoded = Duration.decodeUnknown(input)
  if (Option.isNone(decoded)) return fail(`${String(input)} is not a duration`)
  const millis = Duration.toMillis(decoded.value)
  if (!(millis > 0)) return fail(`${Duration.format(decoded.value)}: must be longer than zero`)
  if (!Number.isFinite(millis)) return fail("must be finite")
  return Effect.succeed(decoded.value)
}

const positiveInt = (field: string, input: number | undefined, fallback: number) =>
  input === undefined
    ? Effect.succeed(fallback)
    : Number.isInteger(input) && input >= 1
    ? Effect.succeed(input)
    : Effect.fail(new CircuitBreakerConfigError({ field, reason: `${input}: must be a whole number of at least 1` }))

const percent = (share: number) => `${Math.round(share * 1000) / 10}%`

/** Builds a breaker; bad options fail with `CircuitBreakerConfigError` naming the field. */
export const make = (options: Options = {}): Effect.Effect<CircuitBreaker.Service, CircuitBreakerConfigError> =>
  Effect.gen(function*() {
    const threshold = options.threshold ?? 0.5
    if (!(threshold > 0 && threshold <= 1)) {
      return yield* new CircuitBreakerConfigError({
        field: "threshold",
        reason: `${threshold}: must be a share in (0, 1], e.g. 0.5 to open when half the requests fail`
      })
    }
    const minimumRequests = yield* positiveInt("minimumRequests", options.minimumRequests, 10)
    const probes = yield* positiveInt("probes", options.probes, 1)
    const window = yield* positiveDuration("window", options.window, Duration.seconds(30))
    const cooldown = yield* positiveDuration("cooldown", options.cooldown, Duration.seconds(30))
    const failureTags = options.failures ?? defaultFailures
    for (const [index, tag] of failureTags.entries()) {
      if (!errorTags.has(tag)) {
        return yield* new CircuitBreakerConfigError({
          field: `failures[${index}]`,
          reason: `"${tag}" is not an LlmError tag (${Array.from(errorTags).join(", ")})`
        })
      }
    }
    const failing: ReadonlySet<string> = new Set(failureTags)
    const windowMillis = Duration.toMillis(window)
    const cooldownMillis = Duration.toMillis(cooldown)
    const bucketMillis = windowMillis / buckets

    const circuits = new Map<string, Circuit>()
    const circuitOf = (model: string): { readonly circuit: Circuit; readonly fresh: boolean } => {
      const found = circuits.get(model)
      if (found !== undefined) return { circuit: found, fresh: false }
      const circuit: Circuit = {
        state: "closed",
        window: Array.from({ length: buckets }, () => ({ slot: -1, successes: 0, failures: 0 })),
        openUntil: 0,
        probesInFlight: 0,
        probesSucceeded: 0
      }
      circuits.set(model, circuit)
      return { circuit, fresh: true }
    }

    /** Logs a transition and sets the gauge. */
    const announce = (model: string, state: State, why: string): Effect.Effect<void> =>
      Effect.zipRight(
        state === "open"
          ? Effect.logWarning(`CircuitBreaker: ${model} open: ${why}`)
          : Effect.logInfo(`CircuitBreaker: ${model} ${state}: ${why}`),
        Telemetry.recordCircuitState(model, state)
      ).pipe(Effect.annotateLogs({ model, circuit: state }))

    const open = (circuit: Circuit, now: number) => {
      circuit.state = "open"
      circuit.openUntil = now + cooldownMillis
      circuit.probesInFlight = 0
      circuit.probesSucceeded = 0
    }

    const closedTotals = (circuit: Circuit, now: number) => {
      const current = Math.floor(now / bucketMillis)
      let successes = 0
      let failures = 0
      for (const bucket of circuit.window) {
        if (bucket.slot > current - buckets) {
          successes += bucket.successes
          failures += bucket.failures
        }
      }
      return { successes, failures }
    }

    const retryAt = (circuit: Circuit) => DateTime.unsafeMake(circuit.openUntil)

    /**
     * Decides whether a request goes now; `take` claims a probe when half-open. Returns the
     * transition to announce, if any, and what was admitted.
     */
    const admit = (model: string, now: number, take: boolean) => {
      const { circuit, fresh } = circuitOf(model)
      let transition: Effect.Effect<void> = fresh ? Telemetry.recordCircuitState(model, "closed") : Effect.void
      if (circuit.state === "open") {
        if (now < circuit.openUntil) {
          return { transition, admitted: new CircuitOpen({ model, retryAt: retryAt(circuit) }) }
        }
        circuit.state = "half-open"
        circuit.probesInFlight = 0
        circuit.probesSucceeded = 0
        transition = announce(
          model,
          "half-open",
          `cool-down of ${Duration.format(cooldown)} over; letting ${probes} probe${probes === 1 ? "" : "s"} through`
        )
      }
      if (circuit.state === "half-open") {
        if (circuit.probesInFlight + circuit.probesSucceeded >= probes) {
          return { transition, admitted: new CircuitOpen({ model }) }
        }
        if (take) circuit.probesInFlight++
        return { transition, admitted: "probe" as const }
      }
      return { transition, admitted: "closed" as const }
    }

    const outcomeOf = (exit: Exit.Exit<unknown, unknown>): Outcome => {
      if (exit._tag === "Success") return "success"
      const error = Cause.failureOption(exit.cause)
      if (Option.isNone(error)) return "ignored"
      const tag = (error.value as { readonly _tag?: unknown })?._tag
      return typeof tag === "string" && failing.has(tag) ? "failure" : "ignored"
    }

    /** Counts one request's outcome; returns the transition to announce, if any. */
    const settle = (model: string, as: "closed" | "probe", outcome: Outcome, now: number): Effect.Effect<void> => {
      const circuit = circuits.get(model)!
      if (as === "probe") {
        if (circuit.state !== "half-open") return Effect.void // another probe already decided
        circuit.probesInFlight--
        if (outcome === "failure") {
          open(circuit, now)
          return announce(model, "open", `a half-open probe failed; failing fast for ${Duration.format(cooldown)}`)
        }
        if (outcome === "success" && ++circuit.probesSucceeded >= probes) {
          circuit.state = "closed"
          for (const bucket of circuit.window) bucket.slot = -1
          return announce(model, "closed", `${probes} probe${probes === 1 ? "" : "s"} succeeded`)
        }
        return Effect.void
      }
      // A request let through before the circuit opened says nothing about it now.
      if (circuit.state !== "closed" || outcome === "ignored") return Effect.void
      const slot = Math.floor(now / bucketMillis)
      const bucket = circuit.window[slot % buckets]!
      if (bucket.slot !== slot) {
        bucket.slot = slot
        bucket.successes = 0
        bucket.failures = 0
      }
      if (outcome === "success") {
        bucket.successes++
        return Effect.void
      }
      bucket.failures++
      const { failures, successes } = closedTotals(circuit, now)
      const total = failures + successes
      if (total < minimumRequests || failures / total < threshold) return Effect.void
      open(circuit, now)
      return announce(
        model,
        "open",
        `${failures} of ${total} requests failed in ${Duration.format(window)} (threshold ${
          percent(threshold)
        }); failing fast for ${Duration.format(cooldown)}`
      )
    }

    /** `next` after announcing the transition, if there is one (usually there is none). */
    const after = <A, E>(transition: Effect.Effect<void>, next: Effect.Effect<A, E>) =>
      transition === Effect.void ? next : Effect.zipRight(transition, next)

    const check = (model: string): Effect.Effect<void, CircuitOpen> =>
      Effect.clockWith((clock) => {
        const { admitted, transition } = admit(model, clock.unsafeCurrentTimeMillis(), false)
        return typeof admitted === "string" ? transition : after(transition, Effect.fail(admitted))
      })

    const protect = <A, E>(model: string, self: Effect.Effect<A, E>): Effect.Effect<A, E | CircuitOpen> =>
      Effect.clockWith((clock) =>
        Effect.uninterruptibleMask((restore): Effect.Effect<A, E | CircuitOpen> => {
          const { admitted, transition } = admit(model, clock.unsafeCurrentTimeMillis(), true)
          if (typeof admitted !== "string") return after(transition, Effect.fail(admitted))
          return after(
            transition,
            Effect.onExit(
              restore(self),
              (exit) => Effect.suspend(() => settle(model, admitted, outcomeOf(exit), clock.unsafeCurrentTimeMillis()))
            )
          )
        })
      )

    const state = (model: string): Effect.Effect<State> =>
      Effect.clockWith((clock) =>
        Effect.sync(() => {
          const circuit = circuits.get(model)
          if (circuit === undefined) return "closed"
          return circuit.state === "open" && clock.unsafeCurrentTimeMillis() >= circuit.openUntil
            ? "half-open"
            : circuit.state
        })
      )

    return CircuitBreaker.of({
      check,
      protect,
      state,
      description: `circuit breaker (opens at ${percent(threshold)} failed of ≥${minimumRequests} in ${
        Duration.format(window)
      }, cool-down ${Duration.format(cooldown)}, ${probes} probe${probes === 1 ? "" : "s"})`
    })
  })

/** A breaker with the given options; provide it to `Llm.layer`. */
export const layer = (options: Options = {}): Layer.Layer<CircuitBreaker, CircuitBreakerConfigError> =>
  Layer.effect(CircuitBreaker, make(options))

/** A breaker whose options are read from `Config` (the application says where from). */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<CircuitBreaker, CircuitBreakerConfigError | ConfigError.ConfigError> =>
  Layer.effect(CircuitBreaker, Effect.flatMap(Config.unwrap(config), make))

/** The state of `model`'s circuit in the breaker in context. */
export const state = (model: string): Effect.Effect<State, never, CircuitBreaker> =>
  Effect.flatMap(CircuitBreaker, (breaker) => breaker.state(model))
