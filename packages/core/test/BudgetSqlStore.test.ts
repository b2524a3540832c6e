/**
 * The SQL budget store on its own, fast (seconds): its tables and migrations, each operation's rows on a SQLite
 * file and on Postgres, leases by each dialect's clock, the queue in front of the client, error mapping, the
 * table prefix and the checks of a ledger file's path. `BudgetSql.test.ts` has the slow tests (600 concurrent
 * calls, worker processes, kill -9); this file is what the mutation run of `Budget/Sql` uses beside
 * `BudgetLedger.test.ts`. Expected amounts are literals worked out by hand.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import * as Tracer from "effect/Tracer"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Budget from "../src/Budget.js"
import * as BudgetSql from "../src/Budget/Sql.js"
import * as Money from "../src/Money.js"
import { sqlLayer } from "./utils/budget-worker.js"

const usd = Money.unsafeParse

const tempDir = () => Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-sqlstore-"))
const freshPrefix = () => `ks_${process.pid}_${Math.random().toString(36).slice(2, 8)}`

interface Dialect {
  readonly name: "SQLite" | "Postgres"
  readonly client: () => Layer.Layer<SqlClient.SqlClient, unknown>
}

const sqlite: Dialect = { name: "SQLite", client: () => sqlLayer({ sqlite: Path.join(tempDir(), "budget.db") }) }
const postgres: Dialect = { name: "Postgres", client: () => sqlLayer({ pg: "test" }) }
const dialects = [sqlite, postgres]

/** A client of the dialect and a fresh table prefix whose tables are dropped when the scope closes. */
const connect = (dialect: Dialect) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(Layer.orDie(dialect.client()))
    const sql = Context.get(context, SqlClient.SqlClient)
    const prefix = freshPrefix()
    yield* Effect.addFinalizer(() =>
      Effect.orDie(Effect.provideService(BudgetSql.drop(prefix), SqlClient.SqlClient, sql))
    )
    return { sql, prefix }
  })

const makeStore = (sql: SqlClient.SqlClient, options: BudgetSql.Options) =>
  Effect.provideService(BudgetSql.make(options), SqlClient.SqlClient, sql)

/** A fresh store of the dialect, with its client. */
const open = (dialect: Dialect, options: Omit<BudgetSql.Options, "tablePrefix"> = {}) =>
  Effect.gen(function*() {
    const { prefix, sql } = yield* connect(dialect)
    const store = yield* Effect.orDie(makeStore(sql, { ...options, tablePrefix: prefix }))
    return { sql, prefix, store }
  })

const total = (scope: string, limit?: string): Budget.Counter => ({
  key: `${scope}|total|total`,
  scope,
  window: "total",
  period: "total",
  limit: limit === undefined ? undefined : usd(limit)
})

const request = (
  id: string,
  amount: string,
  counters: ReadonlyArray<Budget.Counter>,
  lease = 60_000,
  owner = id.split(":")[0]!
): Budget.ReserveRequest => ({ id, owner, amount: usd(amount), counters, lease })

/** Counters as `key` → [spent, reserved, overrun] in USD, read through the store. */
const money = (store: Budget.BudgetStore.Service, keys: ReadonlyArray<string>) =>
  Effect.map(Effect.orDie(store.balances(keys)), (balances) =>
    Object.fromEntries(balances.map((b, i) => [
      keys[i]!,
      [Money.format(b.spent), Money.format(b.reserved), Money.format(b.overrun)]
    ])))

interface Row {
  readonly id: string
  readonly owner: string
  readonly amount: string
  readonly counters: string
  readonly created_at: string
  readonly lease_until: string
  readonly status: string
  readonly charged: string | null
  readonly estimated: string
  readonly closed_at: string | null
}

/** The ledger's rows by id, every number as text. */
const ledger = (sql: SqlClient.SqlClient, prefix: string) =>
  Effect.map(
    Effect.orDie(sql.unsafe<Row>(
      `SELECT id, owner, CAST(amount AS TEXT) AS amount, counters, CAST(created_at AS TEXT) AS created_at,
        CAST(lease_until AS TEXT) AS lease_until, status, CAST(charged AS TEXT) AS charged,
        CAST(estimated AS TEXT) AS estimated, CAST(closed_at AS TEXT) AS closed_at
       FROM ${prefix}_reservations`
    )),
    (rows) => new Map(rows.map((row) => [row.id, row]))
  )

const versions = (sql: SqlClient.SqlClient, prefix: string) =>
  Effect.map(
    Effect.orDie(sql.unsafe<{ readonly version: number; readonly applied_at: string }>(
      `SELECT version, CAST(applied_at AS TEXT) AS applied_at FROM ${prefix}_migrations ORDER BY version`
    )),
    (rows) => rows.map((row) => [Number(row.version), Number(row.applied_at)] as const)
  )

const storeError = (error: unknown): Budget.BudgetStoreError => {
  if (error instanceof Budget.BudgetStoreError) return error
  return assert.fail(`expected a BudgetStoreError, got ${String(error)}`)
}

