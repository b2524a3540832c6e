/**
 * What the budget's ledger promises, the same on every store (memory, a SQLite file, Postgres): a reservation
 * holds its amount on every counter of its scope's chain and nowhere else; a refusal names the counter that
 * refused with its limit, spent, reserved and requested amounts and holds nothing; settle, release and extend
 * move exactly their amounts; a settle above its reservation is an overrun on every counter; an expired lease is
 * reclaimed at the full amount, marked estimated. The amounts asserted are literals worked out by hand.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Budget from "../src/Budget.js"
import * as BudgetSql from "../src/Budget/Sql.js"
import type { BudgetExceeded } from "../src/LlmError.js"
import * as Money from "../src/Money.js"
import { sqlLayer } from "./utils/budget-worker.js"

const usd = Money.unsafeParse

interface LedgerRow {
  readonly id: string
  readonly status: string
  readonly amount: string
  readonly charged: string | null
  readonly estimated: number | string
}

interface Store {
  readonly store: Budget.BudgetStore.Service
  /** The reservation rows of a SQL ledger; the memory store keeps none. */
  readonly ledger: Effect.Effect<ReadonlyArray<LedgerRow>> | undefined
}

interface Backend {
  readonly name: string
  readonly open: Effect.Effect<Store, never, Scope.Scope>
  /** Whether the store's lease clock is the test's clock (Postgres times leases by the database's own clock). */
  readonly testClockLeases: boolean
}

const sqlStore = (client: Layer.Layer<SqlClient.SqlClient, unknown>, prefix: string, dropAfter: boolean) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(Layer.orDie(client))
    const sql = Context.get(context, SqlClient.SqlClient)
    if (dropAfter) {
      yield* Effect.addFinalizer(() =>
        Effect.orDie(Effect.provideService(BudgetSql.drop(prefix), SqlClient.SqlClient, sql))
      )
    }
    const store = yield* Effect.orDie(Effect.provide(BudgetSql.make({ tablePrefix: prefix }), context))
    const ledger = Effect.orDie(sql.unsafe<LedgerRow>(
      `SELECT id, status, CAST(amount AS TEXT) AS amount, CAST(charged AS TEXT) AS charged, estimated
       FROM ${prefix}_reservations`
    ))
    return { store, ledger }
  })

const freshPrefix = () => `kl_${process.pid}_${Math.random().toString(36).slice(2, 8)}`

const backends: ReadonlyArray<Backend> = [
  {
    name: "memory",
    open: Effect.sync(() => ({ store: Budget.makeMemoryStore(), ledger: undefined })),
    testClockLeases: true
  },
  {
    name: "SQLite",
    open: Effect.suspend(() => {
      const filename = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-ledger-")), "budget.db")
      return sqlStore(sqlLayer({ sqlite: filename }), "keel_budget", false)
    }),
    testClockLeases: true
  },
  {
    name: "Postgres",
    open: Effect.suspend(() => sqlStore(sqlLayer({ pg: "test" }), freshPrefix(), true)),
    testClockLeases: false
  }
]

const limits = [
  { scope: "global", limit: "10" },
  { scope: "tenant:acme", limit: "1" },
  { scope: "tenant:acme/run:1", window: "day" as const, limit: "0.7" }
]

const budgetOn = (store: Budget.BudgetStore.Service, options: Budget.Options = { limits }) =>
  Budget.make(options).pipe(Effect.provideService(Budget.BudgetStore, store), Effect.orDie)

/** A scope's counters as `scope window` → [spent, reserved, overrun], in USD. */
const balances = (budget: Budget.Budget.Service, scope: string) =>
  Effect.map(budget.status(scope), (statuses) =>
    Object.fromEntries(statuses.map((s) => [
      `${s.scope} ${s.window}`,
      [Money.format(s.spent), Money.format(s.reserved), Money.format(s.overrun)]
    ])))

/** A refusal as what it tells the user: scope, window, limit, spent, reserved, requested. */
const refusal = (error: Budget.BudgetStoreError | BudgetExceeded) => {
  if (error._tag !== "BudgetExceeded") return assert.fail(`expected BudgetExceeded, got ${error.message}`)
  return [error.scope, error.window, error.limit, error.spent, error.reserved, error.requested]
}

