/**
 * Budget under a burst: 4 OS processes × 2,500 concurrent `Llm.generate` calls (core's scripted
 * model, answering after `--delay` ms) against one ledger — Postgres on 127.0.0.1, then a SQLite
 * file — with a limit of 30% of the run's cost. Reports the overshoot (spent above the limit, and
 * the peak of spent + reserved sampled during the run), the share of the limit spent at the end,
 * defects, and whether the call log (the sum of the records' `costUsd`) equals the ledger. Then a
 * second burst of 1,000 calls (4 × 250) against the exhausted budget: how many were refused and how
 * fast. During the first burst, 40 reservations of a dead owner expire 2 s after the start; every
 * worker reclaims every second, and the report lists when reclaim ran and what it took back, beside
 * a bare `setTimeout` chain at the same interval in each worker (how late the event loop itself
 * fires a timer: reclaim cannot be more punctual than that). Once a worker's timers fire on time
 * again after the start-up, it also makes 25 calls under `Effect.timeout(50 ms)`, which wait on the
 * busy ledger, and the report says how long each took to end. A fifth process that makes no burst
 * calls of its own (the caller) makes as many timed calls, 4 at a time, against the same busy ledger
 * from 6 s after go: how long a timeout takes to end for a caller whose own process is not starved.
 * With 4 bursting processes on 2 cores the caller still waits for a core (its own bare 50 ms timer
 * fires up to 100 ms late); `--burst-nice 10` lowers the bursting processes' priority, so the caller
 * gets a core when it has work while the ledger stays as busy.
 *
 * Each call reserves its worst case (input bytes as an upper bound of its tokens, and its whole
 * `maxOutputTokens`), about 2.8× what it is then charged, and waits for other calls' reservations
 * within the retry policy's deadline (10 minutes here), which the pipeline passes as `maxWait`.
 *
 * Every process runs its calls under `SlicedScheduler` (`--scheduler default`: Effect's default scheduler, under
 * which a process's event loop does not turn, and no timer fires, until its 2,500 calls have started).
 *
 *   npx tsx --conditions=@keel/source bench/budget-burst.ts [--calls 2500] [--workers 4] [--delay 20] [--only pg|sqlite]
 *     [--scheduler sliced|default] [--burst-nice 0]
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import { identity } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Readline from "node:readline"
import * as Budget from "../packages/core/src/Budget.js"
import * as BudgetSql from "../packages/core/src/Budget/Sql.js"
import * as CallLog from "../packages/core/src/CallLog.js"
import * as Llm from "../packages/core/src/Llm.js"
import * as Money from "../packages/core/src/Money.js"
import * as Pricing from "../packages/core/src/Pricing.js"
import * as RetryPolicy from "../packages/core/src/RetryPolicy.js"
import * as SlicedScheduler from "../packages/core/src/SlicedScheduler.js"
import * as TestKit from "../packages/core/src/TestKit.js"

const model = "gpt-4o-mini"
const table = { [model]: { input: "0.15", cachedInput: "0.075", output: "0.60", maxOutputTokens: 16_384 } }
const usage = { inputTokens: 10, outputTokens: 30 }
const answer = TestKit.response({ model, usage })
const maxOutputTokens = 80
const limitScope = "tenant:acme"
const answerCost = Pricing.costOf(Effect.runSync(Pricing.make({ table })).prices.get(model)!, answer.usage)
const deadOwners = 40
const deadLease = 2_000
const reclaimEvery = 1_000
const timed = 25
const timeoutMillis = 50

type Store = { readonly pg: string } | { readonly sqlite: string }

interface Job {
  readonly store: Store
  readonly tablePrefix: string
  readonly calls: number
  readonly limit: string
  readonly delayMillis: number
  readonly worker: number
  /** Calls made under `Effect.timeout(timeoutMillis)` once the burst has started up (the loop turned). */
  readonly timed: number
  /** Runs the calls under `SlicedScheduler` or Effect's default scheduler. */
  readonly scheduler: "sliced" | "default"
  /** The caller's: make the timed calls `after` ms after go instead, `concurrency` at a time. */
  readonly caller?: { readonly after: number; readonly concurrency: number }
}