describe.each(dialects)("Budget/Sql's tables on $name", (dialect) => {
  it.scoped("a new prefix gets every schema version once; opening it again applies nothing", () =>
    Effect.gen(function*() {
      const { prefix, sql } = yield* connect(dialect)
      const before = Date.now()
      yield* Effect.orDie(makeStore(sql, { tablePrefix: prefix }))
      const after = Date.now()
      const first = yield* versions(sql, prefix)
      assert.deepStrictEqual(first.map(([version]) => version), [1, 2, 3, 4])
      for (const [, appliedAt] of first) assert.isTrue(appliedAt >= before && appliedAt <= after, String(appliedAt))
      const store = yield* Effect.orDie(makeStore(sql, { tablePrefix: prefix }))
      assert.deepStrictEqual(yield* versions(sql, prefix), first)
      // The tables work: a reservation is written and read back.
      yield* Effect.orDie(store.reserve(request("a:1", "0.5", [total("global")])))
      assert.deepStrictEqual(yield* money(store, ["global|total|total"]), { "global|total|total": ["0", "0.5", "0"] })
    }))

  it.scoped("drop removes the ledger, tables and (Postgres) functions: a store opened again starts empty", () =>
    Effect.gen(function*() {
      const { prefix, sql } = yield* connect(dialect)
      const store = yield* Effect.orDie(makeStore(sql, { tablePrefix: prefix }))
      yield* Effect.orDie(store.reserve(request("a:1", "0.5", [total("global")])))
      const objects = sql.onDialectOrElse({
        pg: () =>
          sql.unsafe<{ readonly name: string }>(
            `SELECT tablename AS name FROM pg_tables WHERE tablename LIKE '${prefix}%'
             UNION ALL SELECT proname AS name FROM pg_proc WHERE proname LIKE '${prefix}%'`
          ),
        orElse: () =>
          sql.unsafe<{ readonly name: string }>(`SELECT name FROM sqlite_master WHERE name LIKE '${prefix}%'`)
      }).pipe(Effect.orDie, Effect.map((rows) => rows.map((row) => row.name).sort()))
      const named = (...names: Array<string>) => names.map((name) => `${prefix}_${name}`).sort()
      // SQLite's objects include the indexes; Postgres lists tables and functions only.
      assert.includeMembers(
        yield* objects,
        dialect.name === "Postgres"
          ? named("counters", "reservations", "migrations", "reserve", "close")
          : named("counters", "reservations", "migrations")
      )
      yield* Effect.orDie(Effect.provideService(BudgetSql.drop(prefix), SqlClient.SqlClient, sql))
      assert.deepStrictEqual(yield* objects, [])
      const reopened = yield* Effect.orDie(makeStore(sql, { tablePrefix: prefix }))
      assert.deepStrictEqual(yield* money(reopened, ["global|total|total"]), { "global|total|total": ["0", "0", "0"] })
    }))

  it.scoped("a ledger at version 1 gets versions 2 to 4 only (overrun; call keys; the Postgres functions), keeping its rows", () =>
    Effect.gen(function*() {
      const { prefix, sql } = yield* connect(dialect)
      const store = yield* Effect.orDie(makeStore(sql, { tablePrefix: prefix }))
      yield* Effect.orDie(store.reserve(request("a:1", "0.25", [total("global")])))
      // Undo versions 3 and 2 by hand: what a ledger written by the first release looks like.
      yield* Effect.orDie(Effect.all([
        sql.unsafe(`DROP INDEX ${prefix}_reservations_call_key`),
        sql.unsafe(`ALTER TABLE ${prefix}_reservations DROP COLUMN call_key`),
        sql.unsafe(`ALTER TABLE ${prefix}_reservations DROP COLUMN adopted`),
        sql.unsafe(`DROP INDEX ${prefix}_reservations_owner`),
        sql.unsafe(`ALTER TABLE ${prefix}_counters DROP COLUMN overrun`),
        sql.unsafe(`DELETE FROM ${prefix}_migrations WHERE version >= 2`)
      ]))
      const upgraded = yield* Effect.orDie(makeStore(sql, { tablePrefix: prefix }))
      assert.deepStrictEqual((yield* versions(sql, prefix)).map(([version]) => version), [1, 2, 3, 4])
      assert.deepStrictEqual(yield* Effect.orDie(upgraded.settle("a:1", usd("0.75"), false)), {
        charged: usd("0.75"),
        overrun: usd("0.5")
      })
      assert.deepStrictEqual(yield* money(upgraded, ["global|total|total"]), {
        "global|total|total": ["0.75", "0", "0.5"]
      })
    }))

  it.scoped("a table prefix must be a plain identifier of at most 41 characters; concurrency a positive integer", () =>
    Effect.gen(function*() {
      const { sql } = yield* connect(dialect)
      for (const bad of ["budget; DROP TABLE x", "1budget", "bud-get", "", "a".repeat(42), "budget\n"]) {
        const error = yield* Effect.flip(makeStore(sql, { tablePrefix: bad }))
        assert.strictEqual(
          error.message,
          "Invalid budget configuration at tablePrefix: must be letters, digits and underscores, starting with a letter or underscore",
          JSON.stringify(bad)
        )
      }
      for (const concurrency of [0, -1, 1.5, Number.NaN]) {
        const error = yield* Effect.flip(makeStore(sql, { tablePrefix: "keel_never_made", concurrency }))
        assert.strictEqual(
          error.message,
          "Invalid budget configuration at concurrency: must be a positive integer",
          String(concurrency)
        )
      }
      // Nothing was created for the refused configurations.
      const exists = yield* Effect.either(sql.unsafe(`SELECT version FROM keel_never_made_migrations`))
      assert.isTrue(exists._tag === "Left")
      // The longest prefix, one starting with an underscore, one with capitals (its tables are named in lower case,
      // as Postgres folds unquoted names), and concurrency 1 are fine.
      const goods = [`_${freshPrefix()}`.padEnd(41, "x"), `Keel_${freshPrefix()}_Z9`]
      for (const good of goods) {
        const tables = good.toLowerCase()
        yield* Effect.addFinalizer(() =>
          Effect.orDie(Effect.provideService(BudgetSql.drop(good), SqlClient.SqlClient, sql))
        )
        const store = yield* Effect.orDie(makeStore(sql, { tablePrefix: good, concurrency: 1 }))
        yield* Effect.orDie(store.reserve(request("a:1", "1", [total("global")])))
        assert.deepStrictEqual(yield* versions(sql, tables).pipe(Effect.map((v) => v.length)), 4)
        assert.deepStrictEqual(yield* money(store, ["global|total|total"]), { "global|total|total": ["0", "1", "0"] })
      }
    }))
})