describe.each(backends)("the budget ledger on $name", (backend) => {
  it.scoped("a reservation holds its amount on every counter of its chain, and nowhere else", () =>
    Effect.gen(function*() {
      const { store } = yield* backend.open
      const budget = yield* budgetOn(store)
      const held = yield* budget.reserve("tenant:acme/run:1", usd("0.6"))
      assert.deepStrictEqual([held.scope, held.amount], ["tenant:acme/run:1", usd("0.6")])
      assert.deepStrictEqual(
        held.counters.map((c) => [c.key, c.limit === undefined ? undefined : Money.format(c.limit)]),
        [
          ["global|total|total", "10"],
          ["tenant:acme/run:1|day|1970-01-01", "0.7"],
          ["tenant:acme/run:1|total|total", undefined],
          ["tenant:acme|total|total", "1"]
        ]
      )
      assert.deepStrictEqual(yield* balances(budget, "tenant:acme/run:1"), {
        "global total": ["0", "0.6", "0"],
        "tenant:acme total": ["0", "0.6", "0"],
        "tenant:acme/run:1 total": ["0", "0.6", "0"],
        "tenant:acme/run:1 day": ["0", "0.6", "0"]
      })
      // A sibling run and another tenant see only what they share: the tenant, and global.
      assert.deepStrictEqual(yield* balances(budget, "tenant:acme/run:2"), {
        "global total": ["0", "0.6", "0"],
        "tenant:acme total": ["0", "0.6", "0"],
        "tenant:acme/run:2 total": ["0", "0", "0"]
      })
      assert.deepStrictEqual(yield* balances(budget, "tenant:beta"), {
        "global total": ["0", "0.6", "0"],
        "tenant:beta total": ["0", "0", "0"]
      })
      // A leading "global/" is implied: it names the same chain.
      const again = yield* budget.reserve("global/tenant:acme", usd("0.1"))
      assert.deepStrictEqual(again.counters.map((c) => c.key), ["global|total|total", "tenant:acme|total|total"])
      assert.deepStrictEqual((yield* balances(budget, "tenant:acme"))["tenant:acme total"], ["0", "0.7", "0"])
    }))

  it.scoped("a refusal names the counter that refused, with its amounts, and holds nothing anywhere", () =>
    Effect.gen(function*() {
      const { store } = yield* backend.open
      const budget = yield* budgetOn(store)
      const first = yield* budget.reserve("tenant:acme/run:1", usd("0.6"))
      // The run's day limit (0.7) binds before the tenant's (1).
      assert.deepStrictEqual(refusal(yield* Effect.flip(budget.reserve("tenant:acme/run:1", usd("0.2")))), [
        "tenant:acme/run:1",
        "day 1970-01-01",
        "0.7",
        "0",
        "0.6",
        "0.2"
      ])
      // A sibling run has no day limit: the tenant's total refuses it.
      assert.deepStrictEqual(refusal(yield* Effect.flip(budget.reserve("tenant:acme/run:2", usd("0.5")))), [
        "tenant:acme",
        "total",
        "1",
        "0",
        "0.6",
        "0.5"
      ])
      // Global's limit refuses another tenant; spent shows once the first reservation settles.
      yield* budget.settle(first, usd("0.25"))
      assert.deepStrictEqual(refusal(yield* Effect.flip(budget.reserve("tenant:beta", usd("9.8")))), [
        "global",
        "total",
        "10",
        "0.25",
        "0",
        "9.8"
      ])
      // None of the refused requests held anything.
      assert.deepStrictEqual(yield* balances(budget, "tenant:acme/run:2"), {
        "global total": ["0.25", "0", "0"],
        "tenant:acme total": ["0.25", "0", "0"],
        "tenant:acme/run:2 total": ["0", "0", "0"]
      })
      assert.deepStrictEqual((yield* balances(budget, "tenant:beta"))["tenant:beta total"], ["0", "0", "0"])
      // Exactly up to a limit fits: 0.25 spent + 0.75 = 1.
      yield* budget.reserve("tenant:acme/run:2", usd("0.75"))
    }))

  it.scoped("settle charges the cost on every counter and frees the rest; release frees it all; twice is once", () =>
    Effect.gen(function*() {
      const { ledger, store } = yield* backend.open
      const budget = yield* budgetOn(store)
      const a = yield* budget.reserve("tenant:acme/run:1", usd("0.5"))
      const b = yield* budget.reserve("tenant:acme/run:2", usd("0.3"))
      const c = yield* budget.reserve("tenant:acme/run:2", usd("0.1"))
      assert.deepStrictEqual(yield* budget.settle(a, usd("0.123")), { charged: usd("0.123"), overrun: 0n })
      assert.deepStrictEqual(yield* budget.settle(c, usd("0.05"), { estimated: true }), {
        charged: usd("0.05"),
        overrun: 0n
      })
      yield* budget.release(b)
      assert.deepStrictEqual(yield* balances(budget, "tenant:acme/run:1"), {
        "global total": ["0.173", "0", "0"],
        "tenant:acme total": ["0.173", "0", "0"],
        "tenant:acme/run:1 total": ["0.123", "0", "0"],
        "tenant:acme/run:1 day": ["0.123", "0", "0"]
      })
      assert.deepStrictEqual((yield* balances(budget, "tenant:acme/run:2"))["tenant:acme/run:2 total"], [
        "0.05",
        "0",
        "0"
      ])
      // Closing again charges nothing: the settle answers zero, the release nothing, the balances stay.
      assert.deepStrictEqual(yield* budget.settle(a, usd("0.5")), { charged: 0n, overrun: 0n })
      assert.deepStrictEqual(yield* budget.settle(b, usd("0.5")), { charged: 0n, overrun: 0n })
      yield* budget.release(a)
      assert.deepStrictEqual((yield* balances(budget, "tenant:acme"))["tenant:acme total"], ["0.173", "0", "0"])
      if (ledger !== undefined) {
        const rows = new Map((yield* ledger).map((row) => [row.id, row]))
        assert.deepStrictEqual(
          [a, b, c].map((r) => {
            const row = rows.get(r.id)!
            return [row.status, row.amount, row.charged, Number(row.estimated)]
          }),
          [
            ["settled", String(usd("0.5")), String(usd("0.123")), 0],
            ["released", String(usd("0.3")), "0", 0],
            ["settled", String(usd("0.1")), String(usd("0.05")), 1]
          ]
        )
      }
    }))

  it.scoped("a settle above its reservation is an overrun on every counter, and the limit it passed refuses", () =>
    Effect.gen(function*() {
      const { store } = yield* backend.open
      const budget = yield* budgetOn(store)
      const held = yield* budget.reserve("tenant:acme/run:1", usd("0.6"))
      assert.deepStrictEqual(yield* budget.settle(held, usd("1.05")), { charged: usd("1.05"), overrun: usd("0.45") })
      assert.deepStrictEqual(yield* balances(budget, "tenant:acme/run:1"), {
        "global total": ["1.05", "0", "0.45"],
        "tenant:acme total": ["1.05", "0", "0.45"],
        "tenant:acme/run:1 total": ["1.05", "0", "0.45"],
        "tenant:acme/run:1 day": ["1.05", "0", "0.45"]
      })
      // Spent is past the tenant's limit: even the smallest request there is refused, naming it.
      assert.deepStrictEqual(refusal(yield* Effect.flip(budget.reserve("tenant:acme/run:2", 1n))), [
        "tenant:acme",
        "total",
        "1",
        "1.05",
        "0",
        "0.000000000001"
      ])
      // Another tenant is under global's limit still.
      yield* budget.reserve("tenant:beta", usd("1"))
    }))

  it.scoped("extend adds to the reservation on the same counters, or is refused leaving it as it was", () =>
    Effect.gen(function*() {
      const { store } = yield* backend.open
      const budget = yield* budgetOn(store)
      const first = yield* budget.reserve("tenant:acme/run:2", usd("0.4"))
      const more = yield* budget.extend(first, usd("0.4"))
      assert.deepStrictEqual([more.id, more.amount, more.counters], [first.id, usd("0.8"), first.counters])
      assert.deepStrictEqual((yield* balances(budget, "tenant:acme/run:2"))["tenant:acme total"], ["0", "0.8", "0"])
      // 0.8 held + 0.3 is over the tenant's 1: refused, naming the amounts, and the 0.8 stays as it was.
      assert.deepStrictEqual(refusal(yield* Effect.flip(budget.extend(more, usd("0.3")))), [
        "tenant:acme",
        "total",
        "1",
        "0",
        "0.8",
        "0.3"
      ])
      assert.deepStrictEqual(yield* balances(budget, "tenant:acme/run:2"), {
        "global total": ["0", "0.8", "0"],
        "tenant:acme total": ["0", "0.8", "0"],
        "tenant:acme/run:2 total": ["0", "0.8", "0"]
      })
      // Exactly to the limit fits.
      const full = yield* budget.extend(more, usd("0.2"))
      // Settled within the extended amount: no overrun, though above the first reservation.
      assert.deepStrictEqual(yield* budget.settle(full, usd("0.7")), { charged: usd("0.7"), overrun: 0n })
      assert.deepStrictEqual((yield* balances(budget, "tenant:acme/run:2"))["tenant:acme total"], ["0.7", "0", "0"])
      // A closed reservation cannot be extended.
      const closed = yield* Effect.flip(budget.extend(full, usd("0.01")))
      assert.isTrue(closed._tag === "BudgetStoreError" && /no longer open/.test(closed.reason), closed.message)
    }))

  it.scoped("a bad amount or scope is refused before the store is asked", () =>
    Effect.gen(function*() {
      const { store } = yield* backend.open
      const budget = yield* budgetOn(store)
      const negative = yield* Effect.flip(budget.reserve("tenant:acme", usd("-0.1")))
      assert.deepStrictEqual([negative._tag, negative.message], [
        "BudgetStoreError",
        "Budget store failed to reserve: negative amount -0.1"
      ])
      const scope = yield* Effect.flip(budget.reserve("tenant acme", usd("0.1")))
      assert.deepStrictEqual([scope._tag, scope.message], [
        "BudgetStoreError",
        `Budget store failed to reserve: illegal scope "tenant acme"`
      ])
      const held = yield* budget.reserve("tenant:acme", usd("0.1"))
      const shrink = yield* Effect.flip(budget.extend(held, usd("-0.05")))
      assert.deepStrictEqual([shrink._tag, shrink.message], [
        "BudgetStoreError",
        "Budget store failed to extend a reservation: negative amount -0.05"
      ])
      const status = yield* Effect.flip(budget.status("tenant acme"))
      assert.strictEqual(status.message, `Budget store failed to read the status: illegal scope "tenant acme"`)
      // Nothing but the one good reservation is held.
      assert.deepStrictEqual((yield* balances(budget, "tenant:acme"))["tenant:acme total"], ["0", "0.1", "0"])
    }))

  it.scoped("the status of a scope lists total and each limited window of its chain, with the limits", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.UTC(2026, 10, 29, 12))
      const { store } = yield* backend.open
      const budget = yield* budgetOn(store, {
        limits: [
          { scope: "tenant:acme", window: "month", limit: "30" },
          { scope: "tenant:acme", window: "day", limit: "2" },
          { scope: "tenant:acme", limit: "100" }
        ]
      })
      const statuses = yield* budget.status("tenant:acme/run:9")
      assert.sameDeepMembers(
        statuses.map((s) => [s.scope, s.window, s.period, s.limit === undefined ? "none" : Money.format(s.limit)]),
        [
          ["global", "total", "total", "none"],
          ["tenant:acme", "total", "total", "100"],
          ["tenant:acme", "day", "2026-11-29", "2"],
          ["tenant:acme", "month", "2026-11", "30"],
          ["tenant:acme/run:9", "total", "total", "none"]
        ]
      )
      assert.isTrue(statuses.every((s) => s.spent === 0n && s.reserved === 0n && s.overrun === 0n))
      assert.deepStrictEqual((yield* budget.status()).map((s) => [s.scope, s.window]), [["global", "total"]])
    }))
})

