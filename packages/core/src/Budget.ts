/**
 * Spend limits that cannot be overspent. A call's budget scope is a path (`tenant:acme/run:42`);
 * it charges that scope, every ancestor (`tenant:acme`) and the implicit root `global`. Limits are
 * set per scope path and window: `total`, the UTC `day`, or the UTC calendar `month`.
 *
 * - `reserve` takes the call's worst-case cost from every counter of the chain at once, all or
 *   nothing, before anything is sent; it fails with `BudgetExceeded` when any limit would be passed
 *   (spent + reserved + requested > limit). So spent + reserved never exceeds a limit.
 * - `settle` charges the actual cost and frees the rest of the reservation; `release` frees it all
 *   when nothing was billed. A charge that is partly guessed (an attempt that may have been billed
 *   returned no usage) is marked `estimated`.
 * - A reservation carries a lease (owner and expiry). One whose owner died is reclaimed at its full
 *   reserved amount, charged as spent and estimated, so spend is never under-counted; a late settle
 *   of a reclaimed reservation changes nothing, so nothing is counted twice. Reclaiming runs when the
 *   layer starts and then every `reclaimEvery`. The lease must outlast a round (retries included).
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
 * const budget = BudgetSql.layer({ limits: [{ scope: "tenant:acme", window: "day", limit: "25" }] })
 *   .pipe(Layer.provide(SqliteClient.layer({ filename: ".keel/budget.db" })))
 * const llm = Llm.layer().pipe(Layer.provide(Layer.merge(model, budget)))
 * ```
 * A reservation is charged to the windows it was made in, even when it
 * is settled after midnight. Configuration is validated up front: a negative or non-numeric limit,
 * an unknown window, an illegal scope name is a `BudgetConfigError` naming the field.
 */
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
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

/** The budget store failed (database unreachable, locked, corrupt): the budget cannot be checked. */
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

/** A counter's state. */
export interface Usage {
  readonly scope: string
  readonly window: Window
  readonly period: string
  readonly spent: Money.Money
  readonly reserved: Money.Money
}

/** What a store is asked to reserve. Counters are sorted by key (stores lock in that order). */
export interface ReserveRequest {
  readonly id: string
  readonly owner: string
  readonly amount: Money.Money
  readonly counters: ReadonlyArray<Counter>
  readonly now: number
  readonly leaseUntil: number
}

/** Where counters and open reservations live. Every operation is atomic. */
export class BudgetStore extends Context.Tag("@keel/core/Budget/BudgetStore")<BudgetStore, BudgetStore.Service>() {}

