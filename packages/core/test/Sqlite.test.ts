import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Sqlite from "../src/Sqlite.js"

const freshFile = () => Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-sqlite-")), "test.db")
const workerPath = Path.join(import.meta.dirname, "utils", "sqlite-worker.ts")
const repoRoot = Path.resolve(import.meta.dirname, "../../..")
const runWorker = (filename: string, source: string, count: number) =>
  Effect.async<string, Error>((resume) => {
    const child = ChildProcess.execFile(
      process.execPath,
      ["--import", "tsx", workerPath, filename, source, String(count)],
      { cwd: repoRoot },
      (error, stdout, stderr) =>
        resume(error ? Effect.fail(new Error(`${error.message}: ${stderr}`)) : Effect.succeed(stdout))
    )
    return Effect.sync(() => child.kill())
  })
const open = (options: Sqlite.Options) => Effect.provide(Sqlite.make(options), Reactivity.layer)
const [major, minor] = process.versions.node.split(".").map(Number) as [number, number]
const hasNodeSqlite = major > 22 || (major === 22 && minor >= 16)

describe("Sqlite", () => {
  it.effect("picks node:sqlite where Node has it, better-sqlite3 before", () =>
    Effect.gen(function*() {
      const sqlite = yield* Sqlite.Sqlite
      assert.strictEqual(sqlite.driver, hasNodeSqlite ? "node:sqlite" : "better-sqlite3")
    }).pipe(Effect.provide(Sqlite.layer({ filename: ":memory:" }))))

  it.effect("runs queries with parameters, and returns rows, values and run results", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL)`
      const inserted = yield* sql`INSERT INTO item ${sql.insert({ name: "ledger", price: 3 })}`.raw
      assert.strictEqual((inserted as { changes: number }).changes, 1)
      yield* sql`INSERT INTO item ${sql.insert([{ name: "pen", price: 1 }, { name: "ink", price: 2 }])}`
      const rows = yield* sql<{ name: string; price: number }>`SELECT name, price FROM item WHERE price >= ${2}
        ORDER BY price`
      assert.deepStrictEqual(rows, [{ name: "ink", price: 2 }, { name: "ledger", price: 3 }])
      const values = yield* sql`SELECT name, price FROM item ORDER BY price`.values
      assert.deepStrictEqual(values, [["pen", 1], ["ink", 2], ["ledger", 3]])
      const returned = yield* sql<{ id: number }>`INSERT INTO item ${
        sql.insert({ name: "pad", price: 4 })
      } RETURNING id`
      assert.deepStrictEqual(returned, [{ id: 4 }])
      // The same statement again, from the statement cache, still reads plain rows.
      const again = yield* sql<{ name: string; price: number }>`SELECT name, price FROM item WHERE price >= ${2}
        ORDER BY price`
      assert.strictEqual(again.length, 3)
    }).pipe(Effect.provide(Sqlite.layer({ filename: freshFile() }))))

  it.effect("commits reach the disk at checkpoints under WAL by default, at every commit when asked", () =>
    Effect.gen(function*() {
      const synchronous = (options: Partial<Sqlite.Options>) =>
        Effect.scoped(Effect.flatMap(
          open({ filename: freshFile(), ...options }),
          (sql) => sql<{ synchronous: number }>`PRAGMA synchronous`
        ))
      const NORMAL = 1, FULL = 2
      assert.deepStrictEqual(yield* synchronous({}), [{ synchronous: NORMAL }])
      assert.deepStrictEqual(yield* synchronous({ synchronous: "full" }), [{ synchronous: FULL }])
      assert.deepStrictEqual(yield* synchronous({ disableWAL: true }), [{ synchronous: FULL }])
      const [mode] = yield* Effect.scoped(Effect.flatMap(
        open({ filename: freshFile() }),
        (sql) => sql<{ journal_mode: string }>`PRAGMA journal_mode`
      ))
      assert.strictEqual(mode!.journal_mode, "wal")
    }))

  it.effect("reads 64-bit integers exactly under SafeIntegers", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const query = sql<{ n: unknown }>`SELECT 9007199254740993 AS n`
      const [exact] = yield* Effect.provideService(query, SqlClient.SafeIntegers, true)
      assert.strictEqual(exact!.n, 9007199254740993n)
      const [small] = yield* sql<{ n: unknown }>`SELECT 42 AS n`
      assert.strictEqual(small!.n, 42)
      // node:sqlite refuses to round an integer past 2^53 (better-sqlite3 rounds it silently).
      if ((yield* Sqlite.Sqlite).driver === "node:sqlite") {
        const error = yield* Effect.flip(query)
        assert.match(String((error.cause as Error).message), /too large/)
      }
    }).pipe(Effect.provide(Sqlite.layer({ filename: ":memory:" }))))

  // @effect/cluster's message ids (Snowflakes) are such rowids: on Node 26 every later statement
  // without rows (BEGIN, UPDATE) threw after it had run, and the batch engine's workflows hung.
  it.effect("statements after an insert whose rowid is past 2^53 run and report it, exactly under SafeIntegers", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE message (id INTEGER PRIMARY KEY, read INTEGER NOT NULL DEFAULT 0)`
      const id = 253432180632453120n
      const inserted = yield* Effect.provideService(
        sql`INSERT INTO message (id) VALUES (${id})`.raw,
        SqlClient.SafeIntegers,
        true
      )
      assert.deepStrictEqual(inserted, { changes: 1, lastInsertRowid: id })
      yield* sql.withTransaction(sql`UPDATE message SET read = 1`)
      const updated = yield* sql`UPDATE message SET read = 2`.raw
      assert.deepStrictEqual(updated, { changes: 1, lastInsertRowid: Number(id) })
      const rows = yield* Effect.provideService(sql`SELECT id, read FROM message`, SqlClient.SafeIntegers, true)
      assert.deepStrictEqual(rows, [{ id, read: 2n }])
    }).pipe(Effect.provide(Sqlite.layer({ filename: freshFile() }))))

  it.effect("a transaction commits together, and a failure inside it rolls every statement back", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE account (name TEXT PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))`
      yield* sql`INSERT INTO account ${sql.insert([{ name: "a", balance: 10 }, { name: "b", balance: 0 }])}`
      const move = (amount: number) =>
        sql.withTransaction(Effect.gen(function*() {
          yield* sql`UPDATE account SET balance = balance + ${amount} WHERE name = 'b'`
          yield* sql`UPDATE account SET balance = balance - ${amount} WHERE name = 'a'`
        }))
      yield* move(4)
      const failed = yield* Effect.flip(move(7)) // a would go negative: the CHECK fails the second update
      assert.strictEqual(failed._tag, "SqlError")
      const balances = yield* sql<{ name: string; balance: number }>`SELECT name, balance FROM account ORDER BY name`
      assert.deepStrictEqual(balances, [{ name: "a", balance: 6 }, { name: "b", balance: 4 }])
    }).pipe(Effect.provide(Sqlite.layer({ filename: freshFile() }))))

  it.live(
    "two processes write one file at once: every transaction lands, none is lost or fails",
    () =>
      Effect.gen(function*() {
        const filename = freshFile()
        const sql = yield* open({ filename })
        yield* sql`CREATE TABLE counter (n INTEGER NOT NULL)`
        yield* sql`INSERT INTO counter (n) VALUES (0)`
        yield* sql`CREATE TABLE event (source TEXT NOT NULL, seq INTEGER NOT NULL)`
        const outputs = yield* Effect.all(["a", "b"].map((source) => runWorker(filename, source, 300)), {
          concurrency: "unbounded"
        })
        assert.deepStrictEqual(outputs, ["done 300\n", "done 300\n"])
        const [counter] = yield* sql<{ n: number }>`SELECT n FROM counter`
        assert.strictEqual(counter!.n, 600)
        const bySource = yield* sql<{ source: string; events: number }>`SELECT source, count(*) AS events
        FROM event GROUP BY source ORDER BY source`
        assert.deepStrictEqual(bySource, [{ source: "a", events: 300 }, { source: "b", events: 300 }])
      }).pipe(Effect.scoped),
    { timeout: 60_000 }
  )

  it.live("a lock held longer than the busy timeout fails the waiting statement with an SqlError", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const first = yield* open({ filename })
      const second = yield* open({ filename, busyTimeout: "50 millis" })
      yield* first`CREATE TABLE event (source TEXT NOT NULL)`
      const holding = yield* first.withTransaction(Effect.gen(function*() {
        yield* first`INSERT INTO event (source) VALUES ('first')`
        yield* Effect.sleep("400 millis")
      })).pipe(Effect.fork)
      yield* Effect.sleep("50 millis")
      const error = yield* Effect.flip(second`INSERT INTO event (source) VALUES ('second')`)
      assert.strictEqual(error._tag, "SqlError")
      assert.match(String((error.cause as Error).message), /locked|busy/i)
      yield* Fiber.join(holding)
    }).pipe(Effect.scoped))

  it.effect("a path that cannot be opened is an SqlError naming the path", () =>
    Effect.gen(function*() {
      const filename = Path.join(Os.tmpdir(), `keel-missing-${process.pid}`, "nested", "budget.db")
      const error = yield* Effect.flip(Effect.scoped(open({ filename })))
      assert.strictEqual(error._tag, "SqlError")
      assert.include(error.message, filename)
      assert.isFalse(Fs.existsSync(Path.dirname(filename)))
    }))

  it.effect("a file that is not a database is an SqlError naming it, and is left as it was", () =>
    Effect.gen(function*() {
      const filename = freshFile()
      const garbage = Buffer.from("not a database ".repeat(200))
      Fs.writeFileSync(filename, garbage)
      const error = yield* Effect.flip(Effect.scoped(open({ filename })))
      assert.include(error.message, filename)
      assert.match(error.message, /not a database/)
      assert.deepStrictEqual(Fs.readFileSync(filename), garbage)
    }))

  it.effect("asking for node:sqlite where Node has none is an SqlError saying which Node it needs", () =>
    Effect.gen(function*() {
      const result = yield* Effect.either(Effect.scoped(open({ filename: ":memory:", driver: "node:sqlite" })))
      if (hasNodeSqlite) {
        assert.strictEqual(result._tag, "Right")
      } else {
        assert.isTrue(result._tag === "Left" && /Node 22\.16/.test(result.left.message))
      }
    }))
})
