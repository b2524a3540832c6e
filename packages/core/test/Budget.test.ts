import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as Budget from "../src/Budget.js"
import * as CallLog from "../src/CallLog.js"
import * as Llm from "../src/Llm.js"
import { InvalidRequest, RateLimited } from "../src/LlmError.js"
import type * as LlmRequest from "../src/LlmRequest.js"
import * as Money from "../src/Money.js"
import * as Pricing from "../src/Pricing.js"
import * as RetryPolicy from "../src/RetryPolicy.js"
import * as TestKit from "../src/TestKit.js"
import * as Tokenizer from "../src/Tokenizer.js"
import * as TestPrices from "./utils/prices.js"

const usd = Money.unsafeParse

const total = (statuses: ReadonlyArray<Budget.Status>, scope: string, window: Budget.Window = "total") => {
  const found = statuses.find((s) => s.scope === scope && s.window === window)
  if (found === undefined) throw new Error(`no ${window} counter for ${scope}`)
  return found
}

const configError = (limits: ReadonlyArray<unknown>) => {
  const result = Budget.validateLimits(limits as any)
  if (Either.isRight(result)) throw new Error("expected a configuration error")
  return result.left
}

describe("Budget configuration", () => {
  it("rejects bad limits at configuration time, naming the field", () => {
    const negative = configError([{ scope: "tenant:acme", limit: "-5" }])
    assert.strictEqual(negative.field, "limits.0.limit")
    assert.match(negative.message, /must not be negative/)
    const text = configError([{ scope: "global", limit: "ten dollars" }])
    assert.strictEqual(text.field, "limits.0.limit")
    assert.strictEqual(text.reason, `"ten dollars" is not a decimal number of US dollars`)
    const window = configError([{ scope: "global", limit: 1 }, { scope: "global", window: "week", limit: 1 }])
    assert.strictEqual(window.field, "limits.1.window")
    assert.strictEqual(window.reason, `Expected "total", actual "week"`)
    const scope = configError([{ scope: "tenant acme", limit: 1 }])
    assert.strictEqual(scope.field, "limits.0.scope")
    const twice = configError([{ scope: "a", window: "day", limit: 1 }, { scope: "a", window: "day", limit: 2 }])
    assert.strictEqual(twice.field, "limits.1")
  })

  it.effect("the layer fails with BudgetConfigError on a bad limit or lease", () =>
    Effect.gen(function*() {
      const bad = yield* Effect.flip(
        Effect.provide(Budget.Budget, Budget.layerMemory({ limits: [{ scope: "a/", limit: 1 }] }))
      )
      assert.strictEqual(bad._tag, "BudgetConfigError")
      const lease = yield* Effect.flip(Effect.provide(Budget.Budget, Budget.layerMemory({ lease: 0 })))
      assert.isTrue(lease._tag === "BudgetConfigError" && lease.field === "lease")
    }))

  it.effect("layerConfig reads the options from Config and validates them the same way", () =>
    Effect.gen(function*() {
      const layer = (limit: Config.Config<string>) =>
        Layer.provide(
          Budget.layerConfig({
            lease: Config.duration("lease"),
            limits: Config.map(limit, (amount) => [{ scope: "tenant:acme", limit: amount }])
          }),
          Layer.sync(Budget.BudgetStore, Budget.makeMemoryStore)
        )
      const bad = yield* Effect.flip(Effect.provide(Budget.Budget, layer(Config.string("limit"))))
      assert.isTrue(bad._tag === "BudgetConfigError" && bad.field === "limits.0.limit")
      const budget = yield* Effect.provide(Budget.Budget, layer(Config.succeed("2")))
      assert.deepStrictEqual(budget.limits.map((l) => l.limit), [usd("2")])
    }).pipe(Effect.withConfigProvider(ConfigProvider.fromJson({ lease: "1 minute", limit: "-1" }))))

  it("a scope charges itself, every ancestor and global", () => {
    assert.deepStrictEqual(Budget.chain("tenant:acme/run:42"), ["global", "tenant:acme", "tenant:acme/run:42"])
    assert.deepStrictEqual(Budget.chain("global"), ["global"])
    assert.deepStrictEqual(Budget.chain("global/run:1"), ["global", "run:1"])
  })
})