/** What a worker prints when its burst is over (one JSON line). */
interface Report {
  readonly ok: number
  readonly refused: number
  readonly failed: Record<string, number>
  readonly defects: number
  readonly records: number
  readonly recordedCost: string
  /** Wall time of each refused call, ms. */
  readonly refusedMillis: ReadonlyArray<number>
  readonly okMillis: ReadonlyArray<number>
  /** Reclaim runs: start (ms since go), duration, how many it reclaimed. */
  readonly reclaims: ReadonlyArray<readonly [number, number, number]>
  /** A bare `setTimeout(…, reclaimEvery)` chain from go: when each fired (ms since go) and how late. */
  readonly probes: ReadonlyArray<readonly [number, number]>
  /** CPU time (user + system, ms) this process used from go until the probe first fired. */
  readonly cpuBeforeFirstProbe: number
  /** The timed calls that timed out: wall time of each (ms). */
  readonly timedMillis: ReadonlyArray<number>
  /** When the bare timer started beside each of those fired (ms after the call began). */
  readonly timerMillis: ReadonlyArray<number>
  /** How each timed call ended. */
  readonly timedOutcomes: Record<string, number>
  /** When the timed calls began, ms after go. */
  readonly timedFrom: number
}

const pgLayer = (maxConnections: number) =>
  PgClient.layer({ host: "127.0.0.1", port: 5432, database: "test", username: "postgres", maxConnections })

// ---------------------------------------------------------------------------------------------- worker

