/**
 * A `BudgetStore` on `@effect/sql`'s `SqlClient`, one implementation for SQLite (the embedded
 * default: a file in WAL mode, shared by the processes of one machine) and Postgres (shared by many
 * processes and machines). Provide the client layer (`@effect/sql-pg`), or use `layerSqlite`, which
 * checks the file before it opens it.
 *
 * Tables (prefix configurable, default `keel_budget`): `_counters` (spent, reserved and overrun per
 * scope, window and period), `_reservations` (every reservation: open with its lease, then settled,
 * released, reclaimed or adopted with the amount charged — the ledger; with its call key, and the
 * amount it adopted from a dead process's attempt at the same call, if any) and `_migrations`; on
 * Postgres also the functions `_reserve` and `_close` (see `reserveFunction`).
 *
 * Atomicity and locks. Postgres: reserving, settling and releasing are one statement each (one round
 * trip, no transaction around it): it locks the chain's counter rows in key order, checks every limit
 * and writes the counters and the ledger row, all or nothing, so row locks are held for that one
 * statement only. Reclaiming is one statement too, comparing leases with the database's clock as it runs. Lease times there come from the database's clock, read as the row is written (one
 * clock for every machine). SQLite: each operation is one transaction whose first statement is a
 * write, so it holds the database's write lock from its start; the lease is timed by the process
 * clock read under that lock. Settling closes the reservation row (`WHERE status = 'open'`) before
 * it touches counters, so a reservation is charged exactly once, even when a reclaim races its owner.
 *
 * At most `concurrency` budget operations of this process use the client at once; the rest queue
 * in the process, first come first served, settles and releases ahead of reservations (they free
 * the room reservations wait for). Reclaiming and lease renewal are never starved by the
 * calls they serve: on Postgres they bypass that queue (give the client a connection more than
 * `concurrency`); on SQLite, whose one connection every statement shares, they go ahead of it. SQLite
 * statements run synchronously, so a busy store lets the event loop turn every 10 ms (timers and
 * I/O keep running).
 *
 * Interruption. An operation interrupted while it queues leaves the queue, having sent nothing; once
 * its statement is sent, it runs to its end and the interruption waits for it. `@effect/sql-pg`
 * would cancel it with `pg_cancel_backend` from another pooled connection, which under load comes
 * late: the connection went back to the pool with the statement still running, so the caller's
 * release of what it reserved could run first, find nothing, and the statement then committed a
 * reservation nobody held (seen under `bench/budget-burst.ts`: the budget blocked until the lease ran out).
 *
 * Amounts are pico-dollar BIGINTs (SQLite INTEGER: up to ~9.2 million USD per counter). Every
 * failure is a `BudgetStoreError`. A ledger that cannot be opened or read (corrupt, locked,
 * unreachable) fails when the store starts: it is never recreated empty.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Budget from "../Budget.js"
import * as Gate from "../Gate.js"
import type { BudgetExceeded } from "../LlmError.js"
import * as Sqlite from "../Sqlite.js"

export interface Options {
  /** Table name prefix: letters, digits and underscores, folded to lower case. Default `keel_budget`. */
  readonly tablePrefix?: string
  /**
   * Trace each SQL statement as its own span (`@effect/sql`'s default). Default false: a call's
   * budget work is 2 to 8 statements, whose spans would crowd every trace and cost 20–60 % of the
   * store's CPU per call.
   */
  readonly traceStatements?: boolean
  /**
   * How many budget operations of this process use the client at once (the rest wait in the
   * process). Default 4. Keep it below the client's connection count.
   */
  readonly concurrency?: number
}

const storeError = (operation: string) => (error: SqlError) =>
  new Budget.BudgetStoreError({ operation, reason: describe(error), cause: error })

const describe = (error: SqlError): string => {
  const cause = error.cause as { readonly message?: unknown; readonly code?: unknown } | undefined
  const detail = typeof cause?.message === "string" ? cause.message : ""
  const code = typeof cause?.code === "string" ? ` (${cause.code})` : ""
  return detail === "" ? error.message : `${error.message}: ${detail}${code}`
}

/**
 * The statement may simply run again: a Postgres deadlock or serialization failure; a statement
 * cancelled "due to user request" that this fiber did not ask to cancel (`@effect/sql-pg` cancels an
 * interrupted query with `pg_cancel_backend`, which can land after that query ended, on the next
 * statement the pooled connection runs, when the pool is shared with code other than this store);
 * or no pooled connection came free within the client's `connectTimeout` (a pool shared with busy
 * callers, as a cluster worker's is): nothing was sent. A server that refuses connections is not
 * transient: the call fails closed at once.
 */
