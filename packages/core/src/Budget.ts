/**
 * Spend limits that cannot be overspent. A call's budget scope is a path (`tenant:acme/run:42`);
 * it charges that scope, every ancestor (`tenant:acme`) and the implicit root `global`. Limits are
 * set per scope path and window: `total`, the UTC `day`, or the UTC calendar `month`.
 *
 * - `reserve` takes the call's worst-case cost from every counter of the chain at once, all or
 *   nothing, before anything is sent. When it does not fit only because of other calls' open
 *   reservations (spent + requested ≤ limit), it waits for them to settle, up to `maxWait` (default
 *   0: refuse at once), then fails with `BudgetExceeded`; when it could not fit even if every
 *   reservation settled, it fails at once. Waiting is interruptible and an interrupted `reserve`
 *   holds nothing. So spent + reserved never exceeds a limit through reservations. Spent only grows
 *   within a period, so once the store has reported a spent that leaves no room for a request, the
 *   same request and larger ones are refused without asking it again.
 * - `settle` charges the actual cost and frees the rest of the reservation; `release` frees it all
 *   when nothing was billed. A charge that is partly guessed (an attempt that may have been billed
 *   returned no usage) is marked `estimated`. A cost above the reservation (an estimate that
 *   undercounted, a provider that bills differently) is charged in full and recorded as an
 *   `overrun` on every counter of the chain and in the `Settlement` that `settle` returns: spent may
 *   then pass a limit by that overrun, and every later `reserve` there is refused.
 * - A reservation carries a lease (owner and expiry) timed from when the store writes it; while
 *   this process holds open reservations it renews their leases every `renewEvery` (one store
 *   statement per interval, whatever the number of reservations). A reservation whose owner died
 *   is reclaimed when its lease expires, charged at its full reserved amount as spent and estimated,
 *   so spend is never under-counted; `extend` or `settle` of a reclaimed reservation fails with
 *   `BudgetStoreError` and counts nothing twice. Reclaiming runs when the layer starts and then on
 *   fixed ticks `reclaimEvery` apart (a slow run does not delay the later ones), each time comparing
 *   leases with the clock the store reads when it runs it (after any wait for a connection or lock).
 *   It runs on this process's event loop: a process whose loop is blocked (thousands of calls
 *   starting at once) runs it when the loop next turns, as it runs every other timer.
 * - A call redone in another process after its first process died mid-call (a cluster worker
 *   killed) reserves under the same key (`withCallKeys`) and adopts the reservation the dead
 *   process left open instead of waiting for its lease: the old one is closed as adopted, and the
 *   new one, holding both amounts, charges the redo's cost plus the lost attempt's reserved amount
 *   as an estimate. One charge per call in the ledger; the dead process's own close (one that only
 *   lost its connection) finds nothing open.
 * - Every store failure is a `BudgetStoreError` (`Llm` fails the call closed). A settle or release
 *   that failed is retried with the lease renewals until it lands.
 * - `Llm` reserves one attempt's worst case per round (input tokens × input price + max output
 *   tokens × output price; see `Tokens`, `Pricing`). Before a retry that follows an attempt which may
 *   have been billed without an answer (a timeout after sending), it `extend`s the reservation by
 *   another worst case, or stops with `BudgetExceeded`; each such attempt is charged at its estimate.
 *
 * Counters live in a `BudgetStore`: `layerMemory` here (one process), `Budget/Sql` for SQLite and
 * Postgres (durable, shared). `Llm` uses the budget found when its layer is built, so provide the
 * budget to the `Llm` layer:
 *
 * ```ts
 * const budget = BudgetSql.layerSqlite({ filename: ".keel/budget.db", limits: [{ scope: "tenant:acme", window: "day", limit: "25" }] })
 * const llm = Llm.layer().pipe(Layer.provide(Layer.merge(model, budget)))
 * ```
 * A reservation is charged to the windows it was made in, even when it
 * is settled after midnight. Configuration is validated up front: a negative or non-numeric limit,
 * an unknown window, an illegal scope name is a `BudgetConfigError` naming the field.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { BudgetExceeded } from "./LlmError.js"
import { Scope as ScopePath } from "./LlmRequest.js"
import * as Money from "./Money.js"

/** The period a limit applies to: all time, the UTC day, or the UTC calendar month. */
export const Window = Schema.Literal("total", "day", "month")
export type Window = typeof Window.Type

/** The implicit root scope every call charges. */
export const root = "global"

/** A limit on a scope's spend within a window. */
export const Limit = Schema.Struct({
  scope: ScopePath,
  window: Schema.optionalWith(Window, { default: () => "total" as const }),
  /** USD, as a decimal string or number. */
  limit: Money.FromUsd.pipe(
    Schema.filter((amount) => amount >= 0n || "must not be negative")
  )
}).annotations({ identifier: "BudgetLimit" })
export type Limit = typeof Limit.Type

/** A bad budget configuration: the field and what is wrong. */
export class BudgetConfigError
  extends Schema.TaggedError<BudgetConfigError>("@keel/core/Budget/BudgetConfigError")("BudgetConfigError", {
    field: Schema.String,
    reason: Schema.String
  })
{
  override get message() {
    return `Invalid budget configuration at ${this.field}: ${this.reason}`
  }
}

/**
 * The budget store failed (database unreachable, locked, corrupt, a bad file), or a reservation is
 * no longer open (reclaimed after its lease ran out): the budget cannot be checked or kept.
 */
