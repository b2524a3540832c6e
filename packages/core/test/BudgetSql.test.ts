import * as Reactivity from "@effect/experimental/Reactivity"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Budget from "../src/Budget.js"
import * as BudgetSql from "../src/Budget/Sql.js"
import * as Llm from "../src/Llm.js"
import * as Money from "../src/Money.js"
import * as Pricing from "../src/Pricing.js"
import * as Sqlite from "../src/Sqlite.js"
import * as TestKit from "../src/TestKit.js"
import { answer, limitScope, model, sqlLayer, type WorkerOptions } from "./utils/budget-worker.js"
import * as TestPrices from "./utils/prices.js"

const usd = Money.unsafeParse
/** The root's all-time counter, for reservations written to a store directly. */
const globalTotal: Budget.Counter = {
  key: "global|total|total",
  scope: "global",
  window: "total",
  period: "total",
  limit: undefined
}
const repoRoot = Path.resolve(import.meta.dirname, "../../..")
const workerPath = Path.join(import.meta.dirname, "utils", "budget-worker.ts")
const answerCost = Pricing.costOf(
  Effect.runSync(Pricing.make({ table: TestPrices.table })).prices.get(model)!,
  answer.usage
)
const limitKey = `${limitScope}|total|total`

const freshSqlite = () => Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-budget-")), "budget.db")
const freshPrefix = () => `kb_${process.pid}_${Math.random().toString(36).slice(2, 8)}`

type Backend = { readonly name: string; readonly store: WorkerOptions["store"] }
const backends = (): ReadonlyArray<Backend> => [
  { name: "SQLite", store: { sqlite: freshSqlite() } },
  { name: "Postgres", store: { pg: "test" } }
]

/** Drops a Postgres prefix's ledger (tables and functions) when the scope closes, whatever happened (a failed run leaks nothing). */
const dropTablesAfter = (backend: Backend, prefix: string) =>
  "pg" in backend.store
    ? Effect.addFinalizer(() => Effect.orDie(Effect.provide(BudgetSql.drop(prefix), sqlLayer(backend.store))))
    : Effect.void

/** Runs `body` with a budget over a fresh table prefix of the backend, dropping the tables after. */
const withStore = <A, E>(
  backend: Backend,
  options: Budget.Options & BudgetSql.Options,
  body: (prefix: string) => Effect.Effect<A, E, Budget.Budget | SqlClient.SqlClient>,
  prefix = freshPrefix()
) =>
  Effect.gen(function*() {
    yield* dropTablesAfter(backend, prefix)
    return yield* body(prefix).pipe(Effect.provide(BudgetSql.layer({ ...options, tablePrefix: prefix })))
  }).pipe(Effect.provide(sqlLayer(backend.store)), Effect.scoped)

const counter = (prefix: string, key: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql.unsafe<{ spent: string; reserved: string }>(
        `SELECT CAST(spent AS TEXT) AS spent, CAST(reserved AS TEXT) AS reserved FROM ${prefix}_counters WHERE key = ?`
          .replace("?", sql.onDialectOrElse({ pg: () => "$1", orElse: () => "?" })),
        [key]
      ),
      (rows) => ({ spent: BigInt(rows[0]?.spent ?? 0), reserved: BigInt(rows[0]?.reserved ?? 0) })
    ))

const ledger = (prefix: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql.unsafe<{ id: string; status: string; charged: string | null; amount: string; estimated: number | string }>(
        `SELECT id, status, CAST(charged AS TEXT) AS charged, CAST(amount AS TEXT) AS amount, estimated FROM ${prefix}_reservations`
      )
  )

interface Child {
  readonly lines: Array<string>
  readonly exit: Promise<number | null>
  readonly process: ChildProcess.ChildProcess
  readonly stderr: () => string
}

const spawnWorker = (options: WorkerOptions): Child => {
  const child = ChildProcess.spawn(process.execPath, ["--import", "tsx", workerPath, JSON.stringify(options)], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"]
  })
  const lines: Array<string> = []
  let buffer = ""
  child.stdout!.on("data", (chunk: Buffer) => {
    buffer += chunk.toString()
    const parts = buffer.split("\n")
    buffer = parts.pop()!
    lines.push(...parts)
  })
  let stderr = ""
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  const exit = new Promise<number | null>((resolve) =>
    child.on("exit", (code) => {
      if (code !== 0 && code !== null) console.error(`budget worker exited ${code}: ${stderr}`)
      resolve(code)
    })
  )
  return { lines, exit, process: child, stderr: () => stderr }
}