const worker = (job: Job) =>
  Effect.gen(function*() {
    let goAt = 0
    const reclaims: Array<readonly [number, number, number]> = []
    const options = { limits: [{ scope: limitScope, limit: job.limit }], reclaimEvery, tablePrefix: job.tablePrefix }
    // The SQL store, with its reclaim runs timed.
    const store = Layer.effect(
      Budget.BudgetStore,
      Effect.map(BudgetSql.make(options), (store) =>
        Budget.BudgetStore.of({
          ...store,
          reclaim: Effect.suspend(() => {
            const start = performance.now()
            return Effect.tap(store.reclaim, (count) => {
              if (goAt > 0) reclaims.push([Math.round(start - goAt), Math.round(performance.now() - start), count])
            })
          })
        }))
    )
    const client: Layer.Layer<SqlClient.SqlClient, unknown> = "pg" in job.store
      ? pgLayer(8)
      : BudgetSql.layerSqliteClient({ filename: job.store.sqlite })
    const budget = Budget.layer(options).pipe(Layer.provide(store), Layer.provide(client))
    const log = CallLog.memory()
    const scripted = TestKit.scripted([], { otherwise: () => Effect.delay(Effect.succeed(answer), job.delayMillis) })
    const policy = Layer.succeed(RetryPolicy.RetryPolicy, RetryPolicy.make({ deadline: "10 minutes" }))
    const llm = Llm.layer({ require: ["budget"] }).pipe(
      Layer.provide(Layer.mergeAll(scripted.layer, budget, Pricing.layer({ table }), log.layer, policy))
    )
    const context = yield* Layer.build(llm)
    const call = (i: number) =>
      Llm.generate({
        model,
        messages: [{ role: "user", content: `Score listing #${job.worker}-${String(i).padStart(5, "0")}` }],
        maxOutputTokens,
        scope: `${limitScope}/run:${job.worker}`
      })
    // The caller warms up (the first calls of a process run cold code) so that its timed calls measure the wait.
    if (job.calls === 0) {
      yield* Effect.forEach([-1, -2, -3], call, { discard: true }).pipe(Effect.provide(context))
    }
    process.stdout.write("ready\n")
    yield* Effect.async<void>((resume) => {
      Readline.createInterface({ input: process.stdin }).once("line", () => resume(Effect.void))
    })
    goAt = performance.now()
    // The event loop's own lateness under the burst: a plain timer chain, no Effect in it, at the
    // reclaim interval. Reclaim sleeps on the same loop, so this bounds how punctual it can be.
    const probes: Array<readonly [number, number]> = []
    let probing = true
    const cpuAtGo = process.cpuUsage()
    let cpuBeforeFirstProbe = 0
    const startedUp = Deferred.unsafeMake<void>(FiberId.none)
    const probe = (due: number) =>
      setTimeout(() => {
        const now = performance.now()
        if (probes.length === 0) {
          const cpu = process.cpuUsage(cpuAtGo)
          cpuBeforeFirstProbe = Math.round((cpu.user + cpu.system) / 1000)
        }
        if (now - due < 2 * timeoutMillis) Deferred.unsafeDone(startedUp, Exit.void)
        probes.push([Math.round(now - goAt), Math.round(now - due)])
        if (probing) probe(now + reclaimEvery)
      }, Math.max(0, due - performance.now()))
    probe(goAt + reclaimEvery)
    if (process.env.KEEL_BURST_PROGRESS !== undefined) {
      setInterval(() =>
        process.stderr.write(
          `worker ${job.worker}: +${
            Math.round(performance.now() - goAt)
          } ms ok ${okMillis.length} refused ${refusedMillis.length} rss ${
            Math.round(process.memoryUsage().rss / 1e6)
          } MB heap ${Math.round(process.memoryUsage().heapUsed / 1e6)} MB\n`
        ), 2_000).unref()
    }
    const okMillis: Array<number> = []
    const refusedMillis: Array<number> = []
    const failed: Record<string, number> = {}
    let defects = 0
    // A caller's timeout around calls that wait on the busy ledger (a line of waiting reservations),
    // started once the event loop fires timers on time again after the start-up (until then no timer
    // of this process fires, a timeout's included).
    const timedMillis: Array<number> = []
    const timerMillis: Array<number> = []
    const timedOutcomes: Record<string, number> = {}
    let timedFrom = Number.NaN
    const timedCalls = Effect.zipRight(
      Effect.zipRight(
        job.caller === undefined
          ? Deferred.await(startedUp)
          : Effect.suspend(() => Effect.sleep(Math.max(0, goAt + job.caller!.after - performance.now()))),
        Effect.sync(() => (timedFrom = Math.round(performance.now() - goAt)))
      ),
      Effect.forEach(
        Array.from({ length: job.timed }, (_, i) => job.calls + i),
        (i) =>
          Effect.suspend(() => {
            const start = performance.now()
            // A bare timer beside the timeout: when the loop could fire it, apart from the interruption.
            let fired = Number.NaN
            setTimeout(() => (fired = performance.now()), timeoutMillis)
            return Effect.map(Effect.exit(Effect.timeout(call(i), timeoutMillis)), (exit) => {
              const failure = Exit.isSuccess(exit) ? "ok" : Cause.failureOption(exit.cause).pipe(
                Option.match({ onNone: () => "defect", onSome: (error) => error._tag })
              )
              // The calls still waiting when their timeout fired; a call answered before it is not timed.
              if (failure === "TimeoutException") {
                timedMillis.push(Math.round(performance.now() - start))
                if (!Number.isNaN(fired)) timerMillis.push(Math.round(fired - start))
              }
              timedOutcomes[failure] = (timedOutcomes[failure] ?? 0) + 1
            })
          }),
        { concurrency: job.caller?.concurrency ?? "unbounded", discard: true }
      )
    )
    const burstCalls = Effect.forEach(
      Array.from({ length: job.calls }, (_, i) => i),
      (i) =>
        Effect.suspend(() => {
          const start = performance.now()
          return Effect.map(
            Effect.exit(call(i)),
            (exit) => {
              const took = performance.now() - start
              if (Exit.isSuccess(exit)) return okMillis.push(took)
              const failure = Cause.failureOption(exit.cause)
              if (failure._tag === "None") return defects++
              if (failure.value._tag === "BudgetExceeded") return refusedMillis.push(took)
              failed[failure.value._tag] = (failed[failure.value._tag] ?? 0) + 1
              return undefined
            }
          )
        }),
      { concurrency: "unbounded", discard: true }
    )
    yield* Effect.all([burstCalls, timedCalls], { concurrency: 2, discard: true }).pipe(
      Effect.provide(context),
      job.scheduler === "sliced" ? Effect.withScheduler(SlicedScheduler.make()) : identity
    )
    probing = false
    const report: Report = {
      ok: okMillis.length,
      refused: refusedMillis.length,
      failed,
      defects,
      records: log.records.length,
      recordedCost: Money.format(Money.sum(log.records.map((r) => Money.unsafeParse(r.costUsd ?? "0")))),
      refusedMillis: refusedMillis.map(Math.round),
      okMillis: okMillis.map(Math.round),
      reclaims,
      probes,
      cpuBeforeFirstProbe,
      timedMillis,
      timerMillis,
      timedOutcomes,
      timedFrom
    }
    process.stdout.write(`report ${JSON.stringify(report)}\n`)
  }).pipe(Effect.scoped)