describe.each(dialects)("Budget/Sql's operations on $name", (dialect) => {
  it.scoped("reserve writes one open ledger row and adds its amount to each of its counters only", () =>
    Effect.gen(function*() {
      const { prefix, sql, store } = yield* open(dialect)
      const counters = [total("global", "10"), total("tenant:a", "1")]
      yield* Effect.orDie(store.reserve(request("w1:7", "0.4", counters, 30_000)))
      yield* Effect.orDie(store.reserve(request("w2:1", "0.1", [total("global", "10"), total("tenant:b")], 5_000)))
      assert.deepStrictEqual(
        yield* money(store, ["global|total|total", "tenant:a|total|total", "tenant:b|total|total"]),
        {
          "global|total|total": ["0", "0.5", "0"],
          "tenant:a|total|total": ["0", "0.4", "0"],
          "tenant:b|total|total": ["0", "0.1", "0"]
        }
      )
      const rows = yield* ledger(sql, prefix)
      const row = rows.get("w1:7")!
      assert.deepStrictEqual(
        [row.owner, row.amount, row.counters, row.status, row.charged, row.estimated, row.closed_at],
        ["w1", String(usd("0.4")), "global|total|total,tenant:a|total|total", "open", null, "0", null]
      )
      assert.strictEqual(Number(row.lease_until) - Number(row.created_at), 30_000)
      assert.strictEqual(Number(rows.get("w2:1")!.lease_until) - Number(rows.get("w2:1")!.created_at), 5_000)
      assert.strictEqual(rows.get("w2:1")!.owner, "w2")
    }))

  it.scoped("a refused reserve names the counter over its limit with its sums, and writes nothing", () =>
    Effect.gen(function*() {
      const { prefix, sql, store } = yield* open(dialect)
      yield* Effect.orDie(store.reserve(request("a:1", "0.7", [total("global", "10"), total("tenant:a", "1")])))
      yield* Effect.orDie(store.settle("a:1", usd("0.5"), false))
      yield* Effect.orDie(store.reserve(request("a:2", "0.3", [total("global", "10"), total("tenant:a", "1")])))
      // tenant:a: 0.5 spent + 0.3 reserved + 0.3 > 1.
      const refused = yield* Effect.flip(
        store.reserve(request("a:3", "0.3", [total("global", "10"), total("tenant:a", "1")]))
      )
      assert.strictEqual(refused._tag, "BudgetExceeded")
      if (refused._tag === "BudgetExceeded") {
        assert.deepStrictEqual(
          [refused.scope, refused.window, refused.limit, refused.spent, refused.reserved, refused.requested],
          ["tenant:a", "total", "1", "0.5", "0.3", "0.3"]
        )
      }
      // A first use of a counter that refuses (a limit below the amount) creates no reservation either.
      const fresh = yield* Effect.flip(store.reserve(request("a:4", "2", [total("global", "10"), total("new", "1")])))
      assert.isTrue(fresh._tag === "BudgetExceeded" && fresh.scope === "new" && fresh.spent === "0", String(fresh))
      assert.deepStrictEqual(yield* money(store, ["global|total|total", "tenant:a|total|total", "new|total|total"]), {
        "global|total|total": ["0.5", "0.3", "0"],
        "tenant:a|total|total": ["0.5", "0.3", "0"],
        "new|total|total": ["0", "0", "0"]
      })
      assert.deepStrictEqual([...(yield* ledger(sql, prefix)).keys()].sort(), ["a:1", "a:2"])
      // Exactly up to the limit fits: 0.5 + 0.3 + 0.2 = 1.
      yield* Effect.orDie(store.reserve(request("a:5", "0.2", [total("global", "10"), total("tenant:a", "1")])))
    }))

  it.scoped("settle and release close the row once, moving exactly its amounts; a second close changes nothing", () =>
    Effect.gen(function*() {
      const { prefix, sql, store } = yield* open(dialect)
      const chain = [total("global"), total("tenant:a")]
      yield* Effect.orDie(store.reserve(request("a:1", "0.5", chain)))
      yield* Effect.orDie(store.reserve(request("a:2", "0.25", chain)))
      yield* Effect.orDie(store.reserve(request("a:3", "0.125", chain)))
      assert.deepStrictEqual(yield* Effect.orDie(store.settle("a:1", usd("0.2"), true)), {
        charged: usd("0.2"),
        overrun: 0n
      })
      // Exactly the reserved amount is no overrun; above it, the difference is.
      assert.deepStrictEqual(yield* Effect.orDie(store.settle("a:3", usd("0.125"), false)), {
        charged: usd("0.125"),
        overrun: 0n
      })
      assert.isTrue(yield* Effect.orDie(store.release("a:2")))
      assert.isFalse(yield* Effect.orDie(store.release("a:2")))
      assert.isFalse(yield* Effect.orDie(store.release("a:1")))
      assert.isUndefined(yield* Effect.orDie(store.settle("a:2", usd("1"), false)))
      assert.isUndefined(yield* Effect.orDie(store.settle("nobody:1", usd("1"), false)))
      assert.deepStrictEqual(yield* money(store, ["global|total|total", "tenant:a|total|total"]), {
        "global|total|total": ["0.325", "0", "0"],
        "tenant:a|total|total": ["0.325", "0", "0"]
      })
      yield* Effect.orDie(store.reserve(request("a:4", "0.1", chain)))
      assert.deepStrictEqual(yield* Effect.orDie(store.settle("a:4", usd("0.35"), false)), {
        charged: usd("0.35"),
        overrun: usd("0.25")
      })
      assert.deepStrictEqual(yield* money(store, ["global|total|total", "tenant:a|total|total"]), {
        "global|total|total": ["0.675", "0", "0.25"],
        "tenant:a|total|total": ["0.675", "0", "0.25"]
      })
      const rows = yield* ledger(sql, prefix)
      assert.deepStrictEqual(
        ["a:1", "a:2", "a:3", "a:4"].map((id) => {
          const row = rows.get(id)!
          return [row.status, row.charged, row.estimated, row.closed_at !== null]
        }),
        [
          ["settled", String(usd("0.2")), "1", true],
          ["released", "0", "0", true],
          ["settled", String(usd("0.125")), "0", true],
          ["settled", String(usd("0.35")), "0", true]
        ]
      )
    }))

  it.scoped("extend adds to an open reservation and its counters, or refuses leaving both; false once closed", () =>
    Effect.gen(function*() {
      const { prefix, sql, store } = yield* open(dialect)
      const chain = [total("global", "10"), total("tenant:a", "1")]
      yield* Effect.orDie(store.reserve(request("a:1", "0.5", chain)))
      assert.isTrue(yield* Effect.orDie(store.extend(request("a:1", "0.25", chain))))
      const refused = yield* Effect.flip(store.extend(request("a:1", "0.5", chain)))
      assert.isTrue(
        refused._tag === "BudgetExceeded" && refused.scope === "tenant:a" && refused.reserved === "0.75" &&
          refused.requested === "0.5",
        String(refused)
      )
      assert.deepStrictEqual(yield* money(store, ["global|total|total", "tenant:a|total|total"]), {
        "global|total|total": ["0", "0.75", "0"],
        "tenant:a|total|total": ["0", "0.75", "0"]
      })
      assert.strictEqual((yield* ledger(sql, prefix)).get("a:1")!.amount, String(usd("0.75")))
      // Settled at the extended amount: no overrun.
      assert.deepStrictEqual(yield* Effect.orDie(store.settle("a:1", usd("0.75"), false)), {
        charged: usd("0.75"),
        overrun: 0n
      })
      assert.isFalse(yield* Effect.orDie(store.extend(request("a:1", "0.1", chain))))
      assert.isFalse(yield* Effect.orDie(store.extend(request("never:1", "0.1", chain))))
      assert.deepStrictEqual(yield* money(store, ["tenant:a|total|total"]), {
        "tenant:a|total|total": ["0.75", "0", "0"]
      })
    }))

  it.scoped("balances answer in the order asked, a counter never written as zero, and nothing for no keys", () =>
    Effect.gen(function*() {
      const { store } = yield* open(dialect)
      yield* Effect.orDie(store.reserve(request("a:1", "0.5", [{
        key: "tenant:a|day|2026-12-01",
        scope: "tenant:a",
        window: "day",
        period: "2026-12-01",
        limit: undefined
      }])))
      assert.deepStrictEqual(yield* Effect.orDie(store.balances([])), [])
      assert.deepStrictEqual(
        yield* Effect.orDie(store.balances(["tenant:b|month|2026-12", "tenant:a|day|2026-12-01", "odd"])),
        [
          { scope: "tenant:b", window: "month", period: "2026-12", spent: 0n, reserved: 0n, overrun: 0n },
          { scope: "tenant:a", window: "day", period: "2026-12-01", spent: 0n, reserved: usd("0.5"), overrun: 0n },
          { scope: "odd", window: "total", period: "", spent: 0n, reserved: 0n, overrun: 0n }
        ]
      )
    }))

  it.scoped("a failing statement is a BudgetStoreError naming the operation and the database's message", () =>
    Effect.gen(function*() {
      const { prefix, sql, store } = yield* open(dialect)
      yield* Effect.orDie(store.reserve(request("a:1", "0.5", [total("global")])))
      yield* Effect.orDie(sql.unsafe(`DROP TABLE ${prefix}_reservations`))
      const cases = [
        ["reserve", store.reserve(request("a:2", "0.1", [total("global")]))],
        ["extend a reservation", store.extend(request("a:1", "0.1", [total("global")]))],
        ["settle", store.settle("a:1", usd("0.1"), false)],
        ["release", store.release("a:1")],
        ["renew leases", store.renew("a", 1000)],
        ["reclaim", store.reclaim]
      ] as const
      for (const [operation, effect] of cases) {
        const error = storeError(yield* Effect.flip(effect as Effect.Effect<unknown, unknown>))
        assert.strictEqual(error.operation, operation)
        // The client's message, the database's, and its error code.
        if (dialect.name === "SQLite") {
          assert.match(error.reason, /^Failed to (prepare|execute) statement ?: no such table: \w+ \(SQLITE_ERROR\)$/)
          assert.include(error.message, `Budget store failed to ${operation}: `)
          assert.include(error.reason, `no such table: ${prefix}_reservations (SQLITE_ERROR)`)
        } else {
          assert.strictEqual(
            error.message,
            `Budget store failed to ${operation}: Failed to execute statement: relation "${prefix}_reservations" does not exist (42P01)`
          )
        }
      }
      yield* Effect.orDie(sql.unsafe(`DROP TABLE ${prefix}_counters`))
      const balances = storeError(yield* Effect.flip(store.balances(["global|total|total"])))
      assert.strictEqual(balances.operation, "read balances")
      assert.include(balances.reason, `${prefix}_counters`)
    }))
})