const isTransient = (error: SqlError): boolean => {
  const cause = error.cause as { readonly code?: unknown; readonly message?: unknown } | undefined
  return cause?.code === "40P01" || cause?.code === "40001" ||
    (cause?.code === "57014" && typeof cause.message === "string" && cause.message.endsWith("due to user request")) ||
    cause?.message === "timeout exceeded when trying to connect"
}

const retryTransient = <A, E>(effect: Effect.Effect<A, E | SqlError>) =>
  Effect.retry(effect, {
    while: (error) => (error as { readonly _tag?: unknown })._tag === "SqlError" && isTransient(error as SqlError),
    schedule: Schedule.intersect(Schedule.exponential("5 millis"), Schedule.recurs(8))
  })

/**
 * Maps the SQL client's failures to `BudgetStoreError`: its `SqlError`s, and the defects it raises
 * itself (a failed COMMIT is a defect in `@effect/sql`), so nothing escapes untyped.
 */
const typed = (operation: string) =>
<A, E, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, Exclude<E, SqlError> | Budget.BudgetStoreError, R> =>
  effect.pipe(
    Effect.catchAll((error) =>
      Effect.fail(
        (error as { readonly _tag?: unknown })._tag === "SqlError" ? storeError(operation)(error as SqlError) : error
      )
    ),
    Effect.catchAllDefect((defect) =>
      Effect.fail(
        new Budget.BudgetStoreError({
          operation,
          reason: defect instanceof Error ? defect.message : Cause.pretty(Cause.die(defect)),
          cause: defect
        })
      )
    )
  ) as Effect.Effect<A, Exclude<E, SqlError> | Budget.BudgetStoreError, R>

type Migration = (tables: Tables, dialect: "pg" | "sqlite") => ReadonlyArray<string>

interface Tables {
  readonly counters: string
  readonly reservations: string
  readonly migrations: string
  /** Postgres: the functions that reserve and close (see `reserveFunction`). */
  readonly reserve: string
  readonly close: string
}

/** Postgres: the database's clock in epoch milliseconds, read anew at each use (a row's two times read it once). */
const pgNow = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"

/**
 * Postgres: a reservation in one statement. Lock the chain's counters in key order, check every
 * limit, and only when all fit add the amount and write the ledger row. Returns the counters found
 * (their sums before) and whether it reserved. A request that does not fit by the counters as last
 * committed is refused without taking a lock (spent only grows, so a refusal that rests on spent
 * stands; one that rests on reservations is waited out and asked again), so the refusals of a burst
 * do not queue on the chain's row locks in front of the reservations and settles that fit. When an
 * open reservation under the request's key could be adopted, it writes nothing and says so (`adoptPg`
 * follows): the usual call, with nothing to adopt, stays one statement.
 *
 * A PL/pgSQL function rather than the statement itself: a function's statements are planned once per
 * connection, while a statement sent as text is planned on every call, and planning this one took
 * about twice as long as running it (0.36 against 0.16 ms warm; 0.77 ms a call in three cluster
 * workers sharing 2 cores). `use_column`: a bare name is the column, not the result's field. The
 * migration that creates it runs once per ledger: a change to it is a new step (`CREATE OR REPLACE`).
 */
const reserveFunction = (t: Tables) =>
  `CREATE OR REPLACE FUNCTION ${t.reserve}(p_keys TEXT[], p_limits NUMERIC[], p_amount BIGINT, p_id TEXT,
    p_owner TEXT, p_lease BIGINT, p_call_key TEXT)
  RETURNS TABLE (key TEXT, spent TEXT, reserved TEXT, fits BOOLEAN, adoptable BOOLEAN)
  LANGUAGE plpgsql AS $$
  #variable_conflict use_column
  BEGIN
    RETURN QUERY WITH req AS (
      SELECT * FROM unnest(p_keys, p_limits) AS r(key, lim)
    ), adoptable AS (
      SELECT EXISTS (SELECT 1 FROM ${t.reservations}
        WHERE call_key = p_call_key AND status = 'open' AND counters = array_to_string(p_keys, ',')) AS found
    ), peek AS (
      SELECT c.key, c.spent, c.reserved, req.lim FROM ${t.counters} c JOIN req ON c.key = req.key
    ), hopeful AS (
      SELECT count(*) = cardinality(p_keys)
        AND coalesce(bool_and(lim IS NULL OR spent + reserved + p_amount <= lim), true) AS yes
      FROM peek
    ), locked AS (
      SELECT c.key, c.spent, c.reserved, req.lim FROM ${t.counters} c JOIN req ON c.key = req.key
      WHERE (SELECT yes FROM hopeful)
      ORDER BY c.key FOR UPDATE OF c
    ), verdict AS (
      SELECT count(*) = cardinality(p_keys)
        AND coalesce(bool_and(lim IS NULL OR spent + reserved + p_amount <= lim), true) AS fits,
        NOT (SELECT found FROM adoptable) AS fresh
      FROM locked
    ), bumped AS (
      UPDATE ${t.counters} c SET reserved = c.reserved + p_amount
      FROM verdict WHERE verdict.fits AND verdict.fresh AND c.key IN (SELECT key FROM locked)
      RETURNING c.key
    ), written AS (
      INSERT INTO ${t.reservations} (id, owner, amount, counters, created_at, lease_until, status, estimated, call_key)
      SELECT p_id, p_owner, p_amount, array_to_string(p_keys, ','), stamp.at, stamp.at + p_lease, 'open', 0, p_call_key
      FROM verdict, (SELECT ${pgNow} AS at) stamp WHERE verdict.fits AND verdict.fresh
      RETURNING id
    )
    SELECT locked.key, CAST(locked.spent AS TEXT), CAST(locked.reserved AS TEXT),
      (SELECT fits FROM verdict), (SELECT found FROM adoptable)
    FROM locked
    UNION ALL
    SELECT peek.key, CAST(peek.spent AS TEXT), CAST(peek.reserved AS TEXT), false, false
    FROM peek WHERE NOT (SELECT yes FROM hopeful);
  END
  $$`