describe("Budget (memory store)", () => {
  const limits = [
    { scope: "global", limit: "10" },
    { scope: "tenant:acme", limit: "1.00" },
    { scope: "tenant:acme/run:1", window: "day" as const, limit: "0.70" }
  ]

  it.effect("reserves across the whole chain, all or nothing", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.Budget
      yield* budget.reserve("tenant:acme/run:1", usd("0.60"))
      const error = yield* Effect.flip(budget.reserve("tenant:acme/run:2", usd("0.50")))
      assert.strictEqual(error._tag, "BudgetExceeded")
      if (error._tag !== "BudgetExceeded") return
      assert.deepStrictEqual(
        [error.scope, error.window, error.limit, error.spent, error.reserved, error.requested],
        ["tenant:acme", "total", "1", "0", "0.6", "0.5"]
      )
      // Nothing of the failed reservation stuck anywhere: global and run:2 hold only the first one.
      const status = yield* budget.status("tenant:acme/run:2")
      assert.strictEqual(total(status, "global").reserved, usd("0.60"))
      assert.strictEqual(total(status, "tenant:acme/run:2").reserved, 0n)
      // The run's own day limit binds before the tenant's.
      const day = yield* Effect.flip(budget.reserve("tenant:acme/run:1", usd("0.20")))
      assert.isTrue(
        day._tag === "BudgetExceeded" && day.scope === "tenant:acme/run:1" && day.window === "day 1970-01-01"
      )
    }).pipe(Effect.provide(Budget.layerMemory({ limits }))))

  it.effect("settle charges the actual cost and frees the rest; release frees it all", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.Budget
      const a = yield* budget.reserve("tenant:acme", usd("0.50"))
      const b = yield* budget.reserve("tenant:acme", usd("0.40"))
      yield* budget.settle(a, usd("0.123"))
      yield* budget.release(b)
      yield* budget.settle(a, usd("0.5")) // already settled: no effect
      const status = total(yield* budget.status("tenant:acme"), "tenant:acme")
      assert.deepStrictEqual([status.spent, status.reserved, status.limit], [usd("0.123"), 0n, usd("1")])
    }).pipe(Effect.provide(Budget.layerMemory({ limits }))))

  it.effect("extend adds to a reservation within the limits, or fails leaving it as it was", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.Budget
      const first = yield* budget.reserve("tenant:acme/run:2", usd("0.40"))
      const more = yield* budget.extend(first, usd("0.40"))
      assert.strictEqual(more.amount, usd("0.80"))
      const error = yield* Effect.flip(budget.extend(more, usd("0.40")))
      assert.isTrue(error._tag === "BudgetExceeded" && error.scope === "tenant:acme" && error.reserved === "0.8")
      yield* budget.settle(more, usd("0.75"))
      const status = total(yield* budget.status("tenant:acme"), "tenant:acme")
      assert.deepStrictEqual([status.spent, status.reserved], [usd("0.75"), 0n])
      const gone = yield* Effect.flip(budget.extend(more, usd("0.01")))
      assert.strictEqual(gone._tag, "BudgetStoreError")
    }).pipe(Effect.provide(Budget.layerMemory({ limits }))))

  it.effect("a dead owner's reservation is charged in full when its lease expires; its late settle fails typed", () =>
    Effect.gen(function*() {
      const store = Budget.makeMemoryStore()
      const options: Budget.Options = { limits, lease: "1 minute", reclaimEvery: "30 seconds" }
      // The owner "dies": its scope closes, so its leases are no longer renewed.
      const dying = yield* Scope.make()
      const owner = yield* Budget.make(options).pipe(
        Effect.provideService(Budget.BudgetStore, store),
        Scope.extend(dying)
      )
      const held = yield* owner.reserve("tenant:acme", usd("0.30"))
      yield* Scope.close(dying, Exit.void)
      const survivor = yield* Budget.make(options).pipe(Effect.provideService(Budget.BudgetStore, store))
      yield* TestClock.adjust("59 seconds")
      assert.strictEqual(total(yield* survivor.status("tenant:acme"), "tenant:acme").reserved, usd("0.30"))
      yield* TestClock.adjust("2 minutes") // the survivor's periodic reclaim runs
      const after = total(yield* survivor.status("tenant:acme"), "tenant:acme")
      assert.deepStrictEqual([after.spent, after.reserved], [usd("0.30"), 0n])
      const late = yield* Effect.flip(owner.settle(held, usd("0.01")))
      assert.strictEqual(late._tag, "BudgetStoreError")
      assert.match(late.message, /reclaimed after its lease expired.*\$0\.3.*\$0\.01 was not recorded/)
      assert.strictEqual(total(yield* survivor.status("tenant:acme"), "tenant:acme").spent, usd("0.30"))
      const extendLate = yield* Effect.flip(owner.extend(held, usd("0.01")))
      assert.strictEqual(
        extendLate.message,
        `Budget store failed to extend a reservation: reservation ${held.id} is no longer open: its lease expired and it was reclaimed at its full amount`
      )
    }).pipe(Effect.scoped))

  it.effect("periodic reclaim runs on fixed ticks: a slow run does not push the later ones back", () =>
    Effect.gen(function*() {
      const memory = Budget.makeMemoryStore()
      // How long each periodic run keeps the store busy (a store serving a burst of calls).
      const took = [700, 700, 2_500]
      const runs: Array<number> = []
      const slow = Budget.BudgetStore.of({
        ...memory,
        reclaim: Effect.gen(function*() {
          runs.push(yield* Clock.currentTimeMillis)
          yield* Effect.sleep(took[runs.length - 2] ?? 0) // the first call is the one at start
          return yield* memory.reclaim
        })
      })
      yield* Budget.make({ reclaimEvery: "1 second" }).pipe(Effect.provideService(Budget.BudgetStore, slow))
      yield* TestClock.adjust("7500 millis")
      // Ticks at 1 s, 2 s, 3 s…: the 2.5 s run from 3 s overran two ticks, so the next ran at once
      // when it ended (5.5 s), the missed ones were not made up, and the ticks resumed at 6 s.
      assert.deepStrictEqual(runs, [0, 1_000, 2_000, 3_000, 5_500, 6_000, 7_000])
    }).pipe(Effect.scoped))

  it.effect("periodic reclaim compares leases with the time it reaches the store, not the time it was due", () =>
    Effect.gen(function*() {
      const memory = Budget.makeMemoryStore()
      const runs: Array<{ readonly at: number; readonly reclaimed: number }> = []
      let busyUntil = 0
      // A store that makes each operation wait for it until `busyUntil` (a connection held by others).
      const busy = Budget.BudgetStore.of({
        ...memory,
        reclaim: Effect.gen(function*() {
          const at = yield* Clock.currentTimeMillis
          yield* Effect.sleep(Math.max(0, busyUntil - at))
          const reclaimed = yield* memory.reclaim
          runs.push({ at, reclaimed })
          return reclaimed
        })
      })
      const dying = yield* Scope.make()
      const owner = yield* Budget.make({ lease: "3 seconds" }).pipe(
        Effect.provideService(Budget.BudgetStore, memory),
        Scope.extend(dying)
      )
      yield* owner.reserve("tenant:acme", usd("0.30"))
      yield* Scope.close(dying, Exit.void) // the owner dies: its lease ends at 3 s
      const budget = yield* Budget.make({ reclaimEvery: "1 second" }).pipe(
        Effect.provideService(Budget.BudgetStore, busy)
      )
      busyUntil = 5_000
      yield* TestClock.adjust("5 seconds")
      // The run due at 1 s got the store at 5 s, after the lease had ended at 3 s, and took it (the
      // next run, behind its ticks, followed at once and found nothing).
      assert.deepStrictEqual(runs, [{ at: 0, reclaimed: 0 }, { at: 1_000, reclaimed: 1 }, { at: 5_000, reclaimed: 0 }])
      const tenant = total(yield* budget.status("tenant:acme"), "tenant:acme")
      assert.deepStrictEqual([tenant.spent, tenant.reserved], [usd("0.30"), 0n])
    }).pipe(Effect.scoped))

  it.effect("a live owner's leases are renewed: a call held for hours keeps its reservation", () =>
    Effect.gen(function*() {
      const store = Budget.makeMemoryStore()
      const options: Budget.Options = { limits, lease: "10 minutes", reclaimEvery: "5 minutes" }
      const owner = yield* Budget.make(options).pipe(Effect.provideService(Budget.BudgetStore, store))
      const other = yield* Budget.make(options).pipe(Effect.provideService(Budget.BudgetStore, store))
      const held = yield* owner.reserve("tenant:acme", usd("0.30"))
      yield* TestClock.adjust("5 hours")
      assert.strictEqual(yield* other.reclaim, 0)
      assert.strictEqual(total(yield* other.status("tenant:acme"), "tenant:acme").reserved, usd("0.30"))
      const settled = yield* owner.settle(held, usd("0.25"))
      assert.deepStrictEqual(settled, { charged: usd("0.25"), overrun: 0n })
      const after = total(yield* other.status("tenant:acme"), "tenant:acme")
      assert.deepStrictEqual([after.spent, after.reserved], [usd("0.25"), 0n])
    }).pipe(Effect.scoped))

  it.effect("a settle above its reservation is charged in full, recorded as overrun, and later reserves are refused", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.Budget
      const reservation = yield* budget.reserve("tenant:acme/run:2", usd("0.90"))
      const settled = yield* budget.settle(reservation, usd("1.15"))
      assert.deepStrictEqual(settled, { charged: usd("1.15"), overrun: usd("0.25") })
      const status = yield* budget.status("tenant:acme/run:2")
      for (const scope of ["global", "tenant:acme", "tenant:acme/run:2"]) {
        assert.deepStrictEqual([total(status, scope).spent, total(status, scope).overrun], [usd("1.15"), usd("0.25")])
      }
      // Spent passed the tenant's $1 limit by the overrun; nothing more is let through, even waiting.
      const refused = yield* Effect.flip(budget.reserve("tenant:acme/run:3", usd("0.000001"), { maxWait: "1 hour" }))
      assert.isTrue(refused._tag === "BudgetExceeded" && refused.scope === "tenant:acme" && refused.spent === "1.15")
    }).pipe(Effect.provide(Budget.layerMemory({ limits }))))

  it.effect("reserve waits while only other reservations block it, and gets in when they settle", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.Budget
      const first = yield* budget.reserve("tenant:acme/run:2", usd("0.60"))
      const waiting = yield* Effect.fork(budget.reserve("tenant:acme/run:2", usd("0.50"), { maxWait: "10 seconds" }))
      yield* TestClock.adjust("5 seconds")
      assert.isNull(waiting.unsafePoll())
      yield* budget.settle(first, usd("0.40"))
      yield* TestClock.adjust("1 millis")
      const second = yield* Fiber.join(waiting)
      assert.strictEqual(second.amount, usd("0.50"))
      const tenant = total(yield* budget.status("tenant:acme"), "tenant:acme")
      assert.deepStrictEqual([tenant.spent, tenant.reserved], [usd("0.40"), usd("0.50")])
    }).pipe(Effect.provide(Budget.layerMemory({ limits, pollEvery: "1 second" }))))

  it.effect("reserve gives up at maxWait, and refuses at once what could not fit even if everything settled", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.Budget
      yield* budget.settle(yield* budget.reserve("tenant:acme/run:2", usd("0.30")), usd("0.30"))
      yield* budget.reserve("tenant:acme/run:2", usd("0.50"))
      const cannot = yield* Effect.fork(
        Effect.flip(budget.reserve("tenant:acme/run:2", usd("0.75"), { maxWait: "1 hour" }))
      )
      yield* TestClock.adjust("0 millis")
      const refusedAtOnce = cannot.unsafePoll()
      assert.isTrue(refusedAtOnce !== null && Exit.isSuccess(refusedAtOnce), "refused without waiting")
      const waiting = yield* Effect.fork(
        Effect.flip(budget.reserve("tenant:acme/run:2", usd("0.30"), { maxWait: "10 seconds" }))
      )
      yield* TestClock.adjust("9 seconds")
      assert.isNull(waiting.unsafePoll())
      yield* TestClock.adjust("1 second")
      const gaveUp = yield* Fiber.join(waiting)
      assert.isTrue(gaveUp._tag === "BudgetExceeded" && gaveUp.reserved === "0.5")
      assert.strictEqual(total(yield* budget.status("tenant:acme"), "tenant:acme").reserved, usd("0.50"))
    }).pipe(Effect.provide(Budget.layerMemory({ limits, pollEvery: "1 second" }))))

  it.effect("a timeout around a waiting reserve takes effect at once and leaves nothing reserved", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.Budget
      yield* budget.reserve("tenant:acme", usd("0.90"))
      const timed = yield* Effect.fork(
        budget.reserve("tenant:acme", usd("0.50"), { maxWait: "1 hour" }).pipe(Effect.timeout("50 millis"))
      )
      yield* TestClock.adjust("50 millis")
      const exit = timed.unsafePoll()
      assert.isTrue(exit !== null && Exit.isFailure(exit), "the timeout took effect at 50 ms")
      assert.strictEqual(total(yield* budget.status("tenant:acme"), "tenant:acme").reserved, usd("0.90"))
    }).pipe(Effect.provide(Budget.layerMemory({ limits }))))

  it.effect("a timeout does not wait for a store round trip in flight; what it wrote is released", () =>
    Effect.gen(function*() {
      const memory = Budget.makeMemoryStore()
      // A busy SQL store: the statement, once sent, runs to its end (300 ms) whatever the caller does.
      const busy = Budget.BudgetStore.of({
        ...memory,
        synchronous: false,
        reserve: (request) =>
          Effect.uninterruptible(Effect.zipRight(Effect.sleep("300 millis"), memory.reserve(request)))
      })
      const budget = yield* Budget.make({ limits }).pipe(Effect.provideService(Budget.BudgetStore, busy))
      const timed = yield* Effect.fork(budget.reserve("tenant:acme", usd("0.50")).pipe(Effect.timeout("50 millis")))
      yield* TestClock.adjust("50 millis")
      const at50 = timed.unsafePoll()
      yield* TestClock.adjust("250 millis")
      assert.isTrue(at50 !== null && Exit.isFailure(at50), "the timeout took effect at 50 ms, not at 300")
      const after = total(yield* budget.status("tenant:acme"), "tenant:acme")
      assert.deepStrictEqual([after.spent, after.reserved], [0n, 0n], "the late write was released")
    }).pipe(Effect.scoped))

  it.effect("a timeout around a settle in flight takes effect at once; the settle lands anyway", () =>
    Effect.gen(function*() {
      const memory = Budget.makeMemoryStore()
      // A busy SQL store: the settle's statement, once sent, runs to its end (300 ms).
      const busy = Budget.BudgetStore.of({
        ...memory,
        synchronous: false,
        settle: (id, cost, estimated) =>
          Effect.uninterruptible(Effect.zipRight(Effect.sleep("300 millis"), memory.settle(id, cost, estimated)))
      })
      const budget = yield* Budget.make({ limits }).pipe(Effect.provideService(Budget.BudgetStore, busy))
      const reservation = yield* budget.reserve("tenant:acme", usd("0.50"))
      // As the pipeline closes a call's reservation: uninterruptibly, in the release of acquireUseRelease.
      const timed = yield* Effect.fork(
        Effect.acquireUseRelease(
          Effect.succeed(reservation),
          () => Effect.void,
          (r) => Effect.orDie(budget.settle(r, usd("0.20")))
        ).pipe(Effect.timeout("50 millis"))
      )
      yield* TestClock.adjust("50 millis")
      const at50 = timed.unsafePoll()
      assert.isTrue(at50 !== null && Exit.isFailure(at50), "the timeout took effect at 50 ms, not at 300")
      yield* TestClock.adjust("250 millis")
      const after = total(yield* budget.status("tenant:acme"), "tenant:acme")
      assert.deepStrictEqual([after.spent, after.reserved], [usd("0.20"), 0n], "settled at its cost")
    }).pipe(Effect.scoped))

  it.effect("closing the budget finishes what it owes the store: an interrupted reserve's release, a failed settle", () =>
    Effect.gen(function*() {
      const memory = Budget.makeMemoryStore()
      let settleFails = true
      const busy = Budget.BudgetStore.of({
        ...memory,
        synchronous: false,
        reserve: (request) =>
          Effect.uninterruptible(Effect.zipRight(Effect.sleep("300 millis"), memory.reserve(request))),
        settle: (id, cost, estimated) =>
          settleFails
            ? Effect.fail(new Budget.BudgetStoreError({ operation: "settle", reason: "connection lost" }))
            : memory.settle(id, cost, estimated)
      })
      const scope = yield* Scope.make()
      const budget = yield* Budget.make({ limits, renewEvery: "1 hour" }).pipe(
        Effect.provideService(Budget.BudgetStore, busy),
        Scope.extend(scope)
      )
      const first = yield* Effect.fork(budget.reserve("tenant:acme", usd("0.25")))
      yield* TestClock.adjust("300 millis")
      const settled = yield* Effect.either(budget.settle(yield* Fiber.join(first), usd("0.10")))
      assert.isTrue(Either.isLeft(settled), "the settle failed; it is kept to retry")
      settleFails = false
      const timed = yield* Effect.fork(budget.reserve("tenant:acme", usd("0.50")).pipe(Effect.timeout("50 millis")))
      yield* TestClock.adjust("50 millis")
      assert.isTrue(Exit.isExit(timed.unsafePoll()), "the timeout took effect")
      // The process ends at once, before any renewal: the budget's scope closes with the write in flight.
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* TestClock.adjust("300 millis")
      yield* Fiber.join(closing)
      const [acme] = yield* memory.balances(["tenant:acme|total|total"])
      assert.deepStrictEqual([acme?.spent, acme?.reserved], [usd("0.10"), 0n], "settled at its cost; nothing reserved")
    }))

  it.effect("against an exhausted budget, refusals do not ask the store again; a fresh budget knows at start", () =>
    Effect.gen(function*() {
      const memory = Budget.makeMemoryStore()
      let reserves = 0
      const counting = Budget.BudgetStore.of({
        ...memory,
        reserve: (request) => Effect.suspend(() => (reserves++, memory.reserve(request)))
      })
      const budget = yield* Budget.make({ limits }).pipe(Effect.provideService(Budget.BudgetStore, counting))
      yield* budget.settle(yield* budget.reserve("tenant:acme/run:2", usd("0.90")), usd("0.90"))
      const first = yield* Effect.flip(budget.reserve("tenant:acme/run:2", usd("0.20")))
      assert.isTrue(first._tag === "BudgetExceeded" && first.spent === "0.9")
      const asked = reserves
      const again = yield* Effect.flip(budget.reserve("tenant:acme/run:3", usd("0.15")))
      assert.isTrue(again._tag === "BudgetExceeded" && again.scope === "tenant:acme" && again.spent === "0.9")
      assert.strictEqual(reserves, asked, "refused from what the store last reported")
      // What still fits on top of spent is asked, and reserved.
      yield* budget.reserve("tenant:acme/run:3", usd("0.10"))
      assert.strictEqual(reserves, asked + 1)
      // Another process over the same store learns the spent when it starts.
      const fresh = yield* Budget.make({ limits }).pipe(Effect.provideService(Budget.BudgetStore, counting))
      const refused = yield* Effect.flip(fresh.reserve("tenant:acme", usd("0.20")))
      assert.isTrue(refused._tag === "BudgetExceeded" && refused.spent === "0.9")
      assert.strictEqual(reserves, asked + 1)
    }).pipe(Effect.scoped))

  it.effect("a settle the store failed is retried with the renewals until it lands", () =>
    Effect.gen(function*() {
      const memory = Budget.makeMemoryStore()
      let failures = 1
      const flaky = Budget.BudgetStore.of({
        ...memory,
        settle: (id, amount, estimated) =>
          failures-- > 0
            ? Effect.fail(new Budget.BudgetStoreError({ operation: "settle", reason: "connection reset" }))
            : memory.settle(id, amount, estimated)
      })
      const budget = yield* Budget.make({ limits, lease: "30 seconds" }).pipe(
        Effect.provideService(Budget.BudgetStore, flaky)
      )
      const reservation = yield* budget.reserve("tenant:acme", usd("0.50"))
      const error = yield* Effect.flip(budget.settle(reservation, usd("0.20")))
      assert.strictEqual(error._tag, "BudgetStoreError")
      yield* TestClock.adjust("10 seconds")
      const tenant = total(yield* budget.status("tenant:acme"), "tenant:acme")
      assert.deepStrictEqual([tenant.spent, tenant.reserved], [usd("0.20"), 0n])
    }).pipe(Effect.scoped))

  it.effect("a day window starts over at UTC midnight; total does not", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.Budget
      yield* budget.settle(yield* budget.reserve("run:1", usd("1")), usd("1"))
      const full = yield* Effect.flip(budget.reserve("run:1", usd("0.01")))
      assert.isTrue(full._tag === "BudgetExceeded" && full.window === "day 2026-11-29")
      yield* TestClock.adjust("59 minutes")
      assert.isTrue(Exit.isFailure(yield* Effect.exit(budget.reserve("run:1", usd("0.01")))))
      yield* TestClock.adjust("1 minute")
      yield* budget.settle(yield* budget.reserve("run:1", usd("1")), usd("1"))
      const status = yield* budget.status("run:1")
      assert.strictEqual(total(status, "run:1", "day").period, "2026-11-30")
      assert.strictEqual(total(status, "run:1", "total").spent, usd("2"))
    }).pipe(
      Effect.provide(Budget.layerMemory({ limits: [{ scope: "run:1", window: "day", limit: 1 }] })),
      (self) => Effect.zipRight(TestClock.setTime(Date.parse("2026-11-29T23:00:00Z")), self)
    ))

  it.effect("a month window starts over on the 1st (UTC), across month lengths", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.Budget
      yield* budget.settle(yield* budget.reserve(undefined, usd("5")), usd("5"))
      const full = yield* Effect.flip(budget.reserve(undefined, usd("0.000001")))
      assert.isTrue(full._tag === "BudgetExceeded" && full.window === "month 2026-02")
      yield* TestClock.adjust("1 second")
      yield* budget.reserve(undefined, usd("5"))
      assert.strictEqual(total(yield* budget.status(), "global", "month").period, "2026-03")
    }).pipe(
      Effect.provide(Budget.layerMemory({ limits: [{ scope: "global", window: "month", limit: 5 }] })),
      (self) => Effect.zipRight(TestClock.setTime(Date.parse("2026-02-28T23:59:59Z")), self)
    ))
})