describe("Budget/Sql's leases on SQLite, timed by the process clock", () => {
  it.scoped("a lease runs from the write; renew moves an owner's open leases; reclaim takes those behind the clock", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(1_000_000)
      const { prefix, sql, store } = yield* open(sqlite)
      const chain = [total("global"), total("tenant:a")]
      yield* Effect.orDie(store.reserve(request("a:1", "0.5", chain, 10_000)))
      yield* Effect.orDie(store.reserve(request("a:2", "0.25", [total("global"), total("tenant:b")], 10_000)))
      yield* Effect.orDie(store.reserve(request("b:1", "0.125", chain, 10_000)))
      yield* Effect.orDie(store.reserve(request("a:3", "0.0625", chain, 10_000)))
      yield* Effect.orDie(store.settle("a:3", usd("0.0625"), false))
      const written = (yield* ledger(sql, prefix)).get("a:1")!
      assert.deepStrictEqual([written.created_at, written.lease_until], ["1000000", "1010000"])
      yield* TestClock.setTime(1_004_000)
      // Owner a's two open reservations (not the settled one, not b's).
      assert.strictEqual(yield* Effect.orDie(store.renew("a", 20_000)), 2)
      assert.strictEqual((yield* ledger(sql, prefix)).get("a:1")!.lease_until, "1024000")
      assert.strictEqual(yield* Effect.orDie(store.renew("nobody", 20_000)), 0)
      // b's lease ends at 1,010,000: held at that instant, reclaimed just after.
      yield* TestClock.setTime(1_010_000)
      assert.strictEqual(yield* Effect.orDie(store.reclaim), 0)
      yield* TestClock.setTime(1_010_001)
      assert.strictEqual(yield* Effect.orDie(store.reclaim), 1)
      assert.deepStrictEqual(yield* money(store, ["global|total|total", "tenant:a|total|total"]), {
        "global|total|total": ["0.1875", "0.75", "0"],
        "tenant:a|total|total": ["0.1875", "0.5", "0"]
      })
      yield* TestClock.setTime(1_024_001)
      assert.strictEqual(yield* Effect.orDie(store.reclaim), 2)
      assert.deepStrictEqual(
        yield* money(store, ["global|total|total", "tenant:a|total|total", "tenant:b|total|total"]),
        {
          "global|total|total": ["0.9375", "0", "0"],
          "tenant:a|total|total": ["0.6875", "0", "0"],
          "tenant:b|total|total": ["0.25", "0", "0"]
        }
      )
      const rows = yield* ledger(sql, prefix)
      assert.deepStrictEqual(
        ["a:1", "a:2", "b:1"].map((id) => [rows.get(id)!.status, rows.get(id)!.charged, rows.get(id)!.estimated]),
        [
          ["reclaimed", String(usd("0.5")), "1"],
          ["reclaimed", String(usd("0.25")), "1"],
          ["reclaimed", String(usd("0.125")), "1"]
        ]
      )
      assert.deepStrictEqual(["a:1", "b:1"].map((id) => rows.get(id)!.closed_at), ["1024001", "1010001"])
      // A reclaimed reservation cannot be settled, released or extended.
      assert.isUndefined(yield* Effect.orDie(store.settle("a:1", usd("0.1"), false)))
      assert.isFalse(yield* Effect.orDie(store.release("a:2")))
      assert.isFalse(yield* Effect.orDie(store.extend(request("b:1", "0.1", chain))))
    }))

  it.scoped("extend moves the lease to its own time plus the lease asked", () =>
    Effect.gen(function*() {
      const { prefix, sql, store } = yield* open(sqlite)
      yield* Effect.orDie(store.reserve(request("a:1", "0.5", [total("global")], 10_000)))
      yield* TestClock.setTime(7_000)
      yield* Effect.orDie(store.extend(request("a:1", "0.1", [total("global")], 30_000)))
      const row = (yield* ledger(sql, prefix)).get("a:1")!
      assert.deepStrictEqual([row.created_at, row.lease_until], ["0", "37000"])
      yield* TestClock.setTime(37_000)
      assert.strictEqual(yield* Effect.orDie(store.reclaim), 0)
      yield* TestClock.setTime(37_001)
      assert.strictEqual(yield* Effect.orDie(store.reclaim), 1)
    }))
})