/**
 * Postgres: a close in one statement (a function, as `reserveFunction`): close the reservation if
 * open, charging the cost plus what it adopted (estimated when it adopted anything; a release of an
 * adopted reservation is a settle of what it adopted), and move its amount on its counters, locked in
 * key order. Nothing when it was not open.
 */
const closeFunction = (t: Tables) =>
  `CREATE OR REPLACE FUNCTION ${t.close}(p_id TEXT, p_status TEXT, p_charged BIGINT, p_estimated INTEGER)
  RETURNS TABLE (amount TEXT, charged TEXT)
  LANGUAGE plpgsql AS $$
  #variable_conflict use_column
  BEGIN
    RETURN QUERY WITH closed AS (
      UPDATE ${t.reservations}
      SET status = CASE WHEN adopted > 0 THEN 'settled' ELSE p_status END, charged = p_charged + adopted,
        estimated = CASE WHEN adopted > 0 THEN 1 ELSE p_estimated END, closed_at = ${pgNow}
      WHERE id = p_id AND status = 'open'
      RETURNING amount, counters, charged
    ), bumped AS (
      UPDATE ${t.counters} AS c
      SET reserved = c.reserved - closed.amount, spent = c.spent + closed.charged,
        overrun = c.overrun + GREATEST(closed.charged - closed.amount, 0)
      FROM closed, (
        SELECT k.key FROM ${t.counters} k, closed
        WHERE k.key = ANY(string_to_array(closed.counters, ','))
        ORDER BY k.key FOR UPDATE OF k
      ) AS locked
      WHERE c.key = locked.key
      RETURNING c.key
    )
    SELECT CAST(closed.amount AS TEXT), CAST(closed.charged AS TEXT) FROM closed;
  END
  $$`

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
  ],
  (t) => [
    `ALTER TABLE ${t.counters} ADD COLUMN overrun BIGINT NOT NULL DEFAULT 0`,
    `CREATE INDEX ${t.reservations}_owner ON ${t.reservations} (owner) WHERE status = 'open'`
  ],
  (t) => [
    `ALTER TABLE ${t.reservations} ADD COLUMN call_key TEXT`,
    `ALTER TABLE ${t.reservations} ADD COLUMN adopted BIGINT NOT NULL DEFAULT 0`,
    `CREATE INDEX ${t.reservations}_call_key ON ${t.reservations} (call_key) WHERE status = 'open'`
  ],
  (t, dialect) => dialect === "pg" ? [reserveFunction(t), closeFunction(t)] : []
]

/**
 * Runs the pending migrations under a lock, so processes starting together apply each step once:
 * a Postgres advisory lock; on SQLite a first statement that writes, so the transaction takes the
 * write lock at once (a transaction that reads first cannot wait for the lock when it later writes).
 */
const migrate = (sql: SqlClient.SqlClient, tables: Tables) => {
  const dialect = sql.onDialectOrElse({ pg: () => "pg" as const, orElse: () => "sqlite" as const })
  const createVersions = sql.unsafe(
    `CREATE TABLE IF NOT EXISTS ${tables.migrations} (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`
  )
  return Effect.zipRight(
    sql.onDialectOrElse({ pg: () => Effect.void, orElse: () => Effect.asVoid(createVersions) }),
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
          for (const statement of migration(tables, dialect)) yield* sql.unsafe(statement)
          yield* sql`INSERT INTO ${sql(tables.migrations)} (version, applied_at) VALUES (${version}, ${Date.now()})`
        }
      })
    )
  )
}

