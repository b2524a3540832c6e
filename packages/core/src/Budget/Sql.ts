/**
 * A `BudgetStore` on `@effect/sql`'s `SqlClient`, one implementation for SQLite (the embedded
 * default: a file in WAL mode, shared by the processes of one machine) and Postgres (shared by many
 * processes and machines). Provide the client layer (`@effect/sql-sqlite-node`, `@effect/sql-pg`).
 *
 * Tables (prefix configurable, default `keel_budget`): `_counters` (spent and reserved per scope,
 * window and period), `_reservations` (every reservation: open with its lease, then settled,
 * released or reclaimed with the amount charged — the ledger) and `_migrations`.
 *
 * Atomicity: each operation is one transaction. Reserving adds the amount to the chain's counter rows
 * (creating missing ones), locked in key order (Postgres: `UPDATE … FROM (SELECT … ORDER BY key FOR
 * UPDATE)`; on SQLite the first statement is a write, so the transaction holds the database's write
 * lock from its start), then checks every limit on the new sums and rolls back if one is passed:
 * all rows or none. Settling closes the reservation row (`WHERE status = 'open'`) before it
 * touches counters, so a reservation is charged exactly once, even when a reclaim races its owner.
 *
 * Amounts are pico-dollar BIGINTs (SQLite INTEGER: up to ~9.2 million USD per counter).
 * A ledger that cannot be opened or read (corrupt, locked, unreachable) is a `BudgetStoreError`
 * when the store starts: it is never recreated empty.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Budget from "../Budget.js"
import type { BudgetExceeded } from "../LlmError.js"

export interface Options {
  /** Table name prefix: letters, digits and underscores. Default `keel_budget`. */
  readonly tablePrefix?: string
  /**
   * Trace each SQL statement as its own span (`@effect/sql`'s default). Default false: a call's
   * budget work is 4 to 8 statements, whose spans would crowd every trace and cost 20–60 % of the
   * store's CPU per call.
   */
  readonly traceStatements?: boolean
}

const storeError = (operation: string) => (error: SqlError) =>
  new Budget.BudgetStoreError({ operation, reason: describe(error), cause: error })

const describe = (error: SqlError): string => {
  const cause = error.cause as { readonly message?: unknown; readonly code?: unknown } | undefined
  const detail = typeof cause?.message === "string" ? cause.message : ""
  const code = typeof cause?.code === "string" ? ` (${cause.code})` : ""
  return detail === "" ? error.message : `${error.message}: ${detail}${code}`
}

/** Postgres deadlock or serialization failure: the transaction may simply run again. */
const isTransient = (error: SqlError): boolean => {
  const code = (error.cause as { readonly code?: unknown } | undefined)?.code
  return code === "40P01" || code === "40001"
}

const retryTransient = <A, E>(effect: Effect.Effect<A, E | SqlError>) =>
  Effect.retry(effect, {
    while: (error) => (error as { readonly _tag?: unknown })._tag === "SqlError" && isTransient(error as SqlError),
    schedule: Schedule.intersect(Schedule.exponential("5 millis"), Schedule.recurs(8))
  })

type Migration = (tables: Tables) => ReadonlyArray<string>

interface Tables {
  readonly counters: string
  readonly reservations: string
  readonly migrations: string
}

/** Schema versions, applied in order once each. Never edit a released step: add one. */
const migrations: ReadonlyArray<Migration> = [
  (t) => [
    `CREATE TABLE ${t.counters} (
      key TEXT PRIMARY KEY,
      scope TEXT NOT NULL,
      time_window TEXT NOT NULL,
      period TEXT NOT NULL,
      spent BIGINT NOT NULL DEFAULT 0,
      reserved BIGINT NOT NULL DEFAULT 0
    )`,
    `CREATE TABLE ${t.reservations} (
      id TEXT PRIMARY KEY,
      owner TEXT NOT NULL,
      amount BIGINT NOT NULL,
      counters TEXT NOT NULL,
      created_at BIGINT NOT NULL,
      lease_until BIGINT NOT NULL,
      status TEXT NOT NULL,
      charged BIGINT,
      estimated INTEGER NOT NULL DEFAULT 0,
      closed_at BIGINT
    )`,
    `CREATE INDEX ${t.reservations}_open ON ${t.reservations} (lease_until) WHERE status = 'open'`
  ]
]