describe("Budget (memory store): waiting lines and maintenance", () => {
  const limits = [{ scope: "tenant:acme", limit: "1.00" }]

  /** The memory store, counting the reservations a budget asks it for. */
  const counted = () => {
    const memory = Budget.makeMemoryStore()
    const calls = { reserve: 0 }
    const store = Budget.BudgetStore.of({
      ...memory,
      reserve: (request) => Effect.suspend(() => (calls.reserve++, memory.reserve(request)))
    })
    return { memory, calls, store }
  }

  /** A reservation of `amount` on the tenant by an owner that then dies (its leases are no longer renewed). */
  const deadReservation = (store: Budget.BudgetStore.Service, amount: string, lease: Duration.DurationInput) =>
    Effect.gen(function*() {
      const dying = yield* Scope.make()
      const owner = yield* Budget.make({ limits, lease }).pipe(
        Effect.provideService(Budget.BudgetStore, store),
        Scope.extend(dying)
      )
      yield* owner.reserve("tenant:acme", usd(amount))
      yield* Scope.close(dying, Exit.void)
    })

  it.effect("while reservations wait, only the head of their line asks the store; an interrupted waiter holds no one up", () =>
    Effect.gen(function*() {
      const { calls, store } = counted()
      const budget = yield* Budget.make({ limits, pollEvery: "1 second" }).pipe(
        Effect.provideService(Budget.BudgetStore, store)
      )
      const first = yield* budget.reserve("tenant:acme", usd("0.60"))
      const before = calls.reserve
      const waiters: Array<Fiber.RuntimeFiber<Budget.Reservation, unknown>> = []
      for (let i = 0; i < 10; i++) {
        waiters.push(yield* Effect.fork(budget.reserve("tenant:acme", usd("0.50"), { maxWait: "1 hour" })))
        yield* TestClock.adjust("0 millis")
      }
      yield* TestClock.adjust("10 seconds")
      // Each waiter's first try, then the head alone: once at once and once a second. Every waiter asking each
      // second would be 110.
      assert.isAtMost(calls.reserve - before, 10 + 12, "store calls while 10 reservations wait 10 s")
      assert.isTrue(waiters.every((waiter) => waiter.unsafePoll() === null), "all still waiting")
      // The second in line gives up; the head gets in when the first settles, then the third.
      yield* Fiber.interrupt(waiters[1]!)
      yield* budget.settle(first, usd("0.40"))
      yield* TestClock.adjust("1 millis")
      const head = yield* Fiber.join(waiters[0]!)
      yield* budget.settle(head, usd("0.10"))
      yield* TestClock.adjust("1 millis")
      const third = waiters[2]!.unsafePoll()
      assert.isTrue(third !== null && Exit.isSuccess(third), "the third in line got in when the head settled")
      const tenant = total(yield* budget.status("tenant:acme"), "tenant:acme")
      assert.deepStrictEqual([tenant.spent, tenant.reserved], [usd("0.50"), usd("0.50")])
      for (const waiter of waiters.slice(3)) assert.isNull(waiter.unsafePoll())
    }).pipe(Effect.scoped))

  it.effect("a reclaim wakes a waiting reservation: refused at once when the dead owner's charge leaves no room", () =>
    Effect.gen(function*() {
      const { store } = counted()
      yield* deadReservation(store, "0.60", "2 seconds")
      const budget = yield* Budget.make({ limits, pollEvery: "1 hour", reclaimEvery: "1 second" }).pipe(
        Effect.provideService(Budget.BudgetStore, store)
      )
      // 0.50 waits: only the dead owner's reservation is in its way. Reclaimed at 3 s, that 0.60 is charged in full
      // (the provider may have billed it), and 0.50 can no longer fit: the waiter hears of it then, not an hour later.
      const waiting = yield* Effect.fork(
        Effect.flip(budget.reserve("tenant:acme", usd("0.50"), { maxWait: "2 hours" }))
      )
      yield* TestClock.adjust("2 seconds")
      assert.isNull(waiting.unsafePoll(), "still waiting at 2 s")
      yield* TestClock.adjust("1 second")
      const exit = waiting.unsafePoll()
      assert.isTrue(exit !== null && Exit.isSuccess(exit), "refused at 3 s")
      const refusal = yield* Fiber.join(waiting)
      assert.isTrue(refusal._tag === "BudgetExceeded" && refusal.spent === "0.6" && refusal.reserved === "0")
    }).pipe(Effect.scoped))

  it.effect("a reservation waiting on another process's reservation gets in at its next poll after that settles", () =>
    Effect.gen(function*() {
      const { store } = counted()
      const [here, there] = yield* Effect.all([
        Budget.make({ limits, pollEvery: "1 second" }),
        Budget.make({ limits, pollEvery: "1 second" })
      ]).pipe(Effect.provideService(Budget.BudgetStore, store))
      const theirs = yield* there.reserve("tenant:acme", usd("0.60"))
      const waiting = yield* Effect.fork(here.reserve("tenant:acme", usd("0.50"), { maxWait: "1 hour" }))
      yield* TestClock.adjust("10 seconds")
      // The other process's settle does not wake this one's waiters: they find the room when they next ask.
      yield* there.settle(theirs, usd("0.30"))
      yield* TestClock.adjust("1 second")
      const exit = waiting.unsafePoll()
      assert.isTrue(exit !== null && Exit.isSuccess(exit), "in within a poll of the settle")
    }).pipe(Effect.scoped))

  it.effect("a store failing while a reservation waits ends the wait with the store's typed error", () =>
    Effect.gen(function*() {
      const memory = Budget.makeMemoryStore()
      let down = false
      const store = Budget.BudgetStore.of({
        ...memory,
        reserve: (request) =>
          down
            ? Effect.fail(new Budget.BudgetStoreError({ operation: "reserve", reason: "connection reset" }))
            : memory.reserve(request)
      })
      const budget = yield* Budget.make({ limits, pollEvery: "1 second" }).pipe(
        Effect.provideService(Budget.BudgetStore, store)
      )
      yield* budget.reserve("tenant:acme", usd("0.60"))
      const waiting = yield* Effect.fork(budget.reserve("tenant:acme", usd("0.50"), { maxWait: "1 hour" }))
      yield* TestClock.adjust("2 seconds")
      down = true
      yield* TestClock.adjust("1 second")
      const exit = yield* Fiber.await(waiting)
      assert.isTrue(
        Exit.isFailure(exit) && exit.cause._tag === "Fail",
        `a typed failure, not a defect: ${String(exit)}`
      )
      const error = yield* Effect.flip(Fiber.join(waiting))
      assert.strictEqual(error.message, "Budget store failed to reserve: connection reset")
    }).pipe(Effect.scoped))

  it.effect("maintenance outlives a failing store: a warning names what failed, and the next tick does its work", () => {
    const warnings: Array<string> = []
    const logger = Logger.make(({ logLevel, message }) => {
      if (logLevel._tag === "Warning") warnings.push(String(Array.isArray(message) ? message[0] : message))
    })
    return Effect.gen(function*() {
      const { memory, store } = counted()
      yield* deadReservation(store, "0.30", "2 seconds")
      // The reclaim at start works; the periodic ones at 1 and 2 s fail, the one at 3 s works. The first renewal (2 s) fails.
      let reclaims = 0
      let renewals = 0
      let settles = 0
      const failing = Budget.BudgetStore.of({
        ...store,
        reclaim: Effect.suspend(() =>
          ++reclaims === 2 || reclaims === 3
            ? Effect.fail(new Budget.BudgetStoreError({ operation: "reclaim", reason: "connection reset" }))
            : memory.reclaim
        ),
        renew: (owner, lease) =>
          ++renewals === 1
            ? Effect.fail(new Budget.BudgetStoreError({ operation: "renew", reason: "connection reset" }))
            : store.renew(owner, lease),
        settle: (id, amount, estimated) =>
          ++settles <= 2
            ? Effect.fail(new Budget.BudgetStoreError({ operation: "settle", reason: "connection reset" }))
            : memory.settle(id, amount, estimated)
      })
      const budget = yield* Budget.make({
        limits,
        lease: "3 seconds",
        renewEvery: "1 second",
        reclaimEvery: "1 second"
      })
        .pipe(Effect.provideService(Budget.BudgetStore, failing))
      // Nothing held at the first tick: nothing to renew.
      yield* TestClock.adjust("1500 millis")
      assert.strictEqual(renewals, 0, "no renewal while nothing is held")
      const held = yield* budget.reserve("tenant:acme", usd("0.20"))
      yield* TestClock.adjust("2500 millis")
      const tenant = total(yield* budget.status("tenant:acme"), "tenant:acme")
      assert.deepStrictEqual(
        [tenant.spent, tenant.reserved],
        [usd("0.30"), usd("0.20")],
        "reclaimed at 3 s; ours renewed"
      )
      assert.includeMembers(warnings, [
        "Budget: reclaiming expired reservations failed",
        "Budget: renewing leases failed"
      ])
      // A settle that fails twice is retried with the renewals until it lands.
      assert.strictEqual((yield* Effect.flip(budget.settle(held, usd("0.05"))))._tag, "BudgetStoreError")
      yield* TestClock.adjust("3 seconds")
      const settled = total(yield* budget.status("tenant:acme"), "tenant:acme")
      assert.deepStrictEqual([settled.spent, settled.reserved], [usd("0.35"), 0n])
    }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)), Effect.scoped)
  })

  it.effect("a negative extension is refused naming the operation; Budget.reserve reserves in the budget in context", () =>
    Effect.gen(function*() {
      const reservation = yield* Budget.reserve("tenant:acme", usd("0.25"))
      assert.strictEqual(reservation.amount, usd("0.25"))
      const budget = yield* Budget.Budget
      const error = yield* Effect.flip(budget.extend(reservation, usd("-0.01")))
      assert.strictEqual(error.message, "Budget store failed to extend a reservation: negative amount -0.01")
      assert.strictEqual(total(yield* Budget.status("tenant:acme"), "tenant:acme").reserved, usd("0.25"))
    }).pipe(Effect.provide(Budget.layerMemory({ limits }))))
})