export class BudgetStoreError
  extends Schema.TaggedError<BudgetStoreError>("@keel/core/Budget/BudgetStoreError")("BudgetStoreError", {
    operation: Schema.String,
    reason: Schema.String,
    cause: Schema.optional(Schema.Defect)
  })
{
  override get message() {
    return `Budget store failed to ${this.operation}: ${this.reason}`
  }
}

/** One counter a reservation charges: a scope in a window's period, with the limit in force (if any). */
export interface Counter {
  /** `scope|window|period`: the counter's identity in a store. */
  readonly key: string
  readonly scope: string
  readonly window: Window
  /** "total", "2026-11-29" (day) or "2026-11" (month). */
  readonly period: string
  readonly limit: Money.Money | undefined
}

/** A counter's money: spent, held by open reservations, and how much of spent was charged above reservations. */
export interface Balance {
  readonly scope: string
  readonly window: Window
  readonly period: string
  readonly spent: Money.Money
  readonly reserved: Money.Money
  /** The part of `spent` charged above what its reservations held (settles that cost more than reserved). */
  readonly overrun: Money.Money
}

/** What a store is asked to reserve. Counters are sorted by key (stores lock in that order). */
export interface ReserveRequest {
  readonly id: string
  readonly owner: string
  readonly amount: Money.Money
  readonly counters: ReadonlyArray<Counter>
  /** Lease length in milliseconds, counted from the clock the store reads when it writes. */
  readonly lease: number
  /** The call's key across processes (see `ReserveOptions.key`), kept with the reservation. */
  readonly key?: string | undefined
}

/** What a settle charged: the cost, and the part of it above the reservation (0 when it fit). */
export interface Settlement {
  readonly charged: Money.Money
  readonly overrun: Money.Money
}

/** Where counters and open reservations live. Every operation is atomic and reads the clock when it runs. */
export class BudgetStore extends Context.Tag("@keel/core/Budget/BudgetStore")<BudgetStore, BudgetStore.Service>() {}