export declare namespace BudgetStore {
  export interface Service {
    /** Adds `amount` to the reserved sum of every counter, or to none when one would pass its limit. */
    readonly reserve: (request: ReserveRequest) => Effect.Effect<void, BudgetExceeded | BudgetStoreError>
    /**
     * Adds `amount` to an open reservation (same id and counters), renewing its lease, or fails as
     * `reserve` does; false when the reservation is no longer open.
     */
    readonly extend: (request: ReserveRequest) => Effect.Effect<boolean, BudgetExceeded | BudgetStoreError>
    /** Charges an open reservation at `amount` and closes it; false when it was no longer open (reclaimed). */
    readonly settle: (
      id: string,
      amount: Money.Money,
      estimated: boolean,
      now: number
    ) => Effect.Effect<boolean, BudgetStoreError>
    /** Closes an open reservation charging nothing; false when it was no longer open. */
    readonly release: (id: string, now: number) => Effect.Effect<boolean, BudgetStoreError>
    /** Charges every open reservation whose lease expired before `now` at its reserved amount; returns how many. */
    readonly reclaim: (now: number) => Effect.Effect<number, BudgetStoreError>
    /** The state of the given counters (missing ones are zero). */
    readonly usage: (keys: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Usage>, BudgetStoreError>
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
}

/** A scope's state in one window. */
export interface Status extends Usage {
  readonly limit: Money.Money | undefined
}

export class Budget extends Context.Tag("@keel/core/Budget")<Budget, Budget.Service>() {}

export declare namespace Budget {
  export interface Service {
    /** Reserves `amount` in `scope` (default `global`) and all its ancestors, or fails with `BudgetExceeded`. */
    readonly reserve: (
      scope: string | undefined,
      amount: Money.Money
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
    /** Charges the actual cost and frees the rest. `estimated` marks a charge that is partly a guess. */
    readonly settle: (
      reservation: Reservation,
      cost: Money.Money,
      options?: { readonly estimated?: boolean }
    ) => Effect.Effect<void, BudgetStoreError>
    /** Frees a reservation when nothing was billed. */
    readonly release: (reservation: Reservation) => Effect.Effect<void, BudgetStoreError>
    /** Spent, reserved and limit of a scope and its ancestors, in every window that has a limit, plus total. */
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
  /** How long a reservation is held for its owner before it may be reclaimed. Default 10 minutes. */
  readonly lease?: Duration.DurationInput
  /** How often expired reservations are reclaimed. Default: every minute; also once at start. */
  readonly reclaimEvery?: Duration.DurationInput
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

const periodOf = (window: Window, now: number): string => {
  if (window === "total") return "total"
  const iso = new Date(now).toISOString()
  return window === "day" ? iso.slice(0, 10) : iso.slice(0, 7)
}

/** Builds the service over the `BudgetStore` in context; reclaims expired reservations now and periodically. */
export const make = (
  options: Options = {}
): Effect.Effect<Budget.Service, BudgetConfigError | BudgetStoreError, BudgetStore | Scope.Scope> =>
  Effect.gen(function*() {
    const limits = yield* validateLimits(options.limits ?? [])
    const lease = Duration.toMillis(options.lease ?? Duration.minutes(10))
    if (!(lease > 0)) {
      return yield* new BudgetConfigError({ field: "lease", reason: "must be a positive duration" })
    }
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
    const countersOf = (scope: string, now: number): ReadonlyArray<Counter> | undefined => {
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
      })
      return counters.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    }

    const reserve = (scope: string | undefined, amount: Money.Money) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const path = scope ?? root
        const counters = countersOf(path, now)
        if (counters === undefined) {
          return Effect.die(new BudgetConfigError({ field: "scope", reason: `illegal scope "${path}"` }))
        }
        if (amount < 0n) return Effect.dieMessage(`Budget.reserve: negative amount ${Money.format(amount)}`)
        const id = `${owner}:${++sequence}`
        return Effect.as(
          store.reserve({ id, owner, amount, counters, now, leaseUntil: now + lease }),
          { id, scope: path, amount, counters }
        )
      })

    const extend: Budget.Service["extend"] = (reservation, amount) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        if (amount < 0n) return Effect.dieMessage(`Budget.extend: negative amount ${Money.format(amount)}`)
        const request = { ...reservation, owner, amount, now, leaseUntil: now + lease }
        return Effect.flatMap(store.extend(request), (open) =>
          open
            ? Effect.succeed({ ...reservation, amount: reservation.amount + amount })
            : Effect.fail(
              new BudgetStoreError({
                operation: "extend a reservation",
                reason: `reservation ${reservation.id} is no longer open: its lease expired and it was reclaimed`
              })
            ))
      })

    const settle: Budget.Service["settle"] = (reservation, cost, settleOptions) =>
      Effect.flatMap(
        Clock.currentTimeMillis,
        (now) => store.settle(reservation.id, cost, settleOptions?.estimated ?? false, now)
      )