describe.each(backends())("Budget/Sql on $name", (backend) => {
  it.live("reserves, settles, releases and reclaims, keeping a ledger of every reservation", () =>
    withStore(
      backend,
      // Leases not renewed, as if the owner had died: they expire 50 ms after each write.
      { limits: [{ scope: "tenant:acme", limit: "20000" }], lease: 50, renewEvery: "1 hour" },
      (prefix) =>
        Effect.gen(function*() {
          const budget = yield* Budget.Budget
          // Amounts beyond 2^53 pico-dollars stay exact through the database.
          const big = usd("12345.678901234567")
          const a = yield* budget.reserve("tenant:acme/run:1", big)
          const b = yield* budget.reserve("tenant:acme/run:2", usd("1"))
          const exceeded = yield* Effect.flip(budget.reserve("tenant:acme", usd("7654.321098765433")))
          assert.isTrue(exceeded._tag === "BudgetExceeded" && exceeded.reserved === "12346.678901234567")
          // Extending is checked against the limits like reserving, and leaves the reservation as it was on failure.
          const extendFails = yield* Effect.flip(budget.extend(b, usd("7654.321098765433")))
          assert.strictEqual(extendFails._tag, "BudgetExceeded")
          const b2 = yield* budget.extend(b, usd("0.5"))
          assert.strictEqual(b2.amount, usd("1.5"))
          yield* budget.settle(a, usd("0.000000000001"), { estimated: false })
          yield* budget.release(b2)
          const c = yield* budget.reserve("tenant:acme/run:3", usd("2.5"))
          yield* Effect.sleep("80 millis")
          assert.strictEqual(yield* budget.reclaim, 1)
          const late = yield* Effect.flip(budget.settle(c, usd("1"))) // too late: reclaimed, nothing more is charged
          assert.isTrue(late._tag === "BudgetStoreError" && /reclaimed/.test(late.reason))
          const status = yield* budget.status("tenant:acme/run:3")
          const tenant = status.find((s) => s.scope === "tenant:acme")!
          assert.deepStrictEqual([tenant.spent, tenant.reserved], [usd("2.500000000001"), 0n])
          const rows = yield* ledger(prefix)
          const byId = new Map(rows.map((row) => [row.id, row]))
          assert.deepStrictEqual(
            [a, b, c].map((r) => [byId.get(r.id)?.status, byId.get(r.id)?.charged, Number(byId.get(r.id)?.estimated)]),
            [["settled", "1", 0], ["released", "0", 0], ["reclaimed", String(usd("2.5")), 1]]
          )
        })
    ))

  it.live("a reserve under a call key adopts the open reservation a dead process left under it", () =>
    withStore(backend, { limits: [{ scope: "tenant:acme", limit: "10" }] }, (prefix) =>
      Effect.gen(function*() {
        const budget = yield* Budget.Budget
        // Another process's budget on the same tables, which reserves under two keys and dies.
        const dead = yield* Effect.scoped(
          Effect.gen(function*() {
            const store = yield* BudgetSql.make({ tablePrefix: prefix })
            const dead = yield* Budget.make({ owner: "dead" }).pipe(Effect.provideService(Budget.BudgetStore, store))
            const lost = yield* dead.reserve("tenant:acme/run:1", usd("1"), { key: "run:1/item:1/0" })
            const settled = yield* dead.reserve("tenant:acme/run:1", usd("1"), { key: "run:1/item:2/0" })
            yield* dead.settle(settled, usd("0.25"))
            return { dead, lost }
          })
        )
        // Adopting is checked against the limits like reserving, and leaves the reservation as it was on failure.
        const refused = yield* Effect.flip(budget.reserve("tenant:acme/run:1", usd("9.5"), { key: "run:1/item:1/0" }))
        assert.strictEqual(refused._tag, "BudgetExceeded")
        const redo = yield* budget.reserve("tenant:acme/run:1", usd("2"), { key: "run:1/item:1/0" })
        assert.deepStrictEqual([redo.amount, redo.adopted], [usd("3"), usd("1")])
        // A key whose reservation was settled has nothing to adopt: the redo is a reservation of its own.
        const again = yield* budget.reserve("tenant:acme/run:1", usd("2"), { key: "run:1/item:2/0" })
        assert.strictEqual(again.adopted, undefined)
        assert.deepStrictEqual(yield* counter(prefix, "tenant:acme|total|total"), {
          spent: usd("0.25"),
          reserved: usd("5")
        })
        const settlement = yield* budget.settle(redo, usd("0.5"))
        assert.deepStrictEqual(settlement, { charged: usd("1.5"), overrun: 0n })
        yield* budget.release(again)
        assert.deepStrictEqual(yield* counter(prefix, "tenant:acme|total|total"), { spent: usd("1.75"), reserved: 0n })
        // The lost attempt's row is closed as adopted, charged nothing; the redo's row charges both.
        const rows = new Map((yield* ledger(prefix)).map((row) => [row.id, row]))
        assert.deepStrictEqual(
          [dead.lost.id, redo.id].map((
            id
          ) => [rows.get(id)?.status, rows.get(id)?.charged, Number(rows.get(id)?.estimated)]),
          [["adopted", "0", 0], ["settled", String(usd("1.5")), 1]]
        )
        // The dead process's own close (a process that only lost its connection) finds nothing open.
        const late = yield* Effect.flip(dead.dead.settle(dead.lost, usd("0.1")))
        assert.strictEqual(late._tag, "BudgetStoreError")
        assert.strictEqual((yield* counter(prefix, "tenant:acme|total|total")).spent, usd("1.75"))
      })))

  it.live("releasing an adopted reservation charges what it adopted, as an estimate", () =>
    withStore(backend, {}, (prefix) =>
      Effect.gen(function*() {
        const budget = yield* Budget.Budget
        const store = yield* BudgetSql.make({ tablePrefix: prefix })
        yield* store.reserve({
          id: "dead:1",
          owner: "dead",
          amount: usd("1"),
          counters: [globalTotal],
          lease: 600_000,
          key: "run:1/item:1/0"
        })
        const redo = yield* budget.reserve(undefined, usd("2"), { key: "run:1/item:1/0" })
        yield* budget.release(redo)
        const rows = yield* ledger(prefix)
        assert.deepStrictEqual(
          rows.map((row) => [row.id, row.status, row.charged, Number(row.estimated)]).sort(),
          [["dead:1", "adopted", "0", 0], [redo.id, "settled", String(usd("1")), 1]].sort()
        )
        assert.deepStrictEqual(yield* counter(prefix, "global|total|total"), { spent: usd("1"), reserved: 0n })
      })))

  it.live(
    "600 concurrent calls in one process with a budget of a third of their cost: overshoot 0",
    () =>
      Effect.gen(function*() {
        const calls = 600
        const limit = (answerCost * BigInt(calls)) / 3n
        const scripted = TestKit.scripted([], { otherwise: () => Effect.delay(Effect.succeed(answer), 1) })
        yield* withStore(backend, { limits: [{ scope: limitScope, limit: Money.format(limit) }] }, (prefix) =>
          Effect.gen(function*() {
            const llm = yield* Effect.provide(
              Llm.Llm,
              Llm.layer().pipe(Layer.provide(Layer.merge(scripted.layer, TestPrices.layer())))
            )
            // The sampler reads through its own connection, so it does not queue behind the calls.
            const sampling = yield* Layer.build(sqlLayer(backend.store))
            let peak = 0n
            let busySamples = 0
            let done = false
            const sampler = yield* Effect.fork(Effect.gen(function*() {
              while (!done) {
                const { reserved, spent } = yield* Effect.provide(counter(prefix, limitKey), sampling)
                if (spent + reserved > peak) {
                  peak = spent + reserved
                }
                if (reserved > 0n) {
                  busySamples++
                }
                yield* Effect.yieldNow()
              }
            }))
            const results = yield* Effect.forEach(
              Array.from({ length: calls }, (_, i) =>
                i),
              (i) =>
                Effect.either(llm.generate({
                  model,
                  messages: [{ role: "user", content: `Score listing #${String(i).padStart(4, "0")}` }],
                  maxOutputTokens: 40,
                  scope: `${limitScope}/run:1`
                })),
              { concurrency: 50 }
            )
            done = true
            yield* Fiber.join(sampler)
            const ok = results.filter(Either.isRight).length
            assert.strictEqual(
              results.filter((r) =>
                Either.isLeft(r) && r.left._tag !== "BudgetExceeded"
              ).length,
              0
            )
            const final = yield* counter(prefix, limitKey)
            assert.strictEqual(final.spent > limit ? final.spent - limit : 0n, 0n)
            assert.isTrue(peak <= limit)
            assert.isAbove(busySamples, 5)
            assert.deepStrictEqual([final.spent, final.reserved], [answerCost * BigInt(ok), 0n])
            assert.isAbove(ok, calls / 4)
          }).pipe(Effect.scoped))
      }),
    { timeout: 60_000 }
  )

  it.live(
    "4 processes sharing the ledger with a budget of a third of their cost: overshoot 0",
    () =>
      Effect.gen(function*() {
        const perWorker = 250
        const workers = 4
        const limit = (answerCost * BigInt(perWorker * workers)) / 3n
        const prefix = freshPrefix()
        // Migrate once up front, as a deployment would; the workers then open the same tables.
        yield* dropTablesAfter(backend, prefix)
        yield* Effect.gen(function*() {
          yield* Effect.provide(Budget.Budget, BudgetSql.layer({ tablePrefix: prefix }))
          const children = Array.from({ length: workers }, () =>
            spawnWorker({
              store: backend.store,
              tablePrefix: prefix,
              calls: perWorker,
              concurrency: 20,
              limit: Money.format(limit),
              leaseMillis: 600_000,
              delayMillis: 1,
              report: false
            }))
          let exited = false
          const all = Promise.all(children.map((c) => c.exit)).finally(() => (exited = true))
          let peak = 0n
          let busySamples = 0 // samples taken while reservations were held
          while (!exited) {
            const { reserved, spent } = yield* counter(prefix, limitKey)
            if (spent + reserved > peak) peak = spent + reserved
            if (reserved > 0n) busySamples++
            yield* Effect.sleep(5)
          }
          const codes = yield* Effect.promise(() => all)
          assert.deepStrictEqual(codes, [0, 0, 0, 0], children.map((c) => c.stderr()).join("\n"))
          const done = children.map((c) => c.lines.find((line) => line.startsWith("done"))!)
          const ok = done.reduce((sum, line) => sum + Number(/ok=(\d+)/.exec(line)![1]), 0)
          assert.isTrue(done.every((line) => line.endsWith("other=0")), done.join("; "))
          const final = yield* counter(prefix, limitKey)
          assert.strictEqual(final.spent > limit ? final.spent - limit : 0n, 0n)
          assert.isTrue(peak <= limit, `peak ${peak} > limit ${limit}`)
          assert.isAbove(busySamples, 5)
          assert.deepStrictEqual([final.spent, final.reserved], [answerCost * BigInt(ok), 0n])
          assert.isAbove(ok, (perWorker * workers) / 4)
        }).pipe(Effect.provide(sqlLayer(backend.store)))
      }).pipe(Effect.scoped),
    { timeout: 90_000 }
  )
})