export declare namespace BudgetStore {
  export interface Service {
    /**
     * Adds `amount` to the reserved sum of every counter, or to none when one would pass its limit.
     * With a `key`, an open reservation kept under it on the same counters, whoever owns it, is
     * adopted: closed as adopted (charging nothing: its amount moves) while `request.id` opens holding
     * that amount, as adopted, plus `amount`. Every close of the new reservation charges the adopted
     * amount on top of its cost; the old owner's own close finds nothing open. Returns the adopted
     * amount (0 when none).
     */
    readonly reserve: (request: ReserveRequest) => Effect.Effect<Money.Money, BudgetExceeded | BudgetStoreError>
    /**
     * Adds `amount` to an open reservation (same id and counters), renewing its lease, or fails as
     * `reserve` does; false when the reservation is no longer open.
     */
    readonly extend: (request: ReserveRequest) => Effect.Effect<boolean, BudgetExceeded | BudgetStoreError>
    /**
     * Charges an open reservation at `amount` (plus what it adopted) and closes it, recording any
     * overrun; `undefined` when it was no longer open (reclaimed).
     */
    readonly settle: (
      id: string,
      amount: Money.Money,
      estimated: boolean
    ) => Effect.Effect<Settlement | undefined, BudgetStoreError>
    /** Closes an open reservation charging nothing but what it adopted; false when it was no longer open. */
    readonly release: (id: string) => Effect.Effect<boolean, BudgetStoreError>
    /** Moves the lease of every open reservation of `owner` to `lease` ms from now; returns how many. */
    readonly renew: (owner: string, lease: number) => Effect.Effect<number, BudgetStoreError>
    /** Charges every open reservation whose lease has expired at its reserved amount; returns how many. */
    readonly reclaim: Effect.Effect<number, BudgetStoreError>
    /** The state of the given counters (missing ones are zero). */
    readonly balances: (keys: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Balance>, BudgetStoreError>
    /**
     * True for a store that answers without I/O (the memory store): `reserve` then runs it in the
     * caller's fiber, since there is no round trip an interrupted caller would have to wait for.
     */
    readonly synchronous?: boolean
  }
}

/** The `BudgetExceeded` for a counter that cannot take `requested` more. */
export const exceeded = (
  counter: Counter,
  spent: Money.Money,
  reserved: Money.Money,
  requested: Money.Money
): BudgetExceeded =>
  new BudgetExceeded({
    scope: counter.scope,
    window: counter.window === "total" ? "total" : `${counter.window} ${counter.period}`,
    limit: Money.format(counter.limit ?? 0n),
    spent: Money.format(spent),
    reserved: Money.format(reserved),
    requested: Money.format(requested)
  })

/** Whether a counter can take `requested` more. */
export const fits = (counter: Counter, spent: Money.Money, reserved: Money.Money, requested: Money.Money): boolean =>
  counter.limit === undefined || spent + reserved + requested <= counter.limit

/** A reservation held by a call. */
export interface Reservation {
  readonly id: string
  readonly scope: string
  readonly amount: Money.Money
  /** The counters it holds, in the periods it was made in. */
  readonly counters: ReadonlyArray<Counter>
  /**
   * Part of `amount` taken over from an earlier attempt at the same call whose process died (see
   * `ReserveOptions.key`): charged, as an estimate, whether this call settles or releases.
   */
  readonly adopted?: Money.Money | undefined
}

/** A scope's state in one window. */
export interface Status extends Balance {
  readonly limit: Money.Money | undefined
}

export interface ReserveOptions {
  /**
   * How long to wait for other calls' reservations to settle when only they stand in the way.
   * Default: the layer's `maxWait` (0 unless configured). Pass what is left of the call's deadline.
   */
  readonly maxWait?: Duration.DurationInput | undefined
  /**
   * Names the call across processes (`withCallKeys` gives each call of a unit of work its own).
   * When a reservation made under the same key is still open (the process that made it died
   * mid-call, and this call is its redo), it is adopted rather than left to its lease: this
   * reservation takes its amount over on top of its own worst case, and its close charges the lost
   * attempt's amount on top of the cost, as an estimate. So the ledger charges the call once, and
   * what the dead process may have been billed is still charged, never less.
   */
  readonly key?: string | undefined
}

/** The keys `withCallKeys` hands out: `<prefix>/<n>`, n counting the reservations in the order they are asked for. */
export interface CallKeys {
  readonly prefix: string
  next: number
}

/** The call keys of the work running in this fiber (and the fibers it forks), if any. */
export const currentCallKeys: FiberRef.FiberRef<CallKeys | undefined> = FiberRef.unsafeMake<CallKeys | undefined>(
  undefined
)

/**
 * Runs a unit of work (an item of a run) under call keys derived from `prefix`, which must name it
 * the same way in every process (`<run>/<item>`): `Llm` reserves each of its calls' rounds under the
 * next key, so a redo of the work elsewhere adopts what a dead process left open (see
 * `ReserveOptions.key`). Calls made concurrently within the work take keys in the order they reserve.
 */
export const withCallKeys = (prefix: string) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.suspend(() => Effect.locally(effect, currentCallKeys, { prefix, next: 0 }))

export class Budget extends Context.Tag("@keel/core/Budget")<Budget, Budget.Service>() {}

export declare namespace Budget {
  export interface Service {
    /**
     * Reserves `amount` in `scope` (default `global`) and all its ancestors, waiting up to
     * `maxWait` while other reservations block it, or fails with `BudgetExceeded`.
     */
    readonly reserve: (
      scope: string | undefined,
      amount: Money.Money,
      options?: ReserveOptions
    ) => Effect.Effect<Reservation, BudgetExceeded | BudgetStoreError>
    /**
     * Adds `amount` to a reservation, on the same counters and windows, or fails with
     * `BudgetExceeded` (the reservation keeps what it had). Fails with `BudgetStoreError` when the
     * reservation is no longer open (its lease expired and it was reclaimed).
     */
    readonly extend: (
      reservation: Reservation,
      amount: Money.Money
    ) => Effect.Effect<Reservation, BudgetExceeded | BudgetStoreError>
    /**
     * Charges the actual cost and frees the rest; `estimated` marks a charge that is partly a guess.
     * Returns what was charged and the overrun above the reservation. Fails with `BudgetStoreError`
     * when the reservation was reclaimed (charged at its full amount; `cost` is not recorded).
     * Settling a reservation this budget already closed charges nothing. Interrupted while the store
     * works, it returns at once and the settle lands anyway (closing the budget waits for it).
     */
    readonly settle: (
      reservation: Reservation,
      cost: Money.Money,
      options?: { readonly estimated?: boolean }
    ) => Effect.Effect<Settlement, BudgetStoreError>
    /** Frees a reservation when nothing was billed; interrupted, as `settle`. */
    readonly release: (reservation: Reservation) => Effect.Effect<void, BudgetStoreError>
    /** Spent, reserved, overrun and limit of a scope and its ancestors, in every window that has a limit, plus total. */
    readonly status: (scope?: string) => Effect.Effect<ReadonlyArray<Status>, BudgetStoreError>
    /** Reclaims reservations whose lease expired (their owner died); returns how many. */
    readonly reclaim: Effect.Effect<number, BudgetStoreError>
    /** The configured limits. */
    readonly limits: ReadonlyArray<Limit>
  }
}

export interface Options {
  /** Limits per scope and window. A scope without a limit is still counted (total). */
  readonly limits?: Iterable<typeof Limit.Encoded>
  /** How long a reservation is held for its owner without renewal before it may be reclaimed. Default 10 minutes. */
  readonly lease?: Duration.DurationInput
  /** How often the leases of this process's open reservations are renewed. Default: a third of `lease`. */
  readonly renewEvery?: Duration.DurationInput
  /** How often expired reservations are reclaimed, on fixed ticks from the start. Default: every minute; also once at start. */
  readonly reclaimEvery?: Duration.DurationInput
  /** How long `reserve` waits for other reservations when no `maxWait` is passed to it. Default 0. */
  readonly maxWait?: Duration.DurationInput
  /** While waiting, how often the store is asked again (settles by other processes are not announced). Default 20 ms. */
  readonly pollEvery?: Duration.DurationInput
  /** This process's owner id on its reservations. Default: a random UUID. */
  readonly owner?: string
}

const decodeLimits = Schema.decodeUnknownEither(Schema.Array(Limit), { errors: "first", onExcessProperty: "error" })

/** Validates limits: `BudgetConfigError` naming the first bad field (`limits.2.window`). */
export const validateLimits = (
  limits: Iterable<typeof Limit.Encoded>
): Either.Either<ReadonlyArray<Limit>, BudgetConfigError> =>
  Either.flatMap(
    Either.mapLeft(decodeLimits(Array.from(limits)), (error) => {
      const [issue] = ParseResult.ArrayFormatter.formatErrorSync(error)
      return new BudgetConfigError({
        field: ["limits", ...(issue?.path ?? [])].map(String).join("."),
        reason: issue?.message ?? error.message
      })
    }),
    (decoded) => {
      const seen = new Set<string>()
      for (const [index, limit] of decoded.entries()) {
        const key = `${limit.scope}|${limit.window}`
        if (seen.has(key)) {
          return Either.left(
            new BudgetConfigError({
              field: `limits.${index}`,
              reason: `a second ${limit.window} limit for scope "${limit.scope}"`
            })
          )
        }
        seen.add(key)
      }
      return Either.right(decoded)
    }
  )

/** A scope and its ancestors, root first: `a/b` → `global`, `a`, `a/b` (a leading `global/` is implied). */
export const chain = (scope: string): ReadonlyArray<string> => {
  if (scope === root) return [root]
  const parts = scope.split("/")
  if (parts[0] === root) parts.shift() // "global/tenant:a" is "tenant:a"
  const out = [root]
  for (let i = 1; i <= parts.length; i++) out.push(parts.slice(0, i).join("/"))
  return out
}

const isScope = Schema.is(ScopePath)

const DAY_MS = 86_400_000

const periodOf = (window: Window, now: number): string => {
  if (window === "total") return "total"
  const iso = new Date(now).toISOString()
  return window === "day" ? iso.slice(0, 10) : iso.slice(0, 7)
}

const positiveMillis = (field: string, input: Duration.DurationInput | undefined, fallback: number) =>
  Effect.suspend(() => {
    const millis = input === undefined ? fallback : Option.match(Duration.decodeUnknown(input), {
      onNone: () => Number.NaN,
      onSome: Duration.toMillis
    })
    return millis > 0
      ? Effect.succeed(millis)
      : Effect.fail(new BudgetConfigError({ field, reason: "must be a positive duration" }))
  })

const millisOf = (input: Duration.DurationInput | undefined): number =>
  input === undefined ? 0 : Option.match(Duration.decodeUnknown(input), { onNone: () => 0, onSome: Duration.toMillis })

/**
 * A line of reservations waiting for room on one counter: one head at a time asks the store; the
 * others wait in order, each handed the head's place in turn (never all woken to race for it).
 */
interface Line {
  head: boolean
  readonly queue: Array<Deferred.Deferred<void>>
  waiters: number
}

/** Becomes the line's head, at once or when handed the place; interrupted, holds no place. */
const takeHead = (line: Line): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (!line.head) {
      line.head = true
      return Effect.void
    }
    const turn = Deferred.unsafeMake<void>(FiberId.none)
    line.queue.push(turn)
    return Effect.onInterrupt(Deferred.await(turn), () =>
      Effect.sync(() => {
        const index = line.queue.indexOf(turn)
        if (index >= 0) line.queue.splice(index, 1)
        else passHead(line) // handed the place as it was interrupted: pass it on
      }))
  })