// ---------------------------------------------------------------------------------------------- parent

const argument = (name: string, fallback: string) => {
  const index = process.argv.indexOf(`--${name}`)
  return index >= 0 ? process.argv[index + 1]! : fallback
}

const schedulerChoice = (): Job["scheduler"] => {
  const choice = argument("scheduler", "sliced")
  if (choice !== "sliced" && choice !== "default") {
    throw new Error(`--scheduler must be sliced or default, got ${choice}`)
  }
  return choice
}

interface Child {
  readonly process: ChildProcess.ChildProcess
  readonly ready: Promise<void>
  readonly report: Promise<Report>
}

const spawn = (job: Job): Child => {
  const child = ChildProcess.spawn(
    process.execPath,
    ["--import", "tsx", "--conditions=@keel/source", import.meta.filename, "worker", JSON.stringify(job)],
    { stdio: ["pipe", "pipe", "inherit"] }
  )
  const lines = Readline.createInterface({ input: child.stdout! })
  let readyResolve!: () => void
  const ready = new Promise<void>((resolve) => (readyResolve = resolve))
  const report = new Promise<Report>((resolve, reject) => {
    lines.on("line", (line) => {
      if (line === "ready") readyResolve()
      else if (line.startsWith("report ")) resolve(JSON.parse(line.slice(7)) as Report)
    })
    child.on("exit", (code) => reject(new Error(`worker ${job.worker} exited ${code} without a report`)))
  })
  return { process: child, ready, report }
}

const percentile = (values: ReadonlyArray<number>, p: number) => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

const counterOf = (prefix: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql.unsafe<{ spent: string; reserved: string }>(
        `SELECT CAST(spent AS TEXT) AS spent, CAST(reserved AS TEXT) AS reserved FROM ${prefix}_counters WHERE key = '${limitScope}|total|total'`
      ),
      (rows) => ({ spent: BigInt(rows[0]?.spent ?? 0), reserved: BigInt(rows[0]?.reserved ?? 0) })
    ))

const ledgerOf = (prefix: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.unsafe<{ status: string; n: string; charged: string | null }>(
      `SELECT status, CAST(count(*) AS TEXT) AS n, CAST(sum(charged) AS TEXT) AS charged FROM ${prefix}_reservations GROUP BY status`
    ))