describe("Budget/Sql on SQLite: crashes and bad files", () => {
  it.live(
    "kill -9 mid-run, then restart: nothing settled is lost, nothing counted twice, expired leases reclaimed",
    () =>
      Effect.gen(function*() {
        const filename = freshSqlite()
        const prefix = "keel_budget"
        const store = { sqlite: filename }
        const child = spawnWorker({
          store,
          tablePrefix: prefix,
          calls: 1000,
          concurrency: 10,
          limit: "1000",
          leaseMillis: 1000,
          delayMillis: 5,
          report: true
        })
        const settledLines = () => child.lines.filter((line) => line.startsWith("settled "))
        while (settledLines().length < 200) {
          if (child.process.exitCode !== null) throw new Error("the worker ended before the kill")
          yield* Effect.sleep(5)
        }
        child.process.kill("SIGKILL")
        yield* Effect.promise(() => child.exit)
        const reported = new Map(
          settledLines().map((line) => {
            const [, id, amount] = line.split(" ")
            return [id!, BigInt(amount!)] as const
          })
        )
        assert.isBelow(reported.size, 1000)

        yield* Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const open = yield* sql.unsafe<{ lease: number }>(
            `SELECT MAX(lease_until) AS lease FROM ${prefix}_reservations WHERE status = 'open'`
          )
          const before = yield* ledger(prefix)
          const openCount = before.filter((row) => row.status === "open").length
          assert.isAbove(openCount, 0) // the kill left calls in flight
          // Wait out the dead owner's leases, then "restart": the budget reclaims them as it starts.
          const wait = Number(open[0]?.lease ?? 0) - Date.now() + 20
          if (wait > 0) yield* Effect.sleep(wait)
          const status = yield* Effect.provide(
            Effect.flatMap(Budget.Budget, (budget) => budget.status(limitScope)),
            BudgetSql.layer({ tablePrefix: prefix })
          )
          const after = yield* ledger(prefix)
          const byId = new Map(after.map((row) => [row.id, row]))
          // Every settle the worker reported is in the ledger, with its amount.
          for (const [id, amount] of reported) {
            assert.strictEqual(byId.get(id)?.status, "settled", id)
            assert.strictEqual(BigInt(byId.get(id)!.charged!), amount, id)
          }
          // The reservations open at the kill were reclaimed at their full amount, marked estimated.
          const reclaimed = after.filter((row) => row.status === "reclaimed")
          assert.strictEqual(reclaimed.length, openCount)
          assert.isTrue(reclaimed.every((row) => row.charged === row.amount && Number(row.estimated) === 1))
          assert.strictEqual(after.filter((row) => row.status === "open").length, 0)
          // Counted once: the counter equals the ledger's sum of charges, and holds nothing reserved.
          const charged = Money.sum(after.map((row) => BigInt(row.charged ?? 0)))
          const tenant = status.find((s) => s.scope === limitScope && s.window === "total")!
          assert.deepStrictEqual([tenant.spent, tenant.reserved], [charged, 0n])
          assert.isTrue(tenant.spent >= Money.sum(reported.values()))
        }).pipe(Effect.provide(Sqlite.layer({ filename })))
      }),
    { timeout: 60_000 }
  )

  it.live("a corrupt ledger file is reported and left as it was, never recreated empty", () =>
    Effect.gen(function*() {
      const filename = freshSqlite()
      const garbage = Buffer.from("this is not a database, but someone's ledger got overwritten ".repeat(100))
      Fs.writeFileSync(filename, garbage)
      const exit = yield* Effect.exit(
        Effect.provide(Budget.Budget, BudgetSql.layer().pipe(Layer.provide(Sqlite.layer({ filename }))))
      )
      assert.isTrue(Exit.isFailure(exit))
      assert.match(String(Exit.isFailure(exit) ? exit.cause : ""), /not a database/)
      assert.deepStrictEqual(Fs.readFileSync(filename), garbage)
      // Without WAL the client opens it lazily: the store's first statement reports it as a BudgetStoreError.
      const lazy = yield* Effect.flip(
        Effect.provide(
          Budget.Budget,
          BudgetSql.layer().pipe(Layer.provide(Sqlite.layer({ filename, disableWAL: true })))
        )
      )
      assert.isTrue(lazy._tag === "BudgetStoreError" && /not a database/.test(lazy.reason), String(lazy))
      assert.deepStrictEqual(Fs.readFileSync(filename), garbage)
    }))

  it.effect("a table prefix that is not a plain identifier is a configuration error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Effect.provide(Budget.Budget, BudgetSql.layer({ tablePrefix: "budget; DROP TABLE x" }))
      )
      assert.isTrue(error._tag === "BudgetConfigError" && error.field === "tablePrefix")
    }).pipe(Effect.provide(Sqlite.layer({ filename: ":memory:" }))))

  it.live("a locked ledger is reported, not waited on forever", () =>
    Effect.gen(function*() {
      const filename = freshSqlite()
      yield* Effect.provide(Budget.Budget, BudgetSql.layer().pipe(Layer.provide(Sqlite.layer({ filename }))))
      // Another connection holds the write lock for the whole attempt.
      const holder = yield* Sqlite.make({ filename })
      yield* holder.unsafe("BEGIN EXCLUSIVE")
      const error = yield* Effect.provide(Budget.Budget, BudgetSql.layer()).pipe(
        Effect.flatMap((budget) => Effect.flip(budget.reserve("tenant:acme", usd("1")))),
        Effect.provide(Sqlite.layer({ filename, busyTimeout: "100 millis" })),
        Effect.flip,
        Effect.either
      )
      yield* holder.unsafe("ROLLBACK")
      const failure = Either.isRight(error) ? error.right : error.left
      assert.isTrue(
        typeof failure === "object" && failure !== null && "_tag" in failure && failure._tag === "BudgetStoreError",
        String(failure)
      )
      assert.match((failure as Budget.BudgetStoreError).reason, /locked|busy/i)
    }).pipe(Effect.scoped, Effect.provide(Reactivity.layer)))
})