type CounterRow = { readonly key: string; readonly spent: string; readonly reserved: string }

/** Fails with the `BudgetExceeded` of the first counter over its limit once `amount` is added (rows hold the sums before). */
const checkFits = (
  counters: ReadonlyArray<Budget.Counter>,
  rows: ReadonlyArray<CounterRow>,
  amount: bigint,
  alreadyAdded: boolean
) =>
  Effect.suspend(() => {
    const byKey = new Map(rows.map((row) => [row.key, row]))
    for (const counter of counters) {
      const row = byKey.get(counter.key)
      const spent = BigInt(row?.spent ?? 0)
      const reserved = BigInt(row?.reserved ?? 0) - (alreadyAdded ? amount : 0n)
      if (!Budget.fits(counter, spent, reserved, amount)) {
        return Effect.fail(Budget.exceeded(counter, spent, reserved, amount))
      }
    }
    return Effect.void
  })

/**
 * The names of a prefix's tables and functions, in lower case, as Postgres folds the unquoted names of
 * the migrations; the quoted names of the later statements then name the same tables (SQLite ignores
 * case either way).
 */
const tablesOf = (tablePrefix: string): Effect.Effect<Tables, Budget.BudgetConfigError> => {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,40}$/.test(tablePrefix)) {
    return Effect.fail(
      new Budget.BudgetConfigError({
        field: "tablePrefix",
        reason: "must be letters, digits and underscores, starting with a letter or underscore"
      })
    )
  }
  const prefix = tablePrefix.toLowerCase()
  return Effect.succeed({
    counters: `${prefix}_counters`,
    reservations: `${prefix}_reservations`,
    migrations: `${prefix}_migrations`,
    reserve: `${prefix}_reserve`,
    close: `${prefix}_close`
  })
}

/**
 * Removes a ledger (default prefix `keel_budget`): its tables and, on Postgres, its functions. What
 * it held is gone.
 */
export const drop = (
  tablePrefix = "keel_budget"
): Effect.Effect<void, Budget.BudgetStoreError | Budget.BudgetConfigError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const tables = yield* tablesOf(tablePrefix)
    const sql = yield* SqlClient.SqlClient
    for (const table of [tables.counters, tables.reservations, tables.migrations]) {
      yield* sql.unsafe(`DROP TABLE IF EXISTS ${table}`)
    }
    yield* sql.onDialectOrElse({
      pg: () => sql.unsafe(`DROP FUNCTION IF EXISTS ${tables.reserve}, ${tables.close}`),
      orElse: () => Effect.void
    })
  }).pipe(typed("drop the budget ledger"))