/** Runs `calls` per worker in `workers` processes started together; samples the ledger meanwhile. */
const burst = (
  store: Store,
  prefix: string,
  calls: number,
  workers: number,
  limit: bigint,
  delayMillis: number,
  timed: number
) =>
  Effect.gen(function*() {
    const job = { store, tablePrefix: prefix, limit: Money.format(limit), delayMillis, scheduler: schedulerChoice() }
    const children = Array.from({ length: workers }, (_, worker) => spawn({ ...job, calls, worker: worker + 1, timed }))
    // --burst-nice: the bursting processes yield the cores to the caller (and to Postgres) when it has work.
    const nice = Number(argument("burst-nice", "0"))
    if (nice !== 0) { for (const child of children) Os.setPriority(child.process.pid!, nice) }
    // The caller: no burst calls, the timed calls of all the workers together, a few at a time (100 at once are a
    // burst of their own: they keep its loop busy for ~0.5 s on a fifth of the cores), once the workers' CPU-bound
    // start-up (their first 4–5 s here, when 4 processes want more than the 2 cores) is over and the ledger is still busy.
    const caller = timed > 0
      ? [
        spawn({
          ...job,
          calls: 0,
          worker: workers + 1,
          timed: timed * workers,
          caller: { after: 6_000, concurrency: 4 }
        })
      ]
      : []
    yield* Effect.promise(() => Promise.all([...children, ...caller].map((child) => child.ready)))
    return { children, caller }
  })

/** How the calls under `Effect.timeout(timeoutMillis)` of these reports ended. */
const timedLine = (where: string, reports: ReadonlyArray<Report>) => {
  const timedMillis = reports.flatMap((r) => r.timedMillis)
  const timerMillis = reports.flatMap((r) => r.timerMillis)
  const outcomes = new Map<string, number>()
  for (const r of reports) {
    for (const [outcome, n] of Object.entries(r.timedOutcomes)) outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + n)
  }
  return `- ${
    Array.from(outcomes.values()).reduce((sum, n) => sum + n, 0)
  } calls under Effect.timeout(${timeoutMillis} ms) ${where}: ${
    Array.from(outcomes, ([outcome, n]) => `${outcome} ${n}`).join(", ")
  }; the ${timedMillis.length} timed out ended after p50 ${percentile(timedMillis, 50)} ms, p99 ${
    percentile(timedMillis, 99)
  } ms, max ${percentile(timedMillis, 100)} ms; within ${2 * timeoutMillis} ms: ${
    timedMillis.filter((ms) => ms <= 2 * timeoutMillis).length
  }; a bare ${timeoutMillis} ms timer started beside each fired after p50 ${percentile(timerMillis, 50)} ms, max ${
    percentile(timerMillis, 100)
  } ms`
}