describe("Budget/Sql on SQLite: reclaim's clock", () => {
  it.effect("reclaim compares leases with the clock read once it holds the connection, not when it was due", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const ledger = yield* BudgetSql.make({ tablePrefix: freshPrefix() })
      const runs: Array<{ readonly at: number; readonly reclaimed: number }> = []
      const secondRun = yield* Deferred.make<void>()
      const store = Budget.BudgetStore.of({
        ...ledger,
        reclaim: Effect.flatMap(Clock.currentTimeMillis, (at) =>
          Effect.tap(ledger.reclaim, (reclaimed) => {
            runs.push({ at, reclaimed })
            return runs.length === 2 ? Deferred.succeed(secondRun, undefined) : Effect.void
          }))
      })
      // A dead owner's reservation, its lease ending at 3 s (the store reads the test clock).
      yield* ledger.reserve({
        id: "dead:1",
        owner: "dead",
        amount: usd("2"),
        counters: [globalTotal],
        lease: 3_000
      })
      yield* Budget.make({ reclaimEvery: "1 second" }).pipe(Effect.provideService(Budget.BudgetStore, store))
      // Another part of the application holds the client's one connection in a transaction from
      // 0.5 s to 5 s, so the reclaim due at 1 s waits for it until 5 s.
      yield* TestClock.adjust("500 millis")
      const holding = yield* Deferred.make<void>()
      yield* Effect.fork(
        sql.withTransaction(Effect.zipRight(Deferred.succeed(holding, undefined), Effect.sleep("4500 millis")))
      )
      yield* Deferred.await(holding)
      yield* TestClock.adjust("4500 millis")
      yield* Deferred.await(secondRun)
      // At start nothing had expired; the run due at 1 s read the clock at 5 s and took the lease.
      assert.deepStrictEqual(runs.slice(0, 2), [{ at: 0, reclaimed: 0 }, { at: 1_000, reclaimed: 1 }])
    }).pipe(Effect.provide(sqlLayer({ sqlite: freshSqlite() })), Effect.scoped))
})