/** The head leaves: the next in line becomes head. */
const passHead = (line: Line): void => {
  const next = line.queue.shift()
  if (next === undefined) line.head = false
  else Deferred.unsafeDone(next, Exit.void)
}

/**
 * Builds the service over the `BudgetStore` in context; reclaims expired reservations now and
 * periodically, and renews the leases of the reservations it holds.
 */
export const make = (
  options: Options = {}
): Effect.Effect<Budget.Service, BudgetConfigError | BudgetStoreError, BudgetStore | Scope.Scope> =>
  Effect.gen(function*() {
    const limits = yield* validateLimits(options.limits ?? [])
    const lease = yield* positiveMillis("lease", options.lease, 10 * 60_000)
    const renewEvery = yield* positiveMillis("renewEvery", options.renewEvery, Math.max(1, Math.floor(lease / 3)))
    const reclaimEvery = yield* positiveMillis("reclaimEvery", options.reclaimEvery, 60_000)
    const pollEvery = yield* positiveMillis("pollEvery", options.pollEvery, 20)
    const defaultMaxWait = millisOf(options.maxWait)
    const store = yield* BudgetStore
    const owner = options.owner ?? crypto.randomUUID()
    let sequence = 0

    const limitsByScope = new Map<string, Array<Limit>>()
    for (const limit of limits) {
      const list = limitsByScope.get(limit.scope) ?? []
      list.push(limit)
      limitsByScope.set(limit.scope, list)
    }

    /** Per scope: every (scope, window, limit) the chain charges, sorted by key prefix. */
    type Template = { readonly scope: string; readonly window: Window; readonly limit: Money.Money | undefined }
    const templates = new Map<string, ReadonlyArray<Template>>()
    const templatesOf = (scope: string): ReadonlyArray<Template> | undefined => {
      let found = templates.get(scope)
      if (found === undefined) {
        if (!isScope(scope)) return undefined
        const list: Array<Template> = []
        for (const path of chain(scope)) {
          const scoped = limitsByScope.get(path) ?? []
          const total = scoped.find((limit) => limit.window === "total")
          list.push({ scope: path, window: "total", limit: total?.limit })
          for (const limit of scoped) {
            if (limit.window !== "total") list.push({ scope: path, window: limit.window, limit: limit.limit })
          }
        }
        found = list
        if (templates.size < 100_000) templates.set(scope, found)
      }
      return found
    }
    /**
     * Per scope, its counters for one UTC day (a month also turns at a day's start): a call reuses them
     * until midnight instead of formatting dates and building keys again.
     */
    const counterCache = new Map<string, { readonly day: number; readonly counters: ReadonlyArray<Counter> }>()
    const countersOf = (scope: string, now: number): ReadonlyArray<Counter> | undefined => {
      const today = Math.floor(now / DAY_MS)
      const cached = counterCache.get(scope)
      if (cached !== undefined && cached.day === today) return cached.counters
      const list = templatesOf(scope)
      if (list === undefined) return undefined
      let day: string | undefined
      let month: string | undefined
      const counters = list.map((template): Counter => {
        const period = template.window === "total"
          ? "total"
          : template.window === "day"
          ? (day ??= periodOf("day", now))
          : (month ??= periodOf("month", now))
        return { ...template, key: `${template.scope}|${template.window}|${period}`, period }
      }).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      if (counterCache.size < 100_000 || cached !== undefined) counterCache.set(scope, { day: today, counters })
      return counters
    }

    /** Ids of the open reservations this budget holds (their leases are renewed). */
    const held = new Set<string>()
    /** Settles and releases that failed in the store, retried with the renewals until they land. */
    const pendingCloses = new Map<string, Effect.Effect<unknown, BudgetStoreError>>()

    /** Completed (and replaced) whenever this process frees reserved money: wakes the waiting reservations. */
    let freed = Deferred.unsafeMake<void>(FiberId.none)
    const announceFreed = () => {
      if (lines.size === 0) return // nobody waits: keep the signal
      const done = freed
      freed = Deferred.unsafeMake<void>(FiberId.none)
      Deferred.unsafeDone(done, Effect.void)
    }
    /** One waiting line per counter that refused: only its head asks the store again. */
    const lines = new Map<string, Line>()

    const invalid = (operation: string, reason: string) => Effect.fail(new BudgetStoreError({ operation, reason }))

    /** Store work that may outlive its caller (see `write`, `closing`): the budget's finalizer waits for it. */
    const cleanups = new Set<Fiber.RuntimeFiber<unknown, unknown>>()
    const track = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) =>
      Effect.sync(() => {
        cleanups.add(fiber)
        fiber.addObserver(() => cleanups.delete(fiber))
      })

    /**
     * One try at writing the reservation. A store with I/O works in a fiber of its own (a daemon, so
     * it does not depend on any scope still being open), which the caller awaits interruptibly:
     * interrupted, the caller leaves at once (its timeout does not wait for a round trip or a
     * rollback at a busy store) while a clean-up stops that fiber and releases whatever it may have
     * written, so an interrupted reserve holds nothing; a release that fails is retried with the
     * renewals. The clean-up outlives the caller, and closing the budget waits for it.
     */
    const write = (request: ReserveRequest): Effect.Effect<Money.Money, BudgetExceeded | BudgetStoreError> => {
      const opened = (adopted: Money.Money) =>
        Effect.sync(() => {
          held.add(request.id)
          return adopted
        })
      if (store.synchronous === true) return Effect.flatMap(store.reserve(request), opened)
      return Effect.flatMap(
        Effect.forkDaemon(Effect.interruptible(store.reserve(request))),
        (writing) =>
          Effect.matchCauseEffect(Effect.interruptible(Fiber.join(writing)), {
            onFailure: (cause) => {
              if (!Cause.isInterrupted(cause)) return Effect.failCause(cause)
              const release = Effect.ignore(closeOrRetryLater(request.id, () => store.release(request.id)))
              const cleanUp = Effect.forkDaemon(
                Effect.uninterruptible(Effect.zipRight(Fiber.interrupt(writing), release))
              )
              return Effect.zipRight(Effect.flatMap(cleanUp, track), Effect.failCause(cause))
            },
            onSuccess: opened
          })
      )
    }

    /** The refusal stands until some reservation settles: spent alone plus the request still fits. */
    const blockedByReservations = (error: BudgetExceeded, amount: Money.Money): boolean =>
      Money.unsafeParse(error.spent) + amount <= Money.unsafeParse(error.limit)

    /**
     * Per limited counter, the spent and reserved sums the store last reported (in a refusal, or
     * when the budget starts). Spent only grows within a counter's period, so a request that would
     * pass the limit on top of that spent is refused without asking the store again: against an
     * exhausted budget, refusals cost nothing.
     */
    const spentSeen = new Map<string, { readonly spent: Money.Money; readonly reserved: Money.Money }>()
    const remember = (counters: ReadonlyArray<Counter>, refusal: BudgetExceeded) => {
      const counter = counters.find((counter) =>
        counter.scope === refusal.scope &&
        (counter.window === "total" ? "total" : `${counter.window} ${counter.period}`) === refusal.window
      )
      if (counter === undefined) return
      const spent = Money.unsafeParse(refusal.spent)
      if ((spentSeen.get(counter.key)?.spent ?? -1n) > spent) return
      if (spentSeen.size >= 10_000) spentSeen.clear()
      spentSeen.set(counter.key, { spent, reserved: Money.unsafeParse(refusal.reserved) })
    }
    const certainRefusal = (counters: ReadonlyArray<Counter>, amount: Money.Money): BudgetExceeded | undefined => {
      for (const counter of counters) {
        const seen = counter.limit === undefined ? undefined : spentSeen.get(counter.key)
        if (seen !== undefined && seen.spent + amount > counter.limit!) {
          return exceeded(counter, seen.spent, seen.reserved, amount)
        }
      }
      return undefined
    }

    /** Waits, interruptibly, until this process frees money or `millis` pass. */
    const pause = (signal: Deferred.Deferred<void>, millis: number) =>
      Effect.interruptible(Effect.ignore(Effect.timeout(Deferred.await(signal), millis)))

    /**
     * The slow path of `reserve`: the first try was refused only because of other reservations.
     * One waiting line per counter that refused; its head asks the store again at once, then each
     * time this process frees money or `pollEvery` passes, until `maxWait` is spent.
     */
    const waitForRoom = (
      attempt: Effect.Effect<Reservation, BudgetExceeded | BudgetStoreError>,
      amount: Money.Money,
      first: BudgetExceeded,
      maxWait: number
    ) =>
      Effect.gen(function*() {
        let refusal = first
        const deadline = (yield* Clock.currentTimeMillis) + maxWait
        const lineKey = `${refusal.scope}|${refusal.window}`
        let line = lines.get(lineKey)
        if (line === undefined) {
          line = { head: false, queue: [], waiters: 0 }
          lines.set(lineKey, line)
        }
        const myLine = line
        myLine.waiters++
        const untilDeadline = Effect.map(Clock.currentTimeMillis, (now) => deadline - now)
        const headOfLine = Effect.gen(function*() {
          let waited = yield* untilDeadline
          while (waited > 0) {
            const signal = freed
            const again = yield* Effect.either(attempt)
            if (Either.isRight(again)) return again.right
            if (again.left._tag !== "BudgetExceeded" || !blockedByReservations(again.left, amount)) {
              return yield* again.left
            }
            refusal = again.left
            yield* pause(signal, Math.min(waited, pollEvery))
            waited = yield* untilDeadline
          }
          return yield* refusal
        })
        return yield* Effect.gen(function*() {
          const inLine = yield* Effect.interruptible(
            Effect.timeoutOption(takeHead(myLine), yield* untilDeadline)
          )
          if (Option.isNone(inLine)) return yield* refusal
          return yield* Effect.ensuring(headOfLine, Effect.sync(() => passHead(myLine)))
        }).pipe(Effect.ensuring(Effect.sync(() => {
          if (--myLine.waiters === 0) lines.delete(lineKey)
        })))
      })

    // Uninterruptible but for the store calls and the waits, so that a reservation once written is
    // handed to a caller that cannot be interrupted (the pipeline reserves in `acquireUseRelease`)
    // while the call's timeout can still stop the store work and the waiting. The usual case, a
    // reservation that fits at once, is one store call and no generator.
    const reserve: Budget.Service["reserve"] = (scope, amount, reserveOptions) =>
      Effect.uninterruptible(Effect.suspend(() => {
        const path = scope ?? root
        if (templatesOf(path) === undefined) return invalid("reserve", `illegal scope "${path}"`)
        if (amount < 0n) return invalid("reserve", `negative amount ${Money.format(amount)}`)
        const id = `${owner}:${++sequence}`
        let counters: ReadonlyArray<Counter> = []
        const key = reserveOptions?.key
        const attempt = Effect.clockWith((clock) => {
          counters = countersOf(path, clock.unsafeCurrentTimeMillis())!
          const certain = spentSeen.size === 0 ? undefined : certainRefusal(counters, amount)
          if (certain !== undefined) return Effect.fail(certain)
          return Effect.map(
            write({ id, owner, amount, counters, lease, key }),
            (adopted): Reservation =>
              adopted === 0n
                ? { id, scope: path, amount, counters }
                : { id, scope: path, amount: adopted + amount, counters, adopted }
          )
        })
        const rememberRefusal = (error: BudgetExceeded | BudgetStoreError) =>
          Effect.sync(() => error._tag === "BudgetExceeded" && remember(counters, error))
        return Effect.catchAll(attempt, (refusal) => {
          if (refusal._tag === "BudgetExceeded") remember(counters, refusal)
          if (refusal._tag !== "BudgetExceeded" || !blockedByReservations(refusal, amount)) return Effect.fail(refusal)
          const maxWait = reserveOptions?.maxWait === undefined ? defaultMaxWait : millisOf(reserveOptions.maxWait)
          return maxWait > 0
            ? waitForRoom(Effect.tapError(attempt, rememberRefusal), amount, refusal, maxWait)
            : Effect.fail(refusal)
        })
      }))

    const extend: Budget.Service["extend"] = (reservation, amount) => {
      if (amount < 0n) return invalid("extend a reservation", `negative amount ${Money.format(amount)}`)
      const request = { ...reservation, owner, amount, lease }
      return Effect.flatMap(store.extend(request), (open) =>
        open
          ? Effect.succeed({ ...reservation, amount: reservation.amount + amount })
          : invalid(
            "extend a reservation",
            `reservation ${reservation.id} is no longer open: its lease expired and it was reclaimed at its full amount`
          ))
    }

    /**
     * A settle or release, in a fiber of its own (a daemon, tracked) that the caller awaits
     * interruptibly: a caller interrupted meanwhile (its timeout fired as the call settled, or the
     * call was interrupted and this is its clean-up) leaves at once and the close lands anyway. A
     * synchronous store closes in the caller's fiber.
     */
    const closing = <A, E>(close: Effect.Effect<A, E>): Effect.Effect<A, E> =>
      store.synchronous === true ? close : Effect.flatMap(
        Effect.forkDaemon(close),
        (fiber) => Effect.zipRight(track(fiber), Effect.interruptible(Fiber.join(fiber)))
      )

    /** Runs a close; when the store fails, keeps it to retry with the renewals and fails with the error. */
    const closeOrRetryLater = <A>(id: string, close: () => Effect.Effect<A, BudgetStoreError>) =>
      Effect.tapError(close(), () => Effect.sync(() => pendingCloses.set(id, Effect.suspend(close))))

    const settle: Budget.Service["settle"] = (reservation, cost, settleOptions) =>
      Effect.suspend(() => {
        if (!held.has(reservation.id) || pendingCloses.has(reservation.id)) {
          return Effect.succeed<Settlement>({ charged: 0n, overrun: 0n })
        }
        return closing(
          closeOrRetryLater(reservation.id, () => store.settle(reservation.id, cost, settleOptions?.estimated ?? false))
            .pipe(
              Effect.flatMap((settlement) => {
                held.delete(reservation.id)
                announceFreed()
                return settlement === undefined
                  ? invalid(
                    "settle",
                    `reservation ${reservation.id} was reclaimed after its lease expired and charged its full amount $${
                      Money.format(reservation.amount)
                    }; the cost $${Money.format(cost)} was not recorded`
                  )
                  : Effect.succeed(settlement)
              })
            )
        )
      })

    const release: Budget.Service["release"] = (reservation) =>
      Effect.suspend(() => {
        if (!held.has(reservation.id) || pendingCloses.has(reservation.id)) return Effect.void
        return closing(
          closeOrRetryLater(reservation.id, () => store.release(reservation.id)).pipe(
            Effect.map(() => {
              held.delete(reservation.id)
              announceFreed()
            })
          )
        )
      })

    const status: Budget.Service["status"] = (scope) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const counters = countersOf(scope ?? root, now)
        if (counters === undefined) return invalid("read the status", `illegal scope "${String(scope)}"`)
        return Effect.map(store.balances(counters.map((counter) => counter.key)), (balances) =>
          counters.map((counter, index): Status => ({
            scope: counter.scope,
            window: counter.window,
            period: counter.period,
            limit: counter.limit,
            spent: balances[index]?.spent ?? 0n,
            reserved: balances[index]?.reserved ?? 0n,
            overrun: balances[index]?.overrun ?? 0n
          })))
      })

    const reclaim = Effect.tap(store.reclaim, (count) => {
      if (count > 0) announceFreed()
    })

    const retryCloses = Effect.suspend(() =>
      Effect.forEach(Array.from(pendingCloses), ([id, close]) =>
        Effect.map(Effect.either(close), (done) => {
          if (Either.isLeft(done)) return
          pendingCloses.delete(id)
          held.delete(id)
          announceFreed()
        }), { discard: true })
    )

    /** Renews the leases this process holds and retries the closes that failed. */
    const maintain = Effect.zipRight(
      retryCloses,
      Effect.suspend(() => held.size > 0 ? Effect.asVoid(store.renew(owner, lease)) : Effect.void)
    )

    // On fixed ticks of the clock (start + k × millis), not `millis` after the previous run ended: a
    // slow run (a store busy with the calls it serves) does not push every later run back. A run
    // that overran a tick starts at once; missed ticks are not made up.
    const every = (millis: number, what: string, effect: Effect.Effect<unknown, BudgetStoreError>) =>
      effect.pipe(
        Effect.catchAll((error) => Effect.logWarning(`Budget: ${what} failed`, error)),
        Effect.schedule(Schedule.fixed(millis)),
        Effect.interruptible,
        Effect.forkScoped
      )

    yield* reclaim
    // What the limited counters have spent so far, so that a process started against an exhausted
    // budget refuses at once (an optimisation only: a store that cannot say is asked per call).
    yield* Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const limited = new Map<string, Counter>()
      for (const limit of limits) {
        for (const counter of countersOf(limit.scope, now)!) {
          if (counter.limit !== undefined) limited.set(counter.key, counter)
        }
      }
      return Effect.map(store.balances(Array.from(limited.keys())), (balances) => {
        for (const balance of balances) {
          const key = `${balance.scope}|${balance.window}|${balance.period}`
          if (balance.spent > 0n) spentSeen.set(key, { spent: balance.spent, reserved: balance.reserved })
        }
      })
    }).pipe(Effect.when(() => limits.length > 0), Effect.ignore)
    yield* every(reclaimEvery, "reclaiming expired reservations", reclaim)
    yield* every(renewEvery, "renewing leases", maintain)
    // Closing the budget (the process ends, a run is interrupted) waits up to 10 s for the clean-ups
    // of interrupted reserves and the closes whose callers left, and tries the failed closes once
    // more, so that what this process could still release is not left open until its lease expires.
    // Runs first, while leases are renewed.
    yield* Effect.addFinalizer(() =>
      Effect.interruptible(Effect.zipRight(Fiber.awaitAll(Array.from(cleanups)), retryCloses)).pipe(
        Effect.timeout("10 seconds"),
        Effect.ignore
      )
    )

    return Budget.of({ reserve, extend, settle, release, status, reclaim, limits })
  })