// gpt-4o-mini: $0.15 input, $0.60 output per 1M tokens.
const model = "gpt-4o-mini"
const price = Effect.runSync(Pricing.make({ table: TestPrices.table })).prices.get(model)!
const answer = TestKit.response({ model, usage: { inputTokens: 10, outputTokens: 30 } })
const answerCost = Pricing.costOf(price, answer.usage)

const request = (content: string, scope = "tenant:acme/run:1"): LlmRequest.Input => ({
  model,
  messages: [{ role: "user", content }],
  maxOutputTokens: 40,
  scope
})

const worstCase = (content: string) =>
  Effect.map(
    Tokenizer.bytesUpperBound.input({ messages: [{ role: "user", content }] }),
    (input) => Pricing.worstCase(price, input, 40)
  )

const withBudget = (scripted: TestKit.Scripted, options: Budget.Options) =>
  Layer.provideMerge(Llm.layer(), Layer.mergeAll(scripted.layer, TestPrices.layer(), Budget.layerMemory(options)))

describe("Llm with a Budget", () => {
  it.effect("fails fast with BudgetExceeded, sending nothing, when the worst case does not fit", () =>
    Effect.gen(function*() {
      const scripted = TestKit.scripted([answer])
      const error = yield* Effect.flip(
        Llm.generate(request("hi")).pipe(
          Effect.provide(withBudget(scripted, { limits: [{ scope: "tenant:acme", limit: "0.00001" }] }))
        )
      )
      assert.isTrue(error._tag === "BudgetExceeded" && error.scope === "tenant:acme" && error.requested !== "0")
      assert.isTrue(error._tag === "BudgetExceeded" && error.model === model)
      assert.match(error.message, /^Budget tenant:acme \(total\) would be exceeded: limit \$0\.00001/)
      assert.strictEqual(scripted.requests.length, 0)
    }))

  it.effect("charges the actual usage at the model's price and releases the rest", () => {
    const scripted = TestKit.scripted([new RateLimited({}), answer])
    return Effect.gen(function*() {
      yield* Llm.generate(request("hi"))
      const status = yield* Budget.status("tenant:acme/run:1")
      for (const scope of ["global", "tenant:acme", "tenant:acme/run:1"]) {
        assert.deepStrictEqual([total(status, scope).spent, total(status, scope).reserved], [answerCost, 0n], scope)
      }
      assert.strictEqual(scripted.requests.length, 2)
    }).pipe(
      Effect.provide(withBudget(scripted, {})),
      RetryPolicy.withPolicy(RetryPolicy.make({ jitter: "none", base: 0 }))
    )
  })

  it.effect("releases the reservation when nothing was billed", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Llm.generate(request("hi")))
      assert.strictEqual(error._tag, "InvalidRequest")
      const status = total(yield* Budget.status(), "global")
      assert.deepStrictEqual([status.spent, status.reserved], [0n, 0n])
    }).pipe(
      Effect.provide(withBudget(TestKit.scripted([new InvalidRequest({ reason: "bad", status: 400 })]), {}))
    ))

  it.effect("an attempt that timed out after sending is charged at its estimate", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(TestKit.runWithTestClock(Llm.generate(request("slow"))))
      assert.isTrue(error._tag === "Timeout" && error.level === "attempt")
      const status = total(yield* Budget.status(), "global")
      assert.deepStrictEqual([status.spent, status.reserved], [yield* worstCase("slow"), 0n])
    }).pipe(
      Effect.provide(withBudget(TestKit.scripted([TestKit.hang]), {})),
      RetryPolicy.withPolicy(RetryPolicy.make({ maxAttempts: 1, attemptTimeout: "1 second" }))
    ))

  it.effect("a retry after an attempt that may have been billed first extends the reservation, or stops", () => {
    const scripted = TestKit.scripted([TestKit.hang, answer])
    return Effect.gen(function*() {
      const worst = yield* worstCase("slow")
      // Room for one and a half worst cases: the timed-out attempt takes one, a retry cannot be covered.
      const layer = withBudget(scripted, { limits: [{ scope: "tenant:acme", limit: Money.format((worst * 3n) / 2n) }] })
      const error = yield* Effect.flip(
        TestKit.runWithTestClock(Llm.generate(request("slow"))).pipe(Effect.provide(layer))
      )
      assert.strictEqual(error._tag, "BudgetExceeded")
      assert.strictEqual(scripted.requests.length, 1) // the retry was not sent
    }).pipe(RetryPolicy.withPolicy(RetryPolicy.make({ attemptTimeout: "1 second", jitter: "none", base: 0 })))
  })

  it.effect("an interrupted call leaks no reservation", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(Llm.generate(request("hang")))
      yield* TestClock.adjust("10 millis")
      assert.isAbove(Number(total(yield* Budget.status(), "global").reserved), 0)
      yield* Fiber.interrupt(fiber)
      const status = total(yield* Budget.status(), "global")
      // It may have been billed: charged conservatively at its estimate, never left reserved.
      assert.deepStrictEqual([status.spent, status.reserved], [yield* worstCase("hang"), 0n])
    }).pipe(Effect.provide(withBudget(TestKit.scripted([TestKit.hang]), {}))))

  it.effect("a lease shorter than a round: calls whose reservation was reclaimed end in BudgetUnavailable, the rest complete", () => {
    // "slow" calls: the first attempt hangs until its 3 s timeout (it may have been billed), so the
    // retry must extend a reservation whose 1 s lease ran out (no renewals) and was reclaimed.
    const attempts = new Map<string, number>()
    const scripted = TestKit.scripted([], {
      otherwise: (request) => {
        const content = String(request.messages[0]!.content)
        const attempt = (attempts.get(content) ?? 0) + 1
        attempts.set(content, attempt)
        return content.startsWith("slow") && attempt === 1 ? Effect.never : Effect.succeed(answer)
      }
    })
    const items = Array.from({ length: 20 }, (_, i) => `${i % 4 === 0 ? "slow" : "fast"} ${i}`)
    return Effect.gen(function*() {
      const exits = yield* TestKit.runWithTestClock(
        Effect.forEach(items, (item) => Effect.exit(Llm.generate(request(item))), { concurrency: "unbounded" })
      )
      const outcomes = exits.map((exit) =>
        Exit.isSuccess(exit)
          ? "ok"
          : Exit.isFailure(exit) && exit.cause._tag === "Fail"
          ? exit.cause.error._tag
          : "defect"
      )
      assert.deepStrictEqual(outcomes, items.map((item) => item.startsWith("slow") ? "BudgetUnavailable" : "ok"))
      const unavailable = exits.find((exit) => Exit.isFailure(exit))!
      assert.isTrue(
        Exit.isFailure(unavailable) && unavailable.cause._tag === "Fail" &&
          unavailable.cause.error._tag === "BudgetUnavailable" && /reclaimed/.test(unavailable.cause.error.reason)
      )
      // The retries were not sent; each reclaimed reservation was charged at its full amount.
      for (const item of items.filter((item) => item.startsWith("slow"))) assert.strictEqual(attempts.get(item), 1)
      const global = total(yield* Budget.status(), "global")
      const slowWorst = yield* Effect.forEach(items.filter((item) => item.startsWith("slow")), worstCase)
      assert.deepStrictEqual([global.spent, global.reserved], [answerCost * 15n + Money.sum(slowWorst), 0n])
    }).pipe(
      Effect.provide(
        withBudget(scripted, { lease: "1 second", renewEvery: "1 hour", reclaimEvery: "500 millis" })
      ),
      RetryPolicy.withPolicy(RetryPolicy.make({ attemptTimeout: "3 seconds", jitter: "none", base: 0 }))
    )
  })

  it.effect("an unknown model is PricingUnknown before anything is sent", () =>
    Effect.gen(function*() {
      const scripted = TestKit.scripted([answer])
      const error = yield* Effect.flip(
        Llm.generate({ ...request("hi"), model: "mystery-1" }).pipe(Effect.provide(withBudget(scripted, {})))
      )
      assert.strictEqual(error._tag, "PricingUnknown")
      assert.strictEqual(scripted.requests.length, 0)
    }))

  it.live(
    "10,000 concurrent calls with a budget of a third of their cost: overshoot exactly 0",
    () =>
      Effect.gen(function*() {
        const calls = 10_000
        const limit = (answerCost * BigInt(calls)) / 3n
        const scripted = TestKit.scripted([], {
          otherwise: () => Effect.zipRight(Effect.yieldNow(), Effect.succeed(answer))
        })
        const layer = withBudget(scripted, { limits: [{ scope: "tenant:acme", limit: Money.format(limit) }] })
        yield* Effect.gen(function*() {
          const worst = yield* worstCase("Score listing #0000")
          assert.isAbove(Number(worst), Number(answerCost)) // the estimate covers the answer
          let done = false
          let busySamples = 0 // samples taken while reservations were held
          let peak = 0n
          const sampler = Effect.gen(function*() {
            while (!done) {
              const s = total(yield* Budget.status("tenant:acme"), "tenant:acme")
              if (s.spent + s.reserved > peak) peak = s.spent + s.reserved
              if (s.reserved > 0n) busySamples++
              yield* Effect.yieldNow()
            }
          })
          const samplerFiber = yield* Effect.fork(sampler)
          const results = yield* Effect.forEach(
            Array.from({ length: calls }, (_, i) => i),
            (i) => Effect.either(Llm.generate(request(`Score listing #${String(i).padStart(4, "0")}`))),
            { concurrency: 200 }
          )
          done = true
          yield* Fiber.join(samplerFiber)
          const ok = results.filter(Either.isRight).length
          const refused = results.filter((r) => Either.isLeft(r) && r.left._tag === "BudgetExceeded").length
          assert.strictEqual(ok + refused, calls)
          const final = total(yield* Budget.status("tenant:acme"), "tenant:acme")
          const overshoot = final.spent > limit ? final.spent - limit : 0n
          assert.strictEqual(overshoot, 0n)
          assert.isAtMost(Number(peak), Number(limit))
          assert.isAbove(busySamples, 50)
          assert.strictEqual(final.reserved, 0n)
          assert.strictEqual(final.spent, answerCost * BigInt(ok)) // exact
          assert.strictEqual(scripted.requests.length, ok) // refused calls sent nothing
          // The budget was used, not refused wholesale: the remaining headroom is under one worst case.
          assert.isBelow(Number(limit - final.spent), Number(worst) + Number(answerCost) * 200)
        }).pipe(Effect.provide(layer))
      }),
    { timeout: 60_000 }
  )
})