const run = (name: string, store: Store, client: Layer.Layer<SqlClient.SqlClient, unknown>) =>
  Effect.gen(function*() {
    const calls = Number(argument("calls", "2500"))
    const workers = Number(argument("workers", "4"))
    const delayMillis = Number(argument("delay", "20"))
    const prefix = `keel_burst_${process.pid}`
    const limit = (answerCost * BigInt(calls * workers) * 3n) / 10n
    const sql = yield* SqlClient.SqlClient
    const storeService = yield* BudgetSql.make({ tablePrefix: prefix })
    // The workers start together, once all are ready; the dead owner's reservations expire 2 s later.
    const { caller, children } = yield* burst(store, prefix, calls, workers, limit, delayMillis, timed)
    const chain = Budget.chain(`${limitScope}/run:dead`).map((scope) => ({
      key: `${scope}|total|total`,
      scope,
      window: "total" as const,
      period: "total",
      limit: scope === limitScope ? limit : undefined
    }))
    for (let i = 0; i < deadOwners; i++) {
      yield* storeService.reserve({
        id: `dead:${i}`,
        owner: "dead",
        amount: answerCost,
        counters: chain,
        lease: deadLease
      })
    }
    const start = performance.now()
    for (const child of [...children, ...caller]) child.process.stdin!.write("go\n")
    let done = false
    const reports = Promise.all(children.map((child) => child.report)).finally(() => (done = true))
    const callerReport = caller[0]?.report
    let peak = 0n
    while (!done) {
      const { reserved, spent } = yield* counterOf(prefix)
      if (spent + reserved > peak) peak = spent + reserved
      yield* Effect.sleep(20)
    }
    const wall = performance.now() - start
    const results = yield* Effect.promise(() => reports)
    const callerResult = yield* Effect.promise(() => callerReport!)
    for (const child of [...children, ...caller]) child.process.stdin!.end()
    const final = yield* counterOf(prefix)
    const ledger = yield* ledgerOf(prefix)
    const reclaimed = ledger.find((row) => row.status === "reclaimed")
    const open = ledger.find((row) => row.status === "open")
    const ledgerCharged = Money.sum(ledger.map((row) => BigInt(row.charged ?? 0)))
    const recorded = Money.sum([...results, callerResult].map((r) => Money.unsafeParse(r.recordedCost)))
    const deadCharged = BigInt(reclaimed?.charged ?? 0)
    const ok = results.reduce((n, r) => n + r.ok, 0)
    const refused = results.reduce((n, r) => n + r.refused, 0)
    const defects = results.reduce((n, r) => n + r.defects, 0)
    const failed = results.flatMap((r) => Object.entries(r.failed).map(([tag, n]) => `${tag} ${n}`))
    const records = results.reduce((n, r) => n + r.records, 0)
    const okMillis = results.flatMap((r) => r.okMillis)
    const refusedMillis = results.flatMap((r) => r.refusedMillis)
    const reclaims = results.flatMap((r, index) =>
      r.reclaims.map(([at, took, count]) => ({ worker: index + 1, at, took, count }))
    )

    const firstRuns = results.map((r) => r.reclaims[0]?.[0] ?? Number.NaN)
    const gaps = results.flatMap((r) => r.reclaims.slice(1).map(([at], i) => at - r.reclaims[i]![0]))
    const probeLateness = results.flatMap((r) => r.probes.map(([, late]) => late))
    // Second burst against the exhausted budget.
    const { children: second } = yield* burst(store, prefix, 1000 / workers, workers, limit, delayMillis, 0)
    for (const child of second) child.process.stdin!.write("go\n")
    const secondResults = yield* Effect.promise(() => Promise.all(second.map((child) => child.report)))
    for (const child of second) child.process.stdin!.end()
    const secondRefused = secondResults.flatMap((r) => r.refusedMillis)
    const secondOther = secondResults.reduce(
      (n, r) => n + r.ok + r.defects + Object.values(r.failed).reduce((a, b) => a + b, 0),
      0
    )
    const afterSecond = yield* counterOf(prefix)

    yield* Effect.provideService(BudgetSql.drop(prefix), SqlClient.SqlClient, sql)

    const pct = (part: bigint, whole: bigint) => `${(Number((part * 100_000n) / whole) / 1000).toFixed(2)}%`
    const lines = [
      `### ${name}: ${workers} processes × ${calls} concurrent calls, limit $${Money.format(limit)} (30% of $${
        Money.format(answerCost * BigInt(calls * workers))
      }), ${schedulerChoice()} scheduler`,
      "",
      `- wall ${(wall / 1000).toFixed(1)} s; ok ${ok}, refused (BudgetExceeded) ${refused}, other errors ${
        failed.length === 0 ? 0 : failed.join(", ")
      }, defects ${defects}; call records ${records}`,
      `- overshoot at the end $${
        Money.format(final.spent > limit ? final.spent - limit : 0n)
      }; peak spent + reserved sampled ${pct(peak, limit)} of the limit (${peak <= limit ? "never above" : "ABOVE"})`,
      `- spent at the end $${Money.format(final.spent)} = **${
        pct(final.spent, limit)
      } of the limit**; still reserved $${Money.format(final.reserved)}; open reservations ${open?.n ?? 0}`,
      `- call log $${Money.format(recorded)} + dead owner's reclaimed $${Money.format(deadCharged)} = $${
        Money.format(recorded + deadCharged)
      } vs ledger counter $${Money.format(final.spent)} and ledger rows $${Money.format(ledgerCharged)}: ${
        recorded + deadCharged === final.spent && ledgerCharged === final.spent ? "equal" : "DIFFERENT"
      }`,
      `- latency ok p50 ${percentile(okMillis, 50)} ms, p99 ${percentile(okMillis, 99)} ms; refused p50 ${
        percentile(refusedMillis, 50)
      } ms, p99 ${percentile(refusedMillis, 99)} ms`,
      `- reclaim (every ${reclaimEvery} ms per worker; ${deadOwners} dead reservations expiring at +${deadLease} ms): ${
        reclaimed?.n ?? 0
      } reclaimed; runs that took some ${
        reclaims.filter((r) => r.count > 0).map((r) =>
          `w${r.worker} at +${r.at} ms took ${r.took} ms reclaimed ${r.count}`
        ).join(", ")
      }`,
      `- reclaim runs per worker ${
        Array.from({ length: workers }, (_, w) => reclaims.filter((r) => r.worker === w + 1).length).join(" / ")
      }; first run after go at +${firstRuns.join(" / ")} ms; gaps between run starts p50 ${
        percentile(gaps, 50)
      } ms, p99 ${percentile(gaps, 99)} ms, max ${percentile(gaps, 100)} ms (${gaps.length} gaps); run took p50 ${
        percentile(reclaims.map((r) => r.took), 50)
      } ms, max ${percentile(reclaims.map((r) => r.took), 100)} ms`,
      `- a bare setTimeout chain (every ${reclaimEvery} ms) in each worker: first fired at +${
        results.map((r) => r.probes[0]?.[0] ?? Number.NaN).join(" / ")
      } ms, having used ${results.map((r) => r.cpuBeforeFirstProbe).join(" / ")} ms of CPU since go; lateness p50 ${
        percentile(probeLateness, 50)
      } ms, p99 ${percentile(probeLateness, 99)} ms, max ${
        percentile(probeLateness, 100)
      } ms (${probeLateness.length} firings)`,
      timedLine("in the bursting workers, once timers fired on time again", results),
      timedLine(`in the caller (a process making no burst calls), 4 at a time from +${callerResult.timedFrom} ms`, [
        callerResult
      ]),
      `- second burst, ${
        secondRefused.length + secondOther
      } calls against the exhausted budget: refused ${secondRefused.length}, anything else ${secondOther}; p50 ${
        percentile(secondRefused, 50)
      } ms, p99 ${percentile(secondRefused, 99)} ms, max ${percentile(secondRefused, 100)} ms; spent unchanged: ${
        afterSecond.spent === final.spent && afterSecond.reserved === 0n
      }`,
      ""
    ]
    console.log(lines.join("\n"))
  }).pipe(Effect.provide(client), Effect.scoped)

if (process.argv[2] === "worker") {
  await Effect.runPromise(worker(JSON.parse(process.argv[3]!) as Job))
  process.exit(0)
} else {
  const only = argument("only", "")
  console.log(
    `Node ${process.version}, ${Os.cpus().length} cores, load average ${
      Os.loadavg().map((n) => n.toFixed(1)).join(" ")
    }\n`
  )
  if (only !== "sqlite") await Effect.runPromise(run("Postgres (127.0.0.1)", { pg: "test" }, pgLayer(2)))
  if (only !== "pg") {
    const filename = Path.join(Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-burst-")), "budget.db")
    await Effect.runPromise(
      run("SQLite (one file, WAL)", { sqlite: filename }, BudgetSql.layerSqliteClient({ filename }))
    )
  }
  console.log(`load average after ${Os.loadavg().map((n) => n.toFixed(1)).join(" ")}`)
}