describe("Budget/Sql: a bad SQLite path is a BudgetStoreError naming it", () => {
  const openAt = (filename: string) => Effect.flip(Effect.provide(Budget.Budget, BudgetSql.layerSqlite({ filename })))
  const folder = () => Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-budget-path-"))

  it.effect("a folder, a missing folder, an unwritable file, a file that is not a database", () =>
    Effect.gen(function*() {
      const dir = folder()
      const isFolder = yield* openAt(dir)
      assert.strictEqual(isFolder._tag, "BudgetStoreError")
      assert.include(isFolder.message, dir)
      assert.match(isFolder.message, /is a folder/)

      const missing = Path.join(dir, "no-such-folder", "budget.db")
      const noFolder = yield* openAt(missing)
      assert.isTrue(noFolder._tag === "BudgetStoreError" && noFolder.message.includes(missing))
      assert.match(noFolder.message, /does not exist/)

      const readOnly = Path.join(dir, "read-only.db")
      Fs.writeFileSync(readOnly, "")
      Fs.chmodSync(readOnly, 0o444)
      // root writes anyway (then the empty file opens as a fresh ledger, which is right too).
      if (process.getuid?.() !== 0) {
        const unwritable = yield* openAt(readOnly)
        assert.isTrue(unwritable._tag === "BudgetStoreError" && unwritable.message.includes(readOnly))
        assert.match(unwritable.message, /not readable and writable/)
      }

      const notDb = Path.join(dir, "notes.db")
      const text = "shopping list: eggs, milk\n".repeat(20)
      Fs.writeFileSync(notDb, text)
      const garbage = yield* openAt(notDb)
      assert.isTrue(garbage._tag === "BudgetStoreError" && garbage.message.includes(notDb))
      assert.match(garbage.message, /not a SQLite database/)
      assert.strictEqual(Fs.readFileSync(notDb, "utf8"), text)
    }))

  it.effect("a good path opens, and a folder given to layerSqliteClient fails the same way", () =>
    Effect.gen(function*() {
      const filename = Path.join(folder(), "budget.db")
      const budget = yield* Effect.provide(Budget.Budget, BudgetSql.layerSqlite({ filename, limits: [] }))
      assert.deepStrictEqual(budget.limits, [])
      const dir = folder()
      const error = yield* Effect.flip(
        Effect.provide(SqlClient.SqlClient, BudgetSql.layerSqliteClient({ filename: dir }))
      )
      assert.isTrue(error._tag === "BudgetStoreError" && error.message.includes(dir))
    }))
})