describe("Budget/Sql's leases on Postgres, timed by the database's clock", () => {
  it.scopedLive(
    "a short lease is reclaimed at its full amount, each counter charged its reservations' sum",
    () =>
      Effect.gen(function*() {
        const { prefix, sql, store } = yield* open(postgres)
        const before = Date.now()
        yield* Effect.orDie(store.reserve(request("a:1", "0.5", [total("global"), total("tenant:a")], 1)))
        yield* Effect.orDie(store.reserve(request("a:2", "0.25", [total("global"), total("tenant:b")], 1)))
        yield* Effect.orDie(store.reserve(request("b:1", "0.125", [total("global"), total("tenant:a")], 60_000)))
        yield* Effect.sleep("30 millis")
        assert.strictEqual(yield* Effect.orDie(store.reclaim), 2)
        assert.strictEqual(yield* Effect.orDie(store.reclaim), 0)
        assert.deepStrictEqual(
          yield* money(store, ["global|total|total", "tenant:a|total|total", "tenant:b|total|total"]),
          {
            "global|total|total": ["0.75", "0.125", "0"],
            "tenant:a|total|total": ["0.5", "0.125", "0"],
            "tenant:b|total|total": ["0.25", "0", "0"]
          }
        )
        const rows = yield* ledger(sql, prefix)
        assert.deepStrictEqual(
          ["a:1", "a:2", "b:1"].map((id) => [rows.get(id)!.status, rows.get(id)!.charged, rows.get(id)!.estimated]),
          [["reclaimed", String(usd("0.5")), "1"], ["reclaimed", String(usd("0.25")), "1"], ["open", null, "0"]]
        )
        // The database's clock is this machine's: created and closed within the test's run.
        const a1 = rows.get("a:1")!
        for (const at of [a1.created_at, a1.closed_at]) {
          assert.isTrue(Number(at) >= before - 1_000 && Number(at) <= Date.now() + 1_000, String(at))
        }
        assert.isAbove(Number(a1.closed_at), Number(a1.lease_until))
        assert.isUndefined(yield* Effect.orDie(store.settle("a:1", usd("0.1"), false)))
      }),
    { timeout: 20_000 }
  )

  it.scopedLive(
    "renew and extend move leases from the database's clock at the time they run",
    () =>
      Effect.gen(function*() {
        const { prefix, sql, store } = yield* open(postgres)
        yield* Effect.orDie(store.reserve(request("a:1", "0.5", [total("global")], 1)))
        yield* Effect.orDie(store.reserve(request("a:2", "0.25", [total("global")], 1)))
        yield* Effect.orDie(store.reserve(request("b:1", "0.125", [total("global")], 1)))
        assert.strictEqual(yield* Effect.orDie(store.renew("a", 60_000)), 2)
        assert.isTrue(yield* Effect.orDie(store.extend(request("b:1", "0.125", [total("global")], 60_000))))
        yield* Effect.sleep("30 millis")
        assert.strictEqual(yield* Effect.orDie(store.reclaim), 0)
        const rows = yield* ledger(sql, prefix)
        for (const id of ["a:1", "a:2", "b:1"]) {
          const lease = Number(rows.get(id)!.lease_until) - Number(rows.get(id)!.created_at)
          assert.isTrue(lease >= 60_000 && lease < 70_000, `${id}: ${lease}`)
        }
        assert.deepStrictEqual(yield* money(store, ["global|total|total"]), { "global|total|total": ["0", "1", "0"] })
      }),
    { timeout: 20_000 }
  )
})

describe("Budget/Sql on Postgres: an interrupted operation", () => {
  it.scopedLive(
    "a statement once sent runs to its end, and the interruption waits for it: what it reserved is there to release",
    () =>
      Effect.gen(function*() {
        const { prefix, sql, store } = yield* open(postgres)
        const counters = [total("global"), total("tenant:a", "1")]
        yield* Effect.orDie(store.reserve(request("a:0", "0.1", counters)))
        assert.isTrue(yield* Effect.orDie(store.release("a:0")))
        // Another connection holds the counters' rows: the next reserve's statement waits on them.
        const locked = yield* Deferred.make<void>()
        const unlock = yield* Deferred.make<void>()
        yield* Effect.forkScoped(Effect.orDie(sql.withTransaction(Effect.zipRight(
          sql.unsafe(`SELECT key FROM ${prefix}_counters FOR UPDATE`),
          Effect.zipRight(Deferred.succeed(locked, undefined), Deferred.await(unlock))
        ))))
        yield* Deferred.await(locked)
        const reserving = yield* Effect.fork(store.reserve(request("a:1", "0.5", counters)))
        yield* Effect.sleep("200 millis")
        const interrupting = yield* Effect.fork(Fiber.interrupt(reserving))
        yield* Effect.sleep("300 millis")
        assert.isNull(interrupting.unsafePoll(), "the interruption waits for the statement (not cancelled)")
        yield* Deferred.succeed(unlock, undefined)
        yield* Fiber.join(interrupting)
        assert.deepStrictEqual(yield* money(store, ["tenant:a|total|total"]), {
          "tenant:a|total|total": ["0", "0.5", "0"]
        })
        assert.isTrue(yield* Effect.orDie(store.release("a:1")), "the reservation it wrote is released")
        assert.deepStrictEqual(yield* money(store, ["tenant:a|total|total"]), {
          "tenant:a|total|total": ["0", "0", "0"]
        })
      }),
    { timeout: 20_000 }
  )
})