/** Builds the store over the `SqlClient` in context, migrating its tables first. */
export const make = (
  options: Options = {}
): Effect.Effect<Budget.BudgetStore.Service, Budget.BudgetStoreError | Budget.BudgetConfigError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const tables = yield* tablesOf(options.tablePrefix ?? "keel_budget")
    const concurrency = options.concurrency ?? 4
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      return yield* new Budget.BudgetConfigError({ field: "concurrency", reason: "must be a positive integer" })
    }
    const sql = yield* SqlClient.SqlClient
    yield* migrate(sql, tables).pipe(retryTransient, typed("open the budget ledger"))

    const counters = sql(tables.counters)
    const reservations = sql(tables.reservations)
    const isPg = sql.onDialectOrElse({ pg: () => true, orElse: () => false })
    const dbNow = sql.literal(pgNow)

    /**
     * Adds `delta` to the reserved sum, `charge` to spent and `overrun` to overrun of the counters
     * that exist, returning their new state. On Postgres the rows are locked in key order first (no
     * deadlock between transactions charging overlapping chains); on SQLite the transaction holds
     * the write lock.
     */
    const bump = (keys: ReadonlyArray<string>, delta: bigint, charge: bigint, overrun = 0n) =>
      isPg
        ? sql<CounterRow>`UPDATE ${counters} AS c
            SET reserved = c.reserved + ${delta}, spent = c.spent + ${charge}, overrun = c.overrun + ${overrun}
            FROM (SELECT key FROM ${counters} WHERE key IN ${sql.in(keys)} ORDER BY key FOR UPDATE) AS locked
            WHERE c.key = locked.key
            RETURNING c.key, CAST(c.spent AS TEXT) AS spent, CAST(c.reserved AS TEXT) AS reserved`
        : sql<CounterRow>`UPDATE ${counters}
            SET reserved = reserved + ${delta}, spent = spent + ${charge}, overrun = overrun + ${overrun}
            WHERE key IN ${sql.in(keys)}
            RETURNING key, CAST(spent AS TEXT) AS spent, CAST(reserved AS TEXT) AS reserved`

    const createCounters = (missing: ReadonlyArray<Budget.Counter>, reserved: bigint) =>
      sql<CounterRow>`INSERT INTO ${counters} ${
        sql.insert(missing.map((counter) => ({
          key: counter.key,
          scope: counter.scope,
          time_window: counter.window,
          period: counter.period,
          spent: 0n,
          reserved
        })))
      } ON CONFLICT (key) DO NOTHING
        RETURNING key, CAST(spent AS TEXT) AS spent, CAST(reserved AS TEXT) AS reserved`

    const ledgerRow = (request: Budget.ReserveRequest, now: number, adopted: bigint) => ({
      id: request.id,
      owner: request.owner,
      amount: adopted + request.amount,
      adopted,
      counters: request.counters.map((counter) => counter.key).join(","),
      created_at: now,
      lease_until: now + request.lease,
      status: "open",
      estimated: 0,
      call_key: request.key ?? null
    })

    /** Postgres: `reserveFunction`, in one statement. */
    const reservePgStatement = (request: Budget.ReserveRequest) =>
      sql<CounterRow & { readonly fits: boolean; readonly adoptable: boolean }>`SELECT * FROM ${sql(tables.reserve)}(
        ${request.counters.map((counter) => counter.key)},
        ${request.counters.map((counter) => counter.limit === undefined ? null : String(counter.limit))},
        ${request.amount}, ${request.id}, ${request.owner}, ${request.lease}, ${request.key ?? null})`

    /**
     * Closes the open reservation under the request's key and counters as adopted (charged 0),
     * returning its amount; nothing when there is none.
     */
    const closeAdopted = (request: Budget.ReserveRequest, at: Statement.Fragment) =>
      Effect.map(
        sql<{ readonly amount: string }>`UPDATE ${reservations}
          SET status = 'adopted', charged = 0, closed_at = ${at}
          WHERE id = (SELECT id FROM ${reservations}
            WHERE call_key = ${request.key ?? null} AND status = 'open'
              AND counters = ${request.counters.map((counter) => counter.key).join(",")} LIMIT 1)
            AND status = 'open'
          RETURNING CAST(amount AS TEXT) AS amount`,
        (rows) => rows[0] === undefined ? undefined : BigInt(rows[0].amount)
      )

    /**
     * Postgres: adopting, in one transaction like `extend`: the old reservation closed as adopted, the
     * counters in key order, rolled back when a limit would be passed, then the new row holding both
     * amounts. Nothing when the reservation to adopt was closed meanwhile.
     */
    const adoptPg = (request: Budget.ReserveRequest): Effect.Effect<bigint | undefined, BudgetExceeded | SqlError> =>
      sql.withTransaction(
        Effect.gen(function*() {
          const adopted = yield* closeAdopted(request, dbNow)
          if (adopted === undefined) return undefined
          const rows = yield* bump(request.counters.map((counter) => counter.key), request.amount, 0n)
          yield* checkFits(request.counters, rows, request.amount, true)
          yield* sql`INSERT INTO ${reservations}
              (id, owner, amount, counters, created_at, lease_until, status, estimated, call_key, adopted)
            SELECT ${request.id}, ${request.owner}, ${adopted + request.amount},
              ${request.counters.map((counter) => counter.key).join(",")}, stamp.at, stamp.at + ${request.lease},
              'open', 0, ${request.key ?? null}, ${adopted}
            FROM (SELECT ${dbNow} AS at) stamp`
          return adopted
        })
      )

    const reservePg = (request: Budget.ReserveRequest): Effect.Effect<bigint, BudgetExceeded | SqlError> =>
      Effect.gen(function*() {
        for (;;) {
          let rows = yield* reservePgStatement(request)
          if (rows.length < request.counters.length) {
            // First use of some counter (a new scope or period): create it empty, then reserve.
            const found = new Set(rows.map((row) => row.key))
            yield* createCounters(request.counters.filter((counter) => !found.has(counter.key)), 0n)
            rows = yield* reservePgStatement(request)
          }
          if (rows[0]?.fits === true) {
            if (rows[0].adoptable !== true) return 0n
            const adopted = yield* adoptPg(request)
            if (adopted !== undefined) return adopted
            continue // closed meanwhile: reserve afresh
          }
          yield* checkFits(request.counters, rows, request.amount, false)
          // Every limit fits now but did not when the statement ran: it was not written.
          return yield* Effect.fail(Budget.exceeded(request.counters[0]!, 0n, 0n, request.amount))
        }
      })

    const reserveSqlite = (request: Budget.ReserveRequest): Effect.Effect<bigint, BudgetExceeded | SqlError> =>
      sql.withTransaction(
        Effect.gen(function*() {
          const keys = request.counters.map((counter) => counter.key)
          // Reserve first, check after: the transaction rolls back when a limit is passed. The first
          // statement being a write means the write lock is held from the start.
          const rows: Array<CounterRow> = [...(yield* bump(keys, request.amount, 0n))]
          if (rows.length < keys.length) {
            const found = new Set(rows.map((row) => row.key))
            rows.push(...(yield* createCounters(request.counters.filter((c) => !found.has(c.key)), request.amount)))
          }
          yield* checkFits(request.counters, rows, request.amount, true)
          const now = yield* Clock.currentTimeMillis
          const adopted = request.key === undefined ? 0n : (yield* closeAdopted(request, sql`${now}`)) ?? 0n
          yield* sql`INSERT INTO ${reservations} ${sql.insert(ledgerRow(request, now, adopted))}`
          return adopted
        })
      )

    const extend = (request: Budget.ReserveRequest): Effect.Effect<boolean, BudgetExceeded | SqlError> =>
      sql.withTransaction(
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const open = yield* sql<{ readonly id: string }>`UPDATE ${reservations}
            SET amount = amount + ${request.amount},
              lease_until = ${isPg ? sql`${dbNow} + ${request.lease}` : now + request.lease}
            WHERE id = ${request.id} AND status = 'open'
            RETURNING id`
          if (open.length === 0) return false
          const rows = yield* bump(request.counters.map((counter) => counter.key), request.amount, 0n)
          yield* checkFits(request.counters, rows, request.amount, true)
          return true
        })
      )

    type Closed = { readonly amount: string; readonly charged: string }

    /**
     * What a close writes on SQLite (Postgres's `closeFunction` writes the same): the cost plus what
     * the reservation adopted, estimated when it adopted anything; a release of an adopted
     * reservation is a settle of what it adopted.
     */
    const closeColumns = (status: "settled" | "released", charged: bigint, estimated: boolean) =>
      sql`status = CASE WHEN adopted > 0 THEN 'settled' ELSE ${status} END, charged = ${charged} + adopted,
        estimated = CASE WHEN adopted > 0 THEN 1 ELSE ${estimated ? 1 : 0} END`

    /** Postgres: `closeFunction`, in one statement. */
    const closePg = (id: string, status: "settled" | "released", charged: bigint, estimated: boolean) =>
      sql<Closed>`SELECT * FROM ${sql(tables.close)}(${id}, ${status}, ${charged}, ${estimated ? 1 : 0})`

    const closeSqlite = (id: string, status: "settled" | "released", charged: bigint, estimated: boolean) =>
      sql.withTransaction(
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const closed = yield* sql<Closed & { readonly counters: string }>`
            UPDATE ${reservations}
            SET ${closeColumns(status, charged, estimated)}, closed_at = ${now}
            WHERE id = ${id} AND status = 'open'
            RETURNING CAST(amount AS TEXT) AS amount, CAST(charged AS TEXT) AS charged, counters`
          const row = closed[0]
          if (row === undefined) return closed
          const amount = BigInt(row.amount)
          const total = BigInt(row.charged)
          yield* bump(row.counters.split(","), -amount, total, total > amount ? total - amount : 0n)
          return closed
        })
      )

    /** Closes an open reservation charging `charged`; undefined when it was not open. */
    const close = (id: string, status: "settled" | "released", charged: bigint, estimated: boolean) =>
      Effect.map(
        isPg ? closePg(id, status, charged, estimated) : closeSqlite(id, status, charged, estimated),
        (rows): Budget.Settlement | undefined => {
          const row = rows[0]
          if (row === undefined) return undefined
          const amount = BigInt(row.amount)
          const total = BigInt(row.charged)
          return { charged: total, overrun: total > amount ? total - amount : 0n }
        }
      )

    const renew = (owner: string, lease: number) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.map(
          sql<{ readonly id: string }>`UPDATE ${reservations}
            SET lease_until = ${isPg ? sql`${dbNow} + ${lease}` : now + lease}
            WHERE owner = ${owner} AND status = 'open'
            RETURNING id`,
          (rows) => rows.length
        ))

    /**
     * Postgres, one statement (one round trip): close every open reservation whose lease is behind
     * the database's clock as the statement runs, then move their amounts to spent on their counters,
     * locked in key order like every other statement.
     */
    const reclaimPg = Effect.map(
      sql<{ readonly reclaimed: string }>`WITH taken AS (
          UPDATE ${reservations}
          SET status = 'reclaimed', charged = amount, estimated = 1, closed_at = ${dbNow}
          WHERE status = 'open' AND lease_until < ${dbNow}
          RETURNING amount, counters
        ), per_key AS (
          SELECT k.key, sum(taken.amount) AS amount
          FROM taken, unnest(string_to_array(taken.counters, ',')) AS k(key)
          GROUP BY k.key
        ), locked AS (
          SELECT c.key FROM ${counters} c JOIN per_key ON c.key = per_key.key ORDER BY c.key FOR UPDATE OF c
        ), bumped AS (
          UPDATE ${counters} AS c
          SET reserved = c.reserved - per_key.amount, spent = c.spent + per_key.amount
          FROM per_key, locked
          WHERE c.key = per_key.key AND c.key = locked.key
        )
        SELECT CAST(count(*) AS TEXT) AS reclaimed FROM taken`,
      (rows) => Number(rows[0]?.reclaimed ?? 0)
    )

    const reclaimSqlite = sql.withTransaction(
      Effect.gen(function*() {
        // Take the write lock first, then read the clock: leases are compared with the time it runs
        // (after any wait for the lock or for the gate), not with the time it was scheduled.
        yield* sql.unsafe(`UPDATE ${tables.migrations} SET version = version WHERE version < 0`)
        const now = yield* Clock.currentTimeMillis
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

    const balances = (keys: ReadonlyArray<string>) =>
      Effect.map(
        keys.length === 0 ? Effect.succeed([]) : sql<
          {
            readonly key: string
            readonly scope: string
            readonly time_window: Budget.Window
            readonly period: string
            readonly spent: string
            readonly reserved: string
            readonly overrun: string
          }
        >`SELECT key, scope, time_window, period, CAST(spent AS TEXT) AS spent, CAST(reserved AS TEXT) AS reserved,
            CAST(overrun AS TEXT) AS overrun
          FROM ${counters} WHERE key IN ${sql.in(keys)}`,
        (rows) => {
          const byKey = new Map(rows.map((row) => [row.key, row]))
          return keys.map((key): Budget.Balance => {
            const row = byKey.get(key)
            if (row !== undefined) {
              return {
                scope: row.scope,
                window: row.time_window,
                period: row.period,
                spent: BigInt(row.spent),
                reserved: BigInt(row.reserved),
                overrun: BigInt(row.overrun)
              }
            }
            const [scope = "", window = "total", period = ""] = key.split("|")
            return { scope, window: window as Budget.Window, period, spent: 0n, reserved: 0n, overrun: 0n }
          })
        }
      )

    const gate = Gate.unsafeMake(concurrency)
    const traced = options.traceStatements === true
      ? <A, E>(effect: Effect.Effect<A, E>) => effect
      : <A, E>(effect: Effect.Effect<A, E>) => Effect.withTracerEnabled(effect, false)
    /**
     * SQLite runs statements synchronously, and Effect's scheduler drains fibers in microtasks: calls
     * that keep the store busy would never let the event loop turn, so no timer (periodic reclaim,
     * lease renewal, a caller's timeout) and no I/O would run. When the loop has not turned for
     * `turnAfter` ms, an operation that has its permit lets it turn first (the calls queued behind it
     * wait too, so each turn of the loop runs at most `turnAfter` ms of budget work).
     */
    const turnAfter = 10
    let turnedAt = performance.now()
    /** Completed on the event loop's next turn (one `setImmediate` at a time, shared by every waiter). */
    let nextTurn: Deferred.Deferred<void> | undefined
    const watchTurn = () => {
      if (nextTurn !== undefined) return nextTurn
      const turn = Deferred.unsafeMake<void>(FiberId.none)
      nextTurn = turn
      setImmediate(() => {
        nextTurn = undefined
        turnedAt = performance.now()
        Deferred.unsafeDone(turn, Exit.void)
      })
      return turn
    }
    const turning = <A, E>(effect: Effect.Effect<A, E>) =>
      Effect.suspend(() => {
        const turn = watchTurn()
        return performance.now() - turnedAt > turnAfter ? Effect.zipRight(Deferred.await(turn), effect) : effect
      })
    /** Through the gate; once it has its permit, the statement runs to its end (see "Interruption" above). */
    const gated = (first: boolean) => <A, E>(effect: Effect.Effect<A, E>) =>
      gate.withPermit(first)(Effect.uninterruptible(isPg ? effect : turning(effect)))
    /** A call's operation: through the gate, retried on a Postgres deadlock, every failure typed. */
    const operation = (name: string) => <A, E>(effect: Effect.Effect<A, E>) =>
      gated(false)(effect).pipe(
        retryTransient,
        typed(name),
        traced
      )
    /** Settling and releasing free room the waiting reservations need: they go ahead of them. */
    const closing = (name: string) => <A, E>(effect: Effect.Effect<A, E>) =>
      gated(true)(effect).pipe(retryTransient, typed(name), traced)
    /**
     * Maintenance (reclaim, renewal) is never starved by the calls it serves: on Postgres it does not
     * queue behind them (it takes a connection of its own); on SQLite, where every statement shares the
     * one connection, it goes ahead of every waiting call.
     */
    const maintenance = (name: string) => <A, E>(effect: Effect.Effect<A, E>) =>
      (isPg ? Effect.uninterruptible(effect) : gated(true)(effect)).pipe(
        retryTransient,
        typed(name),
        traced
      )

    return Budget.BudgetStore.of({
      reserve: (request) => (isPg ? reservePg(request) : reserveSqlite(request)).pipe(operation("reserve")),
      extend: (request) => extend(request).pipe(operation("extend a reservation")),
      settle: (id, amount, estimated) => close(id, "settled", amount, estimated).pipe(closing("settle")),
      release: (id) =>
        close(id, "released", 0n, false).pipe(
          Effect.map((closed) => closed !== undefined),
          closing("release")
        ),
      renew: (owner, lease) => renew(owner, lease).pipe(maintenance("renew leases")),
      reclaim: (isPg ? reclaimPg : reclaimSqlite).pipe(maintenance("reclaim")),
      balances: (keys) => balances(keys).pipe(operation("read balances"))
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

export interface SqliteOptions {
  /** The ledger file: created when missing; its folder must exist. */
  readonly filename: string
  /** Journal mode WAL (the default) lets the processes of one machine share the file. */
  readonly disableWAL?: boolean | undefined
}

const sqliteHeader = Buffer.from("SQLite format 3\0")

/** Why `filename` cannot hold a ledger, or undefined when it can (a database, or a new file in a writable folder). */
export const checkSqlitePath = (filename: string): string | undefined => {
  if (filename === ":memory:") return undefined
  const folder = Path.dirname(Path.resolve(filename))
  let stat: Fs.Stats | undefined
  try {
    stat = Fs.statSync(filename)
  } catch {
    stat = undefined
  }
  if (stat === undefined) {
    if (!Fs.existsSync(folder)) return `its folder ${folder} does not exist: create it first`
    if (!Fs.statSync(folder).isDirectory()) return `${folder} is not a folder`
    try {
      Fs.accessSync(folder, Fs.constants.W_OK)
    } catch {
      return `its folder ${folder} is not writable, so the file cannot be created`
    }
    return undefined
  }
  if (stat.isDirectory()) return "it is a folder, not a file: give a file name inside it"
  try {
    Fs.accessSync(filename, Fs.constants.R_OK | Fs.constants.W_OK)
  } catch {
    return "the file is not readable and writable by this process"
  }
  if (stat.size === 0) return undefined
  const head = Buffer.alloc(sqliteHeader.length)
  const fd = Fs.openSync(filename, "r")
  try {
    Fs.readSync(fd, head, 0, head.length, 0)
  } finally {
    Fs.closeSync(fd)
  }
  if (!head.equals(sqliteHeader)) return "the file is not a SQLite database (it was left as it is)"
  return undefined
}

/**
 * The SQLite client for a ledger file, after checking the path: a folder, a missing folder, an
 * unwritable file or one that is not a database fails with `BudgetStoreError` naming the path.
 * The one place the budget builds a SQLite client.
 */
export const layerSqliteClient = (
  options: SqliteOptions
): Layer.Layer<SqlClient.SqlClient, Budget.BudgetStoreError> => {
  const operation = `open the budget ledger ${options.filename}`
  return Layer.unwrapEffect(Effect.sync(() => {
    const problem = checkSqlitePath(options.filename)
    if (problem !== undefined) {
      return Layer.fail(new Budget.BudgetStoreError({ operation, reason: `${options.filename}: ${problem}` }))
    }
    return Sqlite.layer({ filename: options.filename, disableWAL: options.disableWAL }).pipe(
      Layer.catchAllCause((cause) => {
        const error = Cause.squash(cause)
        const reason = error instanceof Error ? error.message : String(error)
        return Layer.fail(
          new Budget.BudgetStoreError({ operation, reason: `${options.filename}: ${reason}`, cause: error })
        )
      })
    )
  }))
}

/** The budget on a SQLite ledger file (checked first, see `layerSqliteClient`). */
export const layerSqlite = (
  options: Budget.Options & Options & SqliteOptions
): Layer.Layer<Budget.Budget, Budget.BudgetStoreError | Budget.BudgetConfigError> =>
  layer(options).pipe(
    Layer.provide(layerSqliteClient(options)),
    Layer.mapError((error) =>
      error._tag === "BudgetStoreError" && !error.reason.includes(options.filename)
        ? new Budget.BudgetStoreError({ ...error, reason: `${options.filename}: ${error.reason}` })
        : error
    )
  )