describe("Llm cost in the call record", () => {
  it.effect("with Pricing alone, the record carries the exact cost and nothing is reserved", () => {
    const log = CallLog.memory()
    const scripted = TestKit.scripted([answer])
    return Effect.gen(function*() {
      yield* Llm.generate(request("hi"))
      assert.strictEqual(log.records[0]?.costUsd, Money.format(answerCost))
      assert.notStrictEqual(log.records[0]?.estimated, true)
    }).pipe(
      Effect.provide(Llm.layer().pipe(Layer.provide(Layer.mergeAll(scripted.layer, TestPrices.layer(), log.layer))))
    )
  })

  it.effect("a model priced by the configured fallback is marked in the record", () => {
    const log = CallLog.memory()
    const scripted = TestKit.scripted([answer])
    return Effect.gen(function*() {
      yield* Llm.generate({ ...request("hi"), model: "acme-7b" })
      // 10 input tokens at $1 and 30 output tokens at $2 per 1M.
      assert.deepStrictEqual([log.records[0]?.costUsd, log.records[0]?.priceFallback], ["0.00007", true])
    }).pipe(Effect.provide(
      Llm.layer().pipe(
        Layer.provide(Layer.mergeAll(scripted.layer, Pricing.layer({ fallback: { input: 1, output: 2 } }), log.layer))
      )
    ))
  })

  it.effect("with a Budget, the record's cost is what the budget charged, marked estimated when guessed", () => {
    const log = CallLog.memory()
    const scripted = TestKit.scripted([TestKit.hang, answer])
    return Effect.gen(function*() {
      yield* TestKit.runWithTestClock(Llm.generate(request("slow")))
      const charged = total(yield* Budget.status(), "global").spent
      assert.strictEqual(charged, answerCost + (yield* worstCase("slow")))
      assert.strictEqual(log.records[0]?.costUsd, Money.format(charged))
      assert.strictEqual(log.records[0]?.estimated, true)
    }).pipe(
      Effect.provide(Layer.provideMerge(
        Llm.layer(),
        Layer.mergeAll(scripted.layer, TestPrices.layer(), Budget.layerMemory(), log.layer)
      )),
      RetryPolicy.withPolicy(RetryPolicy.make({ attemptTimeout: "1 second", jitter: "none", base: 0 }))
    )
  })
  it.effect("a redo under the same call keys adopts what a dead process left open: one reservation, both attempts charged", () => {
    const store = Budget.makeMemoryStore()
    const log = CallLog.memory()
    const scripted = TestKit.scripted([answer, answer])
    const lost = usd("0.01")
    return Effect.gen(function*() {
      // A process that reserved for item 3's first call under its key, then died mid-call.
      const dead = yield* Budget.make({ owner: "dead" }).pipe(Effect.provideService(Budget.BudgetStore, store))
      const left = yield* dead.reserve("tenant:acme/run:1", lost, { key: "run:7/item:3/0" })
      assert.strictEqual(total(yield* Budget.status(), "global").reserved, lost)
      // The item redone here: its first call adopts the open reservation, its second has nothing to adopt.
      yield* Effect.zipRight(Llm.generate(request("hi")), Llm.generate(request("again"))).pipe(
        Budget.withCallKeys("run:7/item:3")
      )
      const global = total(yield* Budget.status(), "global")
      assert.deepStrictEqual([global.spent, global.reserved], [answerCost + lost + answerCost, 0n])
      assert.deepStrictEqual(
        log.records.map((record) => [record.costUsd, record.estimated === true]),
        [[Money.format(answerCost + lost), true], [Money.format(answerCost), false]]
      )
      // The dead process's own close finds nothing open: the lost attempt is not charged twice.
      const late = yield* Effect.flip(dead.settle(left, usd("0.001")))
      assert.strictEqual(late._tag, "BudgetStoreError")
      assert.strictEqual(total(yield* Budget.status(), "global").spent, answerCost + lost + answerCost)
    }).pipe(
      Effect.provide(Layer.provideMerge(
        Llm.layer(),
        Layer.mergeAll(
          scripted.layer,
          TestPrices.layer(),
          Budget.layer().pipe(Layer.provide(Layer.succeed(Budget.BudgetStore, store))),
          log.layer
        )
      )),
      Effect.scoped
    )
  })
})