describe("Budget/Sql's queue in front of the client", () => {
  /** Forks `effect`, recording its name in `done` once it succeeds, and lets it reach the queue. */
  const start = <A, E>(done: Array<string>, name: string, effect: Effect.Effect<A, E>) =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(Effect.zipRight(Effect.orDie(effect), Effect.sync(() => done.push(name))))
      for (let i = 0; i < 5; i++) yield* Effect.yieldNow()
      return fiber
    })

  /** Holds SQLite's one connection in a transaction until the test clock passes a second. */
  const holdConnection = (sql: SqlClient.SqlClient) =>
    Effect.gen(function*() {
      const holding = yield* Deferred.make<void>()
      yield* Effect.fork(
        sql.withTransaction(Effect.zipRight(Deferred.succeed(holding, undefined), Effect.sleep("1 second")))
      )
      yield* Deferred.await(holding)
    })

  it.scoped(
    "with its one permit taken, closes and maintenance go first, then the rest, each lane in arrival order",
    () =>
      Effect.gen(function*() {
        const { sql, store } = yield* open(sqlite, { concurrency: 1 })
        const chain = [total("global")]
        for (const id of ["a:1", "a:2"]) yield* Effect.orDie(store.reserve(request(id, "0.5", chain)))
        yield* holdConnection(sql)
        const done: Array<string> = []
        const fibers = [
          // Takes the permit, then waits for the connection.
          yield* start(done, "reserve a:3", store.reserve(request("a:3", "0.1", chain))),
          yield* start(done, "reserve a:4", store.reserve(request("a:4", "0.1", chain))),
          yield* start(done, "settle a:1", store.settle("a:1", usd("0.5"), false)),
          yield* start(done, "balances", store.balances(["global|total|total"])),
          yield* start(done, "extend a:2", store.extend(request("a:2", "0.1", chain))),
          yield* start(done, "release a:2", store.release("a:2")),
          yield* start(done, "reclaim", store.reclaim),
          yield* start(done, "renew", store.renew("a", 60_000))
        ]
        assert.deepStrictEqual(done, [])
        yield* TestClock.adjust("1 second")
        yield* Fiber.joinAll(fibers)
        assert.deepStrictEqual(done, [
          "reserve a:3",
          "settle a:1",
          "release a:2",
          "reclaim",
          "renew",
          "reserve a:4",
          "balances",
          "extend a:2"
        ])
        assert.deepStrictEqual(yield* money(store, ["global|total|total"]), {
          "global|total|total": ["0.5", "0.2", "0"]
        })
      }),
    { timeout: 20_000 }
  )

  it.scoped(
    "a call interrupted while it waits leaves the queue: the permit goes to the next, nothing is written",
    () =>
      Effect.gen(function*() {
        const { prefix, sql, store } = yield* open(sqlite, { concurrency: 1 })
        const chain = [total("global")]
        yield* holdConnection(sql)
        const done: Array<string> = []
        const first = yield* start(done, "a:1", store.reserve(request("a:1", "0.5", chain)))
        const gone = yield* start(done, "a:2", store.reserve(request("a:2", "0.25", chain)))
        const urgentGone = yield* start(done, "settle", store.settle("a:1", usd("0.5"), false))
        const last = yield* start(done, "a:3", store.reserve(request("a:3", "0.125", chain)))
        yield* Fiber.interrupt(gone)
        yield* Fiber.interrupt(urgentGone)
        yield* TestClock.adjust("1 second")
        yield* Fiber.joinAll([first, last])
        assert.deepStrictEqual(done, ["a:1", "a:3"])
        // Both permits' worth of work is done and the one permit is free again.
        yield* Effect.orDie(store.reserve(request("a:4", "0.0625", chain)))
        assert.deepStrictEqual([...(yield* ledger(sql, prefix)).keys()].sort(), ["a:1", "a:3", "a:4"])
        assert.deepStrictEqual(yield* money(store, ["global|total|total"]), {
          "global|total|total": ["0", "0.6875", "0"]
        })
      }),
    { timeout: 20_000 }
  )

  it.scoped(
    "two permits let two calls wait for the connection at once; a third waits for a permit",
    () =>
      Effect.gen(function*() {
        const { sql, store } = yield* open(sqlite, { concurrency: 2 })
        const chain = [total("global")]
        yield* Effect.orDie(store.reserve(request("a:1", "0.5", chain)))
        yield* holdConnection(sql)
        const done: Array<string> = []
        const fibers = [
          yield* start(done, "reserve a:2", store.reserve(request("a:2", "0.1", chain))),
          yield* start(done, "reserve a:3", store.reserve(request("a:3", "0.1", chain))),
          yield* start(done, "settle a:1", store.settle("a:1", usd("0.5"), false))
        ]
        yield* TestClock.adjust("1 second")
        yield* Fiber.joinAll(fibers)
        // The settle went ahead of no one: both reservations held a permit before it came.
        assert.deepStrictEqual(done, ["reserve a:2", "reserve a:3", "settle a:1"])
      }),
    { timeout: 20_000 }
  )

  it.scopedLive(
    "on Postgres, reclaim and renewal do not queue behind calls waiting for a row lock",
    () =>
      Effect.gen(function*() {
        const { prefix, sql, store } = yield* open(postgres, { concurrency: 1 })
        const chain = [total("global")]
        yield* Effect.orDie(store.reserve(request("a:1", "0.5", chain)))
        const holding = yield* Deferred.make<void>()
        const finish = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(Effect.orDie(sql.withTransaction(
          Effect.zipRight(
            sql.unsafe(`SELECT key FROM ${prefix}_counters FOR UPDATE`),
            Effect.zipRight(Deferred.succeed(holding, undefined), Deferred.await(finish))
          )
        )))
        yield* Deferred.await(holding)
        const done: Array<string> = []
        const blocked = yield* start(done, "reserve a:2", store.reserve(request("a:2", "0.1", chain)))
        const queued = yield* start(done, "balances", store.balances(["global|total|total"]))
        yield* Effect.sleep("50 millis")
        assert.strictEqual(
          yield* Effect.orDie(Effect.timeoutFail(store.renew("a", 60_000), {
            duration: "5 seconds",
            onTimeout: () => "renew waited"
          })),
          1
        )
        assert.strictEqual(
          yield* Effect.orDie(Effect.timeoutFail(store.reclaim, { duration: "5 seconds", onTimeout: () => "waited" })),
          0
        )
        // The calls still wait: the reserve for the row, the balances for the permit.
        assert.deepStrictEqual(done, [])
        yield* Deferred.succeed(finish, undefined)
        yield* Fiber.join(holder)
        yield* Fiber.joinAll([blocked, queued])
        assert.deepStrictEqual(done, ["reserve a:2", "balances"])
      }),
    { timeout: 20_000 }
  )
})

/**
 * The client with faults injected: before each UPDATE statement runs, the next fault of `faults` (if any) runs
 * first, as a failure of the database would.
 */
const faulty = (sql: SqlClient.SqlClient, faults: Array<Effect.Effect<never, unknown>>): SqlClient.SqlClient =>
  new Proxy(sql, {
    apply(target, self, args: Array<unknown>) {
      const statement = Reflect.apply(target, self, args) as Effect.Effect<unknown, unknown>
      const strings = args[0]
      if (!Array.isArray(strings) || !("raw" in strings) || !/^\s*UPDATE/.test(String(strings[0]))) return statement
      return Effect.zipRight(Effect.suspend(() => faults.shift() ?? Effect.void), statement)
    }
  })

const failure = (code: string | undefined, message: string | undefined) =>
  Effect.fail(
    new SqlError({
      message: "Failed to execute statement",
      cause: { ...(code === undefined ? {} : { code }), ...(message === undefined ? {} : { message }) }
    })
  )