/**
 * Runs the pending migrations under a lock, so processes starting together apply each step once:
 * a Postgres advisory lock; on SQLite a first statement that writes, so the transaction takes the
 * write lock at once (a transaction that reads first cannot wait for the lock when it later writes).
 */
const migrate = (sql: SqlClient.SqlClient, tables: Tables) => {
  const createVersions = sql.unsafe(
    `CREATE TABLE IF NOT EXISTS ${tables.migrations} (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`
  )
  return Effect.zipRight(
    sql.onDialectOrElse({ pg: () => Effect.void, orElse: () => createVersions }),
    sql.withTransaction(
      Effect.gen(function*() {
        yield* sql.onDialectOrElse({
          pg: () => Effect.zipRight(sql`SELECT pg_advisory_xact_lock(hashtext(${tables.migrations}))`, createVersions),
          orElse: () => sql.unsafe(`UPDATE ${tables.migrations} SET version = version WHERE version < 0`)
        })
        const rows = yield* sql.unsafe<{ readonly version: number | string }>(
          `SELECT version FROM ${tables.migrations}`
        )
        const applied = new Set(rows.map((row) => Number(row.version)))
        for (const [index, migration] of migrations.entries()) {
          const version = index + 1
          if (applied.has(version)) continue
          for (const statement of migration(tables)) yield* sql.unsafe(statement)
          yield* sql`INSERT INTO ${sql(tables.migrations)} (version, applied_at) VALUES (${version}, ${Date.now()})`
        }
      })
    )
  )
}