/** The budget over the store in context. */
export const layer = (options: Options = {}): Layer.Layer<Budget, BudgetConfigError | BudgetStoreError, BudgetStore> =>
  Layer.scoped(Budget, make(options))

/** The budget over the store in context, its options read from `Config` (the application says where from). */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<Budget, BudgetConfigError | BudgetStoreError | ConfigError.ConfigError, BudgetStore> =>
  Layer.scoped(Budget, Effect.flatMap(Config.unwrap(config), make))

/** The budget with a fresh in-memory store: one process, lost on exit. */
export const layerMemory = (options: Options = {}): Layer.Layer<Budget, BudgetConfigError | BudgetStoreError> =>
  Layer.provide(layer(options), Layer.sync(BudgetStore, makeMemoryStore))

/**
 * A store in memory: every operation runs synchronously, so it is atomic within the process.
 * Closed reservations are forgotten (the SQL store keeps them as a ledger).
 */
export const makeMemoryStore = (): BudgetStore.Service => {
  type Cell = {
    spent: Money.Money
    reserved: Money.Money
    overrun: Money.Money
    readonly scope: string
    readonly window: Window
    readonly period: string
  }
  type Open = {
    amount: Money.Money
    readonly owner: string
    readonly cells: ReadonlyArray<Cell>
    readonly counters: string
    readonly key: string | undefined
    readonly adopted: Money.Money
    leaseUntil: number
  }
  const cells = new Map<string, Cell>()
  const open = new Map<string, Open>()
  const nothingAdopted = Effect.succeed(0n)
  /** Ids of the open reservations made under a call key, by key. */
  const openByKey = new Map<string, string>()
  const countersKey = (counters: ReadonlyArray<Counter>) => counters.map((counter) => counter.key).join(",")

  /** Closes an open reservation charging `charge` plus what it adopted (a reclaim charges its amount, which holds it). */
  const close = (id: string, charge: (reservation: Open) => Money.Money): Settlement | undefined => {
    const reservation = open.get(id)
    if (reservation === undefined) return undefined
    open.delete(id)
    if (reservation.key !== undefined && openByKey.get(reservation.key) === id) openByKey.delete(reservation.key)
    const charged = charge(reservation)
    const overrun = charged > reservation.amount ? charged - reservation.amount : 0n
    for (const cell of reservation.cells) {
      cell.reserved -= reservation.amount
      cell.spent += charged
      cell.overrun += overrun
    }
    return { charged, overrun }
  }

  return BudgetStore.of({
    synchronous: true,
    reserve: (request) =>
      Effect.clockWith((clock): Effect.Effect<Money.Money, BudgetExceeded | BudgetStoreError> => {
        const now = clock.unsafeCurrentTimeMillis()
        const counters = request.key === undefined ? "" : countersKey(request.counters)
        const lostId = request.key === undefined ? undefined : openByKey.get(request.key)
        const lost = lostId === undefined ? undefined : open.get(lostId)
        const adopted = lost !== undefined && lost.counters === counters ? lost.amount : 0n
        if (open.has(request.id)) {
          return Effect.fail(
            new BudgetStoreError({ operation: "reserve", reason: `reservation ${request.id} is already open` })
          )
        }
        const found: Array<Cell> = []
        for (const counter of request.counters) {
          let cell = cells.get(counter.key)
          if (cell === undefined) {
            cell = {
              spent: 0n,
              reserved: 0n,
              overrun: 0n,
              scope: counter.scope,
              window: counter.window,
              period: counter.period
            }
            cells.set(counter.key, cell)
          }
          if (!fits(counter, cell.spent, cell.reserved, request.amount)) {
            return Effect.fail(exceeded(counter, cell.spent, cell.reserved, request.amount))
          }
          found.push(cell)
        }
        for (const cell of found) cell.reserved += request.amount
        if (adopted > 0n) open.delete(lostId!) // its amount moves to the new reservation, already reserved
        open.set(request.id, {
          amount: adopted + request.amount,
          owner: request.owner,
          cells: found,
          counters,
          key: request.key,
          adopted,
          leaseUntil: now + request.lease
        })
        if (request.key !== undefined) openByKey.set(request.key, request.id)
        return adopted === 0n ? nothingAdopted : Effect.succeed(adopted)
      }),
    extend: (request) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const reservation = open.get(request.id)
        if (reservation === undefined) return Effect.succeed(false)
        for (const [index, counter] of request.counters.entries()) {
          const cell = reservation.cells[index]!
          if (!fits(counter, cell.spent, cell.reserved, request.amount)) {
            return Effect.fail(exceeded(counter, cell.spent, cell.reserved, request.amount))
          }
        }
        for (const cell of reservation.cells) cell.reserved += request.amount
        reservation.amount += request.amount
        reservation.leaseUntil = now + request.lease
        return Effect.succeed(true)
      }),
    settle: (id, amount) => Effect.sync(() => close(id, (reservation) => amount + reservation.adopted)),
    release: (id) => Effect.sync(() => close(id, (reservation) => reservation.adopted) !== undefined),
    renew: (owner, lease) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        let renewed = 0
        for (const reservation of open.values()) {
          if (reservation.owner === owner) {
            reservation.leaseUntil = now + lease
            renewed++
          }
        }
        return renewed
      }),
    reclaim: Effect.map(Clock.currentTimeMillis, (now) => {
      let reclaimed = 0
      for (const [id, reservation] of open) {
        if (reservation.leaseUntil < now) reclaimed += close(id, (r) => r.amount) !== undefined ? 1 : 0
      }
      return reclaimed
    }),
    balances: (keys) =>
      Effect.sync(() =>
        keys.map((key): Balance => {
          const cell = cells.get(key)
          const [scope = "", window = "total", period = ""] = key.split("|")
          return cell === undefined
            ? { scope, window: window as Window, period, spent: 0n, reserved: 0n, overrun: 0n }
            : {
              scope: cell.scope,
              window: cell.window,
              period: cell.period,
              spent: cell.spent,
              reserved: cell.reserved,
              overrun: cell.overrun
            }
        })
      )
  })
}

/** Reserves in the budget in context. */
export const reserve = (
  scope: string | undefined,
  amount: Money.Money,
  options?: ReserveOptions
): Effect.Effect<Reservation, BudgetExceeded | BudgetStoreError, Budget> =>
  Effect.flatMap(Budget, (budget) => budget.reserve(scope, amount, options))

/** The state of a scope and its ancestors in the budget in context. */
export const status = (scope?: string): Effect.Effect<ReadonlyArray<Status>, BudgetStoreError, Budget> =>
  Effect.flatMap(Budget, (budget) => budget.status(scope))