describe("Budget/Sql's failures, injected", () => {
  const openFaulty = (faults: Array<Effect.Effect<never, unknown>>) =>
    Effect.gen(function*() {
      const { prefix, sql } = yield* connect(sqlite)
      const store = yield* Effect.orDie(makeStore(faulty(sql, faults), { tablePrefix: prefix }))
      return { prefix, sql, store }
    })

  it.scopedLive(
    "a deadlock, a serialization failure, a stray cancel or a pool with no free connection runs the operation again, once over",
    () =>
      Effect.gen(function*() {
        const faults = [
          failure("40P01", "deadlock detected"),
          failure("40001", "could not serialize access"),
          failure("57014", "canceling statement due to user request"),
          failure(undefined, "timeout exceeded when trying to connect")
        ]
        const { prefix, sql, store } = yield* openFaulty(faults)
        yield* Effect.orDie(store.reserve(request("a:1", "0.5", [total("global"), total("tenant:a")])))
        assert.strictEqual(faults.length, 0)
        assert.deepStrictEqual(yield* money(store, ["global|total|total", "tenant:a|total|total"]), {
          "global|total|total": ["0", "0.5", "0"],
          "tenant:a|total|total": ["0", "0.5", "0"]
        })
        faults.push(failure("40P01", "deadlock detected"))
        assert.deepStrictEqual(yield* Effect.orDie(store.settle("a:1", usd("0.25"), false)), {
          charged: usd("0.25"),
          overrun: 0n
        })
        faults.push(failure("40001", "could not serialize access"))
        assert.strictEqual(yield* Effect.orDie(store.reclaim), 0)
        assert.deepStrictEqual([...(yield* ledger(sql, prefix)).values()].map((row) => row.status), ["settled"])
        assert.deepStrictEqual(yield* money(store, ["global|total|total"]), {
          "global|total|total": ["0.25", "0", "0"]
        })
        // A statement timeout is the database's answer, not a stray cancel: it is not run again.
        faults.push(failure("57014", "canceling statement due to statement timeout"))
        const timedOut = yield* Effect.flip(store.reserve(request("a:2", "0.1", [total("global")])))
        assert.strictEqual(
          timedOut.message,
          "Budget store failed to reserve: Failed to execute statement: canceling statement due to statement timeout (57014)"
        )
        // A server that refuses connections is down, not busy: the call fails closed at once.
        faults.push(failure("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:5432"))
        const refused = yield* Effect.flip(store.reserve(request("a:3", "0.1", [total("global")])))
        assert.strictEqual(
          refused.message,
          "Budget store failed to reserve: Failed to execute statement: connect ECONNREFUSED 127.0.0.1:5432 (ECONNREFUSED)"
        )
      }),
    { timeout: 20_000 }
  )

  it.scopedLive(
    "after 9 attempts in a row fail as deadlocks, the operation fails with the database's message",
    () =>
      Effect.gen(function*() {
        const faults = Array.from({ length: 10 }, () => failure("40P01", "deadlock detected"))
        const { store } = yield* openFaulty(faults)
        const error = storeError(yield* Effect.flip(store.renew("a", 1_000)))
        assert.strictEqual(
          error.message,
          "Budget store failed to renew leases: Failed to execute statement: deadlock detected (40P01)"
        )
        assert.strictEqual(faults.length, 1)
      }),
    { timeout: 20_000 }
  )

  it.scopedLive(
    "any other failure is not retried, and its reason reads the message and code the database gave",
    () =>
      Effect.gen(function*() {
        const faults = [
          failure("42P01", "relation \"x\" does not exist"),
          failure(undefined, "disk I/O error"),
          failure("XX000", undefined),
          failure("53300", "too many connections")
        ]
        const { store } = yield* openFaulty(faults)
        const chain = [total("global")]
        const reasons = [
          storeError(yield* Effect.flip(store.reserve(request("a:1", "0.5", chain)))).reason,
          storeError(yield* Effect.flip(store.reserve(request("a:1", "0.5", chain)))).reason,
          storeError(yield* Effect.flip(store.reserve(request("a:1", "0.5", chain)))).reason
        ]
        assert.deepStrictEqual(reasons, [
          "Failed to execute statement: relation \"x\" does not exist (42P01)",
          "Failed to execute statement: disk I/O error",
          "Failed to execute statement"
        ])
        assert.strictEqual(faults.length, 1)
        // Nothing was reserved by the failed attempts.
        assert.deepStrictEqual(yield* money(store, ["global|total|total"]), { "global|total|total": ["0", "0", "0"] })
      }),
    { timeout: 20_000 }
  )

  it.scoped("a defect of the client (a failed COMMIT) is a BudgetStoreError too, with its message", () =>
    Effect.gen(function*() {
      const faults: Array<Effect.Effect<never, unknown>> = []
      const { store } = yield* openFaulty(faults)
      yield* Effect.orDie(store.reserve(request("a:1", "0.5", [total("global")])))
      faults.push(Effect.die(new Error("COMMIT failed: disk I/O error")), Effect.die("the driver threw a string"))
      const settle = storeError(yield* Effect.flip(store.settle("a:1", usd("0.1"), false)))
      assert.deepStrictEqual([settle.operation, settle.reason], ["settle", "COMMIT failed: disk I/O error"])
      const release = storeError(yield* Effect.flip(store.release("a:1")))
      assert.strictEqual(release.operation, "release")
      assert.include(release.reason, "the driver threw a string")
      assert.strictEqual(release.cause, "the driver threw a string")
    }))
})

describe("Budget/Sql's statements in traces", () => {
  /** Runs `effect` under a tracer that records the names of the spans it is asked for. */
  const spans = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.gen(function*() {
      const base = yield* Effect.tracer
      const names: Array<string> = []
      const tracer = Tracer.make({
        span: (name, ...rest) => {
          names.push(name)
          return base.span(name, ...rest)
        },
        context: (f, fiber) => base.context(f, fiber)
      })
      yield* Effect.withTracer(Effect.withSpan(effect, "call"), tracer)
      return names
    })

  it.scoped("are left out unless traceStatements is set", () =>
    Effect.gen(function*() {
      const quiet = yield* open(sqlite)
      const loud = yield* open(sqlite, { traceStatements: true })
      const chain = [total("global")]
      for (const { store } of [quiet, loud]) yield* Effect.orDie(store.reserve(request("a:1", "0.5", chain)))
      const run = (store: Budget.BudgetStore.Service) =>
        Effect.orDie(Effect.all([
          store.reserve(request("a:2", "0.5", chain)),
          store.extend(request("a:2", "0.1", chain)),
          store.settle("a:1", usd("0.1"), false),
          store.release("a:2"),
          store.renew("a", 1_000),
          store.reclaim,
          store.balances(["global|total|total"])
        ]))
      assert.deepStrictEqual(yield* spans(run(quiet.store)), ["call"])
      const traced = yield* spans(run(loud.store))
      assert.include(traced, "sql.execute")
      assert.include(traced, "sql.transaction")
    }))
})