/** Builds the store over the `SqlClient` in context, migrating its tables first. */
export const make = (
  options: Options = {}
): Effect.Effect<Budget.BudgetStore.Service, Budget.BudgetStoreError | Budget.BudgetConfigError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const prefix = options.tablePrefix ?? "keel_budget"
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,40}$/.test(prefix)) {
      return yield* new Budget.BudgetConfigError({
        field: "tablePrefix",
        reason: "must be letters, digits and underscores, starting with a letter or underscore"
      })
    }
    const sql = yield* SqlClient.SqlClient
    const tables: Tables = {
      counters: `${prefix}_counters`,
      reservations: `${prefix}_reservations`,
      migrations: `${prefix}_migrations`
    }
    yield* migrate(sql, tables).pipe(retryTransient, Effect.mapError(storeError("open the budget ledger")))

    const counters = sql(tables.counters)
    const reservations = sql(tables.reservations)
    const isPg = sql.onDialectOrElse({ pg: () => true, orElse: () => false })

    type CounterRow = { readonly key: string; readonly spent: string; readonly reserved: string }

    /**
     * Adds `delta` to the reserved and `charge` to the spent sum of the counters that exist, returning
     * their new state. On Postgres the rows are locked in key order first (no deadlock between
     * transactions charging overlapping chains); on SQLite the transaction holds the write lock.
     */
    const bump = (keys: ReadonlyArray<string>, delta: bigint, charge: bigint) =>
      isPg
        ? sql<CounterRow>`UPDATE ${counters} AS c
            SET reserved = c.reserved + ${delta}, spent = c.spent + ${charge}
            FROM (SELECT key FROM ${counters} WHERE key IN ${sql.in(keys)} ORDER BY key FOR UPDATE) AS locked
            WHERE c.key = locked.key
            RETURNING c.key, CAST(c.spent AS TEXT) AS spent, CAST(c.reserved AS TEXT) AS reserved`
        : sql<CounterRow>`UPDATE ${counters}
            SET reserved = reserved + ${delta}, spent = spent + ${charge}
            WHERE key IN ${sql.in(keys)}
            RETURNING key, CAST(spent AS TEXT) AS spent, CAST(reserved AS TEXT) AS reserved`

    /** After counters took `request.amount`: fails (rolling the transaction back) when one is over its limit. */
    const checkFits = (request: Budget.ReserveRequest, rows: ReadonlyArray<CounterRow>) =>
      Effect.suspend(() => {
        const byKey = new Map(rows.map((row) => [row.key, row]))
        for (const counter of request.counters) {
          const row = byKey.get(counter.key)
          const spent = BigInt(row?.spent ?? 0)
          const reserved = BigInt(row?.reserved ?? 0) - request.amount
          if (!Budget.fits(counter, spent, reserved, request.amount)) {
            return Effect.fail(Budget.exceeded(counter, spent, reserved, request.amount))
          }
        }
        return Effect.void
      })

    const reserve = (request: Budget.ReserveRequest): Effect.Effect<void, BudgetExceeded | SqlError> =>
      sql.withTransaction(
        Effect.gen(function*() {
          const keys = request.counters.map((counter) => counter.key)
          // Reserve first, check after: the transaction rolls back when a limit is passed. On SQLite the
          // first statement being a write means the write lock is held from the start.
          const rows: Array<CounterRow> = [...(yield* bump(keys, request.amount, 0n))]
          if (rows.length < keys.length) {
            const found = new Set(rows.map((row) => row.key))
            const missing = request.counters.filter((counter) => !found.has(counter.key))
            const inserted = yield* sql<CounterRow>`INSERT INTO ${counters} ${
              sql.insert(missing.map((counter) => ({
                key: counter.key,
                scope: counter.scope,
                time_window: counter.window,
                period: counter.period,
                spent: 0n,
                reserved: request.amount
              })))
            } ON CONFLICT (key) DO NOTHING
              RETURNING key, CAST(spent AS TEXT) AS spent, CAST(reserved AS TEXT) AS reserved`
            rows.push(...inserted)
            if (inserted.length < missing.length) {
              // Another transaction created them meanwhile (Postgres): they exist now.
              const created = new Set(inserted.map((row) => row.key))
              rows.push(
                ...(yield* bump(missing.map((c) => c.key).filter((key) => !created.has(key)), request.amount, 0n))
              )
            }
          }
          yield* checkFits(request, rows)
          yield* sql`INSERT INTO ${reservations} ${
            sql.insert({
              id: request.id,
              owner: request.owner,
              amount: request.amount,
              counters: keys.join(","),
              created_at: request.now,
              lease_until: request.leaseUntil,
              status: "open",
              estimated: 0
            })
          }`
        })
      )

    const extend = (request: Budget.ReserveRequest): Effect.Effect<boolean, BudgetExceeded | SqlError> =>
      sql.withTransaction(
        Effect.gen(function*() {
          const open = yield* sql<{ readonly id: string }>`UPDATE ${reservations}
            SET amount = amount + ${request.amount}, lease_until = ${request.leaseUntil}
            WHERE id = ${request.id} AND status = 'open'
            RETURNING id`
          if (open.length === 0) return false
          const rows = yield* bump(request.counters.map((counter) => counter.key), request.amount, 0n)
          yield* checkFits(request, rows)
          return true
        })
      )

    /** Closes an open reservation charging `charge(amount)`; false when it was not open. */
    const close = (
      id: string,
      status: "settled" | "released",
      charged: bigint | undefined,
      estimated: boolean,
      now: number
    ) =>
      sql.withTransaction(
        Effect.gen(function*() {
          const closed = yield* sql<{ readonly amount: string; readonly counters: string }>`
            UPDATE ${reservations}
            SET status = ${status}, charged = ${charged ?? 0n}, estimated = ${estimated ? 1 : 0}, closed_at = ${now}
            WHERE id = ${id} AND status = 'open'
            RETURNING CAST(amount AS TEXT) AS amount, counters`
          const row = closed[0]
          if (row === undefined) return false
          yield* bump(row.counters.split(","), -BigInt(row.amount), charged ?? 0n)
          return true
        })
      )

    const reclaim = (now: number) =>
      sql.withTransaction(
        Effect.gen(function*() {
          const rows = yield* sql<{ readonly amount: string; readonly counters: string }>`
            UPDATE ${reservations}
            SET status = 'reclaimed', charged = amount, estimated = 1, closed_at = ${now}
            WHERE status = 'open' AND lease_until < ${now}
            RETURNING CAST(amount AS TEXT) AS amount, counters`
          if (rows.length === 0) return 0
          const totals = new Map<string, bigint>()
          for (const row of rows) {
            for (const key of row.counters.split(",")) totals.set(key, (totals.get(key) ?? 0n) + BigInt(row.amount))
          }
          for (const key of Array.from(totals.keys()).sort()) {
            const amount = totals.get(key)!
            yield* bump([key], -amount, amount)
          }
          return rows.length
        })
      )

    const usage = (keys: ReadonlyArray<string>) =>
      Effect.map(
        keys.length === 0 ? Effect.succeed([]) : sql<
          {
            readonly key: string
            readonly scope: string
            readonly time_window: Budget.Window
            readonly period: string
            readonly spent: string
            readonly reserved: string
          }
        >`SELECT key, scope, time_window, period, CAST(spent AS TEXT) AS spent, CAST(reserved AS TEXT) AS reserved
          FROM ${counters} WHERE key IN ${sql.in(keys)}`,
        (rows) => {
          const byKey = new Map(rows.map((row) => [row.key, row]))
          return keys.map((key): Budget.Usage => {
            const row = byKey.get(key)
            if (row !== undefined) {
              return {
                scope: row.scope,
                window: row.time_window,
                period: row.period,
                spent: BigInt(row.spent),
                reserved: BigInt(row.reserved)
              }
            }
            const [scope = "", window = "total", period = ""] = key.split("|")
            return { scope, window: window as Budget.Window, period, spent: 0n, reserved: 0n }
          })
        }
      )

    const traced = options.traceStatements === true
      ? <A, E>(effect: Effect.Effect<A, E>) => effect
      : <A, E>(effect: Effect.Effect<A, E>) => Effect.withTracerEnabled(effect, false)

    return Budget.BudgetStore.of({
      reserve: (request) =>
        reserve(request).pipe(
          retryTransient,
          Effect.catchTag("SqlError", (error) => Effect.fail(storeError("reserve")(error))),
          traced
        ),
      extend: (request) =>
        extend(request).pipe(
          retryTransient,
          Effect.catchTag("SqlError", (error) => Effect.fail(storeError("extend a reservation")(error))),
          traced
        ),
      settle: (id, amount, estimated, now) =>
        close(id, "settled", amount, estimated, now).pipe(
          retryTransient,
          Effect.mapError(storeError("settle")),
          traced
        ),
      release: (id, now) =>
        close(id, "released", undefined, false, now).pipe(
          retryTransient,
          Effect.mapError(storeError("release")),
          traced
        ),
      reclaim: (now) => reclaim(now).pipe(retryTransient, Effect.mapError(storeError("reclaim")), traced),
      usage: (keys) => usage(keys).pipe(Effect.mapError(storeError("read usage")), traced)
    })
  })

/** The store as a layer over the `SqlClient` in context. */
export const layerStore = (
  options: Options = {}
): Layer.Layer<Budget.BudgetStore, Budget.BudgetStoreError | Budget.BudgetConfigError, SqlClient.SqlClient> =>
  Layer.effect(Budget.BudgetStore, make(options))

/** The budget over this store and the `SqlClient` in context. */
export const layer = (
  options: Budget.Options & Options = {}
): Layer.Layer<Budget.Budget, Budget.BudgetStoreError | Budget.BudgetConfigError, SqlClient.SqlClient> =>
  Layer.provide(Budget.layer(options), layerStore(options))

/** The budget over this store, its options read from `Config`. */
export const layerConfig = (
  config: Config.Config.Wrap<Budget.Options & Options>
): Layer.Layer<
  Budget.Budget,
  Budget.BudgetStoreError | Budget.BudgetConfigError | ConfigError.ConfigError,
  SqlClient.SqlClient
> => Layer.unwrapEffect(Effect.map(Config.unwrap(config), layer))