describe("Budget/Sql on Postgres: migrations and waiting", () => {
  const backend: Backend = { name: "Postgres", store: { pg: "test" } }

  it.live("8 clients migrating the same fresh prefix at once: each step applied once, every client opens it", () =>
    Effect.gen(function*() {
      const prefix = freshPrefix()
      yield* dropTablesAfter(backend, prefix)
      const clients = yield* Effect.forEach(
        Array.from({ length: 8 }),
        () => Layer.build(sqlLayer(backend.store)),
        { concurrency: "unbounded" }
      )
      // Every client has a live connection before the race starts.
      yield* Effect.forEach(
        clients,
        (context) => Effect.provide(Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT 1`), context)
      )
      const results = yield* Effect.forEach(
        clients,
        (context) => Effect.either(Effect.provide(BudgetSql.make({ tablePrefix: prefix }), context)),
        { concurrency: "unbounded" }
      )
      const failed = results.filter(Either.isLeft).map((r) => String(r.left))
      assert.deepStrictEqual(failed, [])
      const versions = yield* Effect.provide(
        Effect.flatMap(
          SqlClient.SqlClient,
          (sql) => sql.unsafe<{ version: number }>(`SELECT version FROM ${prefix}_migrations ORDER BY version`)
        ),
        clients[0]!
      )
      assert.deepStrictEqual(versions.map((row) => Number(row.version)), [1, 2, 3, 4])
    }).pipe(Effect.scoped))

  it.live("a waiting reserve on Postgres is interrupted without leaking a reservation", () =>
    withStore(backend, { limits: [{ scope: "tenant:acme", limit: "1" }] }, (prefix) =>
      Effect.gen(function*() {
        const budget = yield* Budget.Budget
        const held = yield* budget.reserve("tenant:acme", usd("0.8"))
        const waiting = yield* Effect.fork(budget.reserve("tenant:acme", usd("0.5"), { maxWait: "1 minute" }))
        yield* Effect.sleep("100 millis")
        assert.isNull(waiting.unsafePoll())
        yield* Fiber.interrupt(waiting)
        assert.deepStrictEqual(yield* counter(prefix, "tenant:acme|total|total"), { spent: 0n, reserved: usd("0.8") })
        // And a waiter gets in when the blocking reservation settles.
        const next = yield* Effect.fork(budget.reserve("tenant:acme", usd("0.5"), { maxWait: "1 minute" }))
        yield* budget.settle(held, usd("0.3"))
        assert.strictEqual((yield* Fiber.join(next)).amount, usd("0.5"))
        assert.deepStrictEqual(yield* counter(prefix, "tenant:acme|total|total"), {
          spent: usd("0.3"),
          reserved: usd("0.5")
        })
      })))
})

describe.each(backends())("Budget/Sql on $name: leases and the store under load", (backend) => {
  it.live(
    "periodic reclaim runs on schedule under load and takes a dead owner's expired lease; a live owner's renewed lease outlives its length",
    () =>
      Effect.gen(function*() {
        const prefix = freshPrefix()
        const interval = 400
        const runs: Array<{ readonly startedAt: number; readonly at: number; readonly reclaimed: number }> = []
        yield* dropTablesAfter(backend, prefix)
        const store = Layer.effect(
          Budget.BudgetStore,
          Effect.map(BudgetSql.make({ tablePrefix: prefix, concurrency: 2 }), (store) =>
            Budget.BudgetStore.of({
              ...store,
              reclaim: Effect.suspend(() => {
                const startedAt = Date.now()
                return Effect.tap(store.reclaim, (reclaimed) => runs.push({ startedAt, at: Date.now(), reclaimed }))
              })
            }))
        )
        yield* Effect.gen(function*() {
          const budget = yield* Budget.Budget
          const sql = yield* SqlClient.SqlClient
          // A live call held past several lease lengths keeps its reservation.
          const long = yield* budget.reserve("tenant:acme/run:1", usd("1"))
          // A dead owner's reservation, its lease ending in 300 ms.
          const dead = yield* BudgetSql.make({ tablePrefix: prefix })
          yield* dead.reserve({
            id: "dead:1",
            owner: "dead",
            amount: usd("2"),
            counters: [globalTotal],
            lease: 300
          })
          const expiresAt = Date.now() + 300
          // Load: 200 fibers reserving and settling as fast as the store lets them, for 3 s.
          let stop = false
          let cycles = 0
          const load = yield* Effect.fork(Effect.forEach(
            Array.from({ length: 200 }),
            () =>
              Effect.whileLoop({
                while: () => !stop,
                body: () =>
                  Effect.flatMap(budget.reserve("tenant:acme/run:2", usd("0.001")), (r) =>
                    budget.settle(r, usd("0.001"))),
                step: () =>
                  cycles++
              }),
            { concurrency: "unbounded", discard: true }
          ))
          const loadStart = Date.now()
          yield* Effect.sleep(3_000)
          stop = true
          yield* Fiber.join(load)
          const during = runs.filter((run) => run.at >= loadStart)
          assert.isAbove(cycles, 100, "the load ran")
          // On schedule: runs keep coming while the load runs, spaced by one interval plus the run and
          // some lateness (measured here under a shared load average of 15–25: typically 450–700 ms).
          assert.isAtLeast(during.length, 3, JSON.stringify(runs))
          const gaps = during.slice(1).map((run, i) => run.at - during[i]!.at)
          const sorted = [...gaps].sort((a, b) => a - b)
          assert.isAtMost(sorted[Math.floor(sorted.length / 2)]!, 2 * interval, `gaps ${gaps.join(", ")} ms`)
          assert.isAtMost(sorted[sorted.length - 1]!, 4 * interval, `gaps ${gaps.join(", ")} ms`)
          // The expired lease was reclaimed by the first run that started after it expired (50 ms for the
          // store's clock), or by one before it; when that run comes is the schedule's part, checked above.
          const taken = runs.find((run) => run.reclaimed > 0)
          const firstAfterExpiry = runs.find((run) => run.startedAt >= expiresAt + 50)
          assert.isDefined(taken, JSON.stringify(runs))
          assert.isDefined(firstAfterExpiry, JSON.stringify(runs))
          assert.isAtMost(taken!.startedAt, firstAfterExpiry!.startedAt, JSON.stringify(runs))
          const rows = yield* sql.unsafe<{ status: string }>(
            `SELECT status FROM ${prefix}_reservations WHERE id = 'dead:1'`
          )
          assert.strictEqual(rows[0]?.status, "reclaimed")
          const settled = yield* budget.settle(long, usd("0.5"))
          assert.deepStrictEqual(settled, { charged: usd("0.5"), overrun: 0n })
        }).pipe(
          Effect.provide(
            Budget.layer({ lease: 1_000, reclaimEvery: interval }).pipe(Layer.provide(store))
          )
        )
      }).pipe(Effect.provide(sqlLayer(backend.store)), Effect.scoped),
    { timeout: 60_000 }
  )

  it.live(
    "the store taken away mid-run: the calls it hits end in BudgetUnavailable, the rest of the run completes",
    () =>
      Effect.gen(function*() {
        const prefix = freshPrefix()
        const applicationName = `keel_${prefix}`
        yield* dropTablesAfter(backend, prefix)
        const client = "pg" in backend.store
          ? PgClient.layer({
            host: "127.0.0.1",
            port: 5432,
            database: "test",
            username: "postgres",
            maxConnections: 8,
            applicationName
          }).pipe(Layer.orDie)
          : sqlLayer(backend.store)
        const filename = "sqlite" in backend.store ? backend.store.sqlite : ""
        /** Calls that have ended in BudgetUnavailable so far. */
        let hit = 0
        /**
         * Postgres: every connection of the run's pool is terminated. SQLite: another connection's lock holds the
         * file until a call has been hit (at most 5 s): how long the store's queue takes to reach a statement that
         * meets the lock depends on the machine's load (the settles in flight go first).
         */
        const takeAway = "pg" in backend.store
          ? Effect.flatMap(SqlClient.SqlClient, (sql) =>
            sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ${applicationName}`)
            .pipe(Effect.provide(sqlLayer(backend.store)), Effect.asVoid)
          : Effect.scoped(Effect.gen(function*() {
            const holder = yield* Sqlite.make({ filename })
            yield* holder.unsafe("BEGIN EXCLUSIVE")
            const held = Effect.sleep(5).pipe(
              Effect.repeat({
                until: () =>
                  hit > 0
              }),
              Effect.timeout(5_000),
              Effect.ignore
            )
            yield* Effect.ensuring(Effect.zipRight(Effect.sleep(300), held), Effect.orDie(holder.unsafe("ROLLBACK")))
          })).pipe(Effect.provide(Reactivity.layer), Effect.orDie)
        const scripted = TestKit.scripted([], {
          otherwise: () =>
            Effect.delay(Effect.succeed(answer), 2)
        })
        yield* Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          if ("sqlite" in backend.store) {
            yield* sql`PRAGMA busy_timeout = 20`
          }
          const llm = yield* Effect.provide(
            Llm.Llm,
            Llm.layer({ require: ["budget"] }).pipe(
              Layer.provide(
                Layer.mergeAll(scripted.layer, TestPrices.layer(), BudgetSql.layer({ tablePrefix: prefix }))
              )
            )
          )
          let finished = 0
          let disrupted = 0
          const disruptor = yield* Effect.fork(Effect.gen(function*() {
            while (finished < 100) {
              yield* Effect.sleep(5)
            }
            disrupted = finished
            yield* takeAway
            yield* Effect.sleep(20)
            yield* takeAway
          }))
          const exits = yield* Effect.forEach(
            Array.from({ length: 400 }, (_, i) => i),
            (i) =>
              Effect.exit(llm.generate({
                model,
                messages: [{ role: "user", content: `Score listing #${i}` }],
                maxOutputTokens: 40,
                scope: `${limitScope}/run:1`
              })).pipe(
                Effect.tap((exit) =>
                  Effect.sync(() => {
                    if (
                      Exit.isFailure(exit) && exit.cause._tag === "Fail" &&
                      exit.cause.error._tag === "BudgetUnavailable"
                    ) hit++
                  })
                ),
                Effect.ensuring(Effect.sync(() => finished++))
              ),
            { concurrency: 20 }
          )
          yield* Fiber.join(disruptor)
          const outcomes = exits.map((exit) =>
            Exit.isSuccess(exit)
              ? "ok"
              : exit.cause._tag === "Fail"
              ? exit.cause.error._tag
              : "defect"
          )
          const count = (outcome: string) => outcomes.filter((o) => o === outcome).length
          assert.isAbove(disrupted, 0)
          assert.deepStrictEqual(
            outcomes.filter((o) => o !== "ok" && o !== "BudgetUnavailable"),
            [],
            "every call either answered or failed typed"
          )
          assert.isAbove(count("BudgetUnavailable"), 0, "the calls in flight were hit")
          // The rest of the run completed: calls after the disruption were answered.
          assert.isAbove(outcomes.slice(disrupted + 60).filter((o) => o === "ok").length, 100)
          const unavailable = exits.find((exit) => Exit.isFailure(exit))!
          assert.isTrue(Exit.isFailure(unavailable) && unavailable.cause._tag === "Fail")
        }).pipe(Effect.provide(client), Effect.scoped)
      }).pipe(Effect.provide(sqlLayer(backend.store)), Effect.scoped),
    { timeout: 60_000 }
  )
})