describe("Budget/Sql: the path of a SQLite ledger", () => {
  it("checkSqlitePath names what is wrong with a path, or nothing for one that can hold a ledger", () => {
    const dir = tempDir()
    assert.isUndefined(BudgetSql.checkSqlitePath(":memory:"))
    assert.isUndefined(BudgetSql.checkSqlitePath(Path.join(dir, "new.db")))
    assert.strictEqual(
      BudgetSql.checkSqlitePath(Path.join(dir, "missing", "budget.db")),
      `its folder ${Path.join(dir, "missing")} does not exist: create it first`
    )
    const relative = Path.join(Path.relative(process.cwd(), dir), "missing", "budget.db")
    assert.strictEqual(
      BudgetSql.checkSqlitePath(relative),
      `its folder ${Path.join(dir, "missing")} does not exist: create it first`
    )
    Fs.writeFileSync(Path.join(dir, "plain.txt"), "text")
    assert.strictEqual(
      BudgetSql.checkSqlitePath(Path.join(dir, "plain.txt", "budget.db")),
      `${Path.join(dir, "plain.txt")} is not a folder`
    )
    assert.strictEqual(BudgetSql.checkSqlitePath(dir), "it is a folder, not a file: give a file name inside it")
    Fs.writeFileSync(Path.join(dir, "empty.db"), "")
    assert.isUndefined(BudgetSql.checkSqlitePath(Path.join(dir, "empty.db")))
    for (const [name, content] of [["notes.db", "shopping list: eggs, milk\n"], ["short.db", "SQLite"]] as const) {
      Fs.writeFileSync(Path.join(dir, name), content)
      assert.strictEqual(
        BudgetSql.checkSqlitePath(Path.join(dir, name)),
        "the file is not a SQLite database (it was left as it is)"
      )
    }
    // The header alone is what is checked.
    Fs.writeFileSync(Path.join(dir, "header.db"), Buffer.concat([Buffer.from("SQLite format 3\0"), Buffer.alloc(84)]))
    assert.isUndefined(BudgetSql.checkSqlitePath(Path.join(dir, "header.db")))
  })

  it.effect("layerSqlite fails with a BudgetStoreError naming the file, and opens a good one", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const openAt = (filename: string, disableWAL?: boolean) =>
        Effect.flip(Effect.provide(Budget.Budget, BudgetSql.layerSqlite({ filename, disableWAL })))
      const folder = yield* openAt(dir)
      assert.strictEqual(
        folder.message,
        `Budget store failed to open the budget ledger ${dir}: ${dir}: it is a folder, not a file: give a file name inside it`
      )
      const missing = Path.join(dir, "missing", "budget.db")
      assert.strictEqual(
        (yield* openAt(missing)).message,
        `Budget store failed to open the budget ledger ${missing}: ${missing}: its folder ${
          Path.join(dir, "missing")
        } does not exist: create it first`
      )
      // A file with a SQLite header and nothing sane after it: the client fails as it opens it (WAL) ...
      const broken = Path.join(dir, "broken.db")
      const garbage = Buffer.concat([Buffer.from("SQLite format 3\0"), Buffer.alloc(200, 7)])
      Fs.writeFileSync(broken, garbage)
      const eager = storeError(yield* openAt(broken))
      assert.strictEqual(eager.operation, `open the budget ledger ${broken}`)
      assert.isTrue(eager.reason.startsWith(`${broken}: `), eager.reason)
      assert.match(eager.reason, /not a database|malformed/)
      // ... or (without WAL) at the store's first statement, named the same way.
      const lazy = storeError(yield* openAt(broken, true))
      assert.strictEqual(lazy.operation, "open the budget ledger")
      assert.isTrue(lazy.reason.startsWith(`${broken}: `), lazy.reason)
      assert.match(lazy.reason, /not a database|malformed/)
      assert.strictEqual(lazy.reason.indexOf(broken, 1), -1, lazy.reason)
      assert.deepStrictEqual(Fs.readFileSync(broken), garbage)
      // A configuration error passes through as it is.
      const config = yield* Effect.flip(
        Effect.provide(Budget.Budget, BudgetSql.layerSqlite({ filename: Path.join(dir, "ok.db"), tablePrefix: "1x" }))
      )
      assert.strictEqual(config._tag, "BudgetConfigError")
      const good = Path.join(dir, "good.db")
      const budget = yield* Effect.provide(Budget.Budget, BudgetSql.layerSqlite({ filename: good, limits: [] }))
      assert.deepStrictEqual(budget.limits, [])
      assert.isUndefined(BudgetSql.checkSqlitePath(good))
      // The client alone fails the same way for a bad path.
      const client = yield* Effect.flip(
        Effect.provide(SqlClient.SqlClient, BudgetSql.layerSqliteClient({ filename: dir }))
      )
      assert.strictEqual(
        client.message,
        `Budget store failed to open the budget ledger ${dir}: ${dir}: it is a folder, not a file: give a file name inside it`
      )
    }).pipe(Effect.scoped))
})

describe("Budget/Sql's failures without a cause, and the ledger file's handle", () => {
  it.scoped("a client failure that carries no cause reads as the client's message alone, not retried", () =>
    Effect.gen(function*() {
      const faults: Array<Effect.Effect<never, unknown>> = [
        Effect.fail(new SqlError({ message: "Connection terminated" })),
        Effect.fail(new SqlError({ message: "Connection terminated" }))
      ]
      const { prefix, sql } = yield* connect(sqlite)
      const store = yield* Effect.orDie(makeStore(faulty(sql, faults), { tablePrefix: prefix }))
      const error = storeError(yield* Effect.flip(store.reserve(request("a:1", "0.5", [total("global")]))))
      assert.strictEqual(error.message, "Budget store failed to reserve: Connection terminated")
      assert.strictEqual(faults.length, 1)
    }))

  it("checking a ledger file leaves no file handle open", () => {
    const filename = Path.join(tempDir(), "header.db")
    Fs.writeFileSync(filename, Buffer.concat([Buffer.from("SQLite format 3\0"), Buffer.alloc(84)]))
    const handles = () => Fs.readdirSync("/proc/self/fd").length
    const before = handles()
    for (let i = 0; i < 20; i++) assert.isUndefined(BudgetSql.checkSqlitePath(filename))
    assert.strictEqual(handles(), before)
  })
})