    const release: Budget.Service["release"] = (reservation) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => store.release(reservation.id, now))

    const status: Budget.Service["status"] = (scope) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const counters = countersOf(scope ?? root, now)
        if (counters === undefined) {
          return Effect.fail(
            new BudgetStoreError({ operation: "read the status", reason: `illegal scope "${String(scope)}"` })
          )
        }
        return Effect.map(store.usage(counters.map((counter) => counter.key)), (usages) =>
          counters.map((counter, index): Status => ({
            scope: counter.scope,
            window: counter.window,
            period: counter.period,
            limit: counter.limit,
            spent: usages[index]?.spent ?? 0n,
            reserved: usages[index]?.reserved ?? 0n
          })))
      })

    const reclaim = Effect.flatMap(Clock.currentTimeMillis, store.reclaim)

    yield* reclaim
    yield* reclaim.pipe(
      Effect.catchAll((error) => Effect.logWarning("Budget: reclaiming expired reservations failed", error)),
      Effect.schedule(Schedule.spaced(options.reclaimEvery ?? Duration.minutes(1))),
      Effect.interruptible,
      Effect.forkScoped
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
    readonly scope: string
    readonly window: Window
    readonly period: string
  }
  type Open = { amount: Money.Money; readonly cells: ReadonlyArray<Cell>; leaseUntil: number }
  const cells = new Map<string, Cell>()
  const open = new Map<string, Open>()

  const close = (id: string, charge: (reservation: Open) => Money.Money): boolean => {
    const reservation = open.get(id)
    if (reservation === undefined) return false
    open.delete(id)
    const charged = charge(reservation)
    for (const cell of reservation.cells) {
      cell.reserved -= reservation.amount
      cell.spent += charged
    }
    return true
  }

  return BudgetStore.of({
    reserve: (request) =>
      Effect.suspend(() => {
        if (open.has(request.id)) return Effect.dieMessage(`Budget: reservation ${request.id} already open`)
        const found: Array<Cell> = []
        for (const counter of request.counters) {
          let cell = cells.get(counter.key)
          if (cell === undefined) {
            cell = { spent: 0n, reserved: 0n, scope: counter.scope, window: counter.window, period: counter.period }
            cells.set(counter.key, cell)
          }
          if (!fits(counter, cell.spent, cell.reserved, request.amount)) {
            return Effect.fail(exceeded(counter, cell.spent, cell.reserved, request.amount))
          }
          found.push(cell)
        }
        for (const cell of found) cell.reserved += request.amount
        open.set(request.id, { amount: request.amount, cells: found, leaseUntil: request.leaseUntil })
        return Effect.void
      }),
    extend: (request) =>
      Effect.suspend(() => {
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
        reservation.leaseUntil = request.leaseUntil
        return Effect.succeed(true)
      }),
    settle: (id, amount) => Effect.sync(() => close(id, () => amount)),
    release: (id) => Effect.sync(() => close(id, () => 0n)),
    reclaim: (now) =>
      Effect.sync(() => {
        let reclaimed = 0
        for (const [id, reservation] of open) {
          if (reservation.leaseUntil < now) reclaimed += close(id, (r) => r.amount) ? 1 : 0
        }
        return reclaimed
      }),
    usage: (keys) =>
      Effect.sync(() =>
        keys.map((key): Usage => {
          const cell = cells.get(key)
          const [scope = "", window = "total", period = ""] = key.split("|")
          return cell === undefined
            ? { scope, window: window as Window, period, spent: 0n, reserved: 0n }
            : {
              scope: cell.scope,
              window: cell.window,
              period: cell.period,
              spent: cell.spent,
              reserved: cell.reserved
            }
        })
      )
  })
}

/** Reserves in the budget in context. */
export const reserve = (
  scope: string | undefined,
  amount: Money.Money
): Effect.Effect<Reservation, BudgetExceeded | BudgetStoreError, Budget> =>
  Effect.flatMap(Budget, (budget) => budget.reserve(scope, amount))

/** The state of a scope and its ancestors in the budget in context. */
export const status = (scope?: string): Effect.Effect<ReadonlyArray<Status>, BudgetStoreError, Budget> =>
  Effect.flatMap(Budget, (budget) => budget.status(scope))