describe.each(backends.filter((backend) => backend.testClockLeases))("leases on $name", (backend) => {
  it.scoped("a dead owner's reservations are reclaimed once their lease has passed, each chain charged its sum", () =>
    Effect.gen(function*() {
      const { ledger, store } = yield* backend.open
      const options: Budget.Options = { limits, lease: "1 minute", reclaimEvery: "1 hour" }
      const dying = yield* Scope.make()
      const owner = yield* budgetOn(store, options).pipe(Scope.extend(dying))
      const one = yield* owner.reserve("tenant:acme/run:1", usd("0.2"))
      const two = yield* owner.reserve("tenant:acme/run:2", usd("0.3"))
      yield* Scope.close(dying, Exit.void) // its leases are no longer renewed
      const survivor = yield* budgetOn(store, options)
      // Written at 0 with a lease of a minute: still held at exactly 60 s, gone just after.
      yield* TestClock.setTime(60_000)
      assert.strictEqual(yield* survivor.reclaim, 0)
      yield* TestClock.setTime(60_001)
      assert.strictEqual(yield* survivor.reclaim, 2)
      assert.strictEqual(yield* survivor.reclaim, 0)
      assert.deepStrictEqual(yield* balances(survivor, "tenant:acme/run:1"), {
        "global total": ["0.5", "0", "0"],
        "tenant:acme total": ["0.5", "0", "0"],
        "tenant:acme/run:1 total": ["0.2", "0", "0"],
        "tenant:acme/run:1 day": ["0.2", "0", "0"]
      })
      assert.deepStrictEqual((yield* balances(survivor, "tenant:acme/run:2"))["tenant:acme/run:2 total"], [
        "0.3",
        "0",
        "0"
      ])
      // The dead owner's late settle is refused, and counts nothing twice.
      const late = yield* Effect.flip(owner.settle(one, usd("0.01")))
      assert.strictEqual(
        late.message,
        "Budget store failed to settle: reservation " + one.id +
          " was reclaimed after its lease expired and charged its full amount $0.2; the cost $0.01 was not recorded"
      )
      assert.deepStrictEqual((yield* balances(survivor, "tenant:acme"))["tenant:acme total"], ["0.5", "0", "0"])
      if (ledger !== undefined) {
        const rows = new Map((yield* ledger).map((row) => [row.id, row]))
        assert.deepStrictEqual(
          [one, two].map((r) => [rows.get(r.id)!.status, rows.get(r.id)!.charged, Number(rows.get(r.id)!.estimated)]),
          [["reclaimed", String(usd("0.2")), 1], ["reclaimed", String(usd("0.3")), 1]]
        )
      }
    }))

  it.scoped("extending renews the lease from the time of the extend", () =>
    Effect.gen(function*() {
      const { store } = yield* backend.open
      const options: Budget.Options = { limits, lease: "1 minute", reclaimEvery: "1 hour" }
      const dying = yield* Scope.make()
      const owner = yield* budgetOn(store, options).pipe(Scope.extend(dying))
      const held = yield* owner.reserve("tenant:acme", usd("0.2"))
      yield* Scope.close(dying, Exit.void)
      const survivor = yield* budgetOn(store, options)
      yield* TestClock.setTime(50_000)
      yield* owner.extend(held, usd("0.1"))
      yield* TestClock.setTime(100_000) // past the first lease, within the renewed one
      assert.strictEqual(yield* survivor.reclaim, 0)
      yield* TestClock.setTime(110_001)
      assert.strictEqual(yield* survivor.reclaim, 1)
      assert.deepStrictEqual((yield* balances(survivor, "tenant:acme"))["tenant:acme total"], ["0.3", "0", "0"])
    }))
})

describe("the budget's scope chain", () => {
  it("a scope charges itself, each ancestor and global, whether or not global is written", () => {
    assert.deepStrictEqual(Budget.chain("global"), ["global"])
    assert.deepStrictEqual(Budget.chain("tenant:a/run:1/step:2"), [
      "global",
      "tenant:a",
      "tenant:a/run:1",
      "tenant:a/run:1/step:2"
    ])
    assert.deepStrictEqual(Budget.chain("global/tenant:a/run:1"), ["global", "tenant:a", "tenant:a/run:1"])
  })
})

describe("the budget's configuration and identity", () => {
  it.scoped("each duration option is checked and named when it is not a positive duration", () =>
    Effect.gen(function*() {
      for (const field of ["lease", "renewEvery", "reclaimEvery", "pollEvery"] as const) {
        const error = yield* Effect.flip(
          Budget.make({ [field]: "0 millis" }).pipe(Effect.provideService(Budget.BudgetStore, Budget.makeMemoryStore()))
        )
        assert.strictEqual(
          error.message,
          `Invalid budget configuration at ${field}: must be a positive duration`
        )
      }
    }))

  it("a second limit for the same scope and window is named; a limit of zero is allowed", () => {
    const twice = Budget.validateLimits([
      { scope: "tenant:acme", window: "day", limit: "1" },
      { scope: "tenant:acme", window: "day", limit: "2" }
    ])
    assert.isTrue(Either.isLeft(twice))
    if (Either.isLeft(twice)) {
      assert.strictEqual(
        twice.left.message,
        `Invalid budget configuration at limits.1: a second day limit for scope "tenant:acme"`
      )
    }
    assert.isTrue(Either.isRight(Budget.validateLimits([{ scope: "tenant:acme", limit: "0" }])))
  })

  it.scoped("a limit of zero refuses any spend there, and nothing else", () =>
    Effect.gen(function*() {
      const budget = yield* budgetOn(Budget.makeMemoryStore(), { limits: [{ scope: "tenant:free", limit: "0" }] })
      assert.deepStrictEqual(refusal(yield* Effect.flip(budget.reserve("tenant:free/run:1", 1n))), [
        "tenant:free",
        "total",
        "0",
        "0",
        "0",
        "0.000000000001"
      ])
      yield* budget.reserve("tenant:paid", usd("5"))
    }))

  it.scoped("reservations carry the owner's name and a sequence, as the ledger records them", () =>
    Effect.gen(function*() {
      const budget = yield* budgetOn(Budget.makeMemoryStore(), { owner: "worker-7" })
      const first = yield* budget.reserve("tenant:acme", usd("0.1"))
      const second = yield* budget.reserve("tenant:acme", usd("0.1"))
      assert.deepStrictEqual([first.id, second.id], ["worker-7:1", "worker-7:2"])
    }))

  it.scoped("a request that fits exactly once the others settle waits for them, then gets in", () =>
    Effect.gen(function*() {
      const budget = yield* budgetOn(Budget.makeMemoryStore(), { limits: [{ scope: "tenant:acme", limit: "1" }] })
      const other = yield* budget.reserve("tenant:acme", usd("0.6"))
      const waiting = yield* Effect.fork(budget.reserve("tenant:acme", usd("1"), { maxWait: "1 second" }))
      yield* TestClock.adjust("100 millis")
      yield* budget.release(other)
      const got = yield* Fiber.join(waiting)
      assert.strictEqual(got.amount, usd("1"))
      assert.deepStrictEqual((yield* balances(budget, "tenant:acme"))["tenant:acme total"], ["0", "1", "0"])
    }))

  it.scoped("a reservation or extension of zero is accepted and holds nothing", () =>
    Effect.gen(function*() {
      const budget = yield* budgetOn(Budget.makeMemoryStore(), { limits: [{ scope: "tenant:acme", limit: "1" }] })
      const held = yield* budget.reserve("tenant:acme", 0n)
      const more = yield* budget.extend(held, 0n)
      assert.deepStrictEqual([held.amount, more.amount], [0n, 0n])
      assert.deepStrictEqual((yield* balances(budget, "tenant:acme"))["tenant:acme total"], ["0", "0", "0"])
    }))

  it.effect("the memory store: renew counts one owner's open reservations, release says whether it closed one", () =>
    Effect.gen(function*() {
      const store = Budget.makeMemoryStore()
      const counters: ReadonlyArray<Budget.Counter> = [
        { key: "global|total|total", scope: "global", window: "total", period: "total", limit: undefined }
      ]
      for (const [id, owner] of [["a:1", "a"], ["a:2", "a"], ["b:1", "b"]] as const) {
        yield* store.reserve({ id, owner, amount: usd("0.1"), counters, lease: 60_000 })
      }
      assert.deepStrictEqual(
        [yield* store.renew("a", 60_000), yield* store.renew("b", 60_000), yield* store.renew("c", 60_000)],
        [2, 1, 0]
      )
      assert.deepStrictEqual([yield* store.release("a:1"), yield* store.release("a:1")], [true, false])
      assert.strictEqual(yield* store.renew("a", 60_000), 1)
      // A counter never written reads as zero, named from its key.
      assert.deepStrictEqual(yield* store.balances(["tenant:x|day|2026-12-01", "odd"]), [
        { scope: "tenant:x", window: "day", period: "2026-12-01", spent: 0n, reserved: 0n, overrun: 0n },
        { scope: "odd", window: "total", period: "", spent: 0n, reserved: 0n, overrun: 0n }
      ])
    }))
})
