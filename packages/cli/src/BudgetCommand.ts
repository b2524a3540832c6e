/**
 * `keel budget show|reset`: the SQLite ledger of an output folder. `show` prints spent, reserved and
 * overrun per scope (with the run's `--budget-usd` limit, from run.json); `reset` empties the ledger
 * (counters and reservations), refusing while reservations are open unless `--force`.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Budget from "@keel/core/Budget"
import * as BudgetSql from "@keel/core/Budget/Sql"
import * as Money from "@keel/core/Money"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Fs from "node:fs"
import * as Flags from "./Flags.js"
import * as Live from "./Live.js"
import * as RunCommand from "./RunCommand.js"

const ledgerOf = (out: string) =>
  Fs.existsSync(Live.ledgerFile(out))
    ? Effect.void
    : Effect.fail(
      new Flags.UsageError({
        message: `--out ${out}: no ledger there (${
          Live.ledgerFile(out)
        }): run keel demo or keel run with this --out first`
      })
    )

const limitsOf = (out: string): ReadonlyArray<typeof Budget.Limit.Encoded> => {
  try {
    const recorded = JSON.parse(Fs.readFileSync(RunCommand.recordFile(out), "utf8")) as RunCommand.Recorded
    return recorded.settings.budgetUsd === null
      ? []
      : [{ scope: recorded.settings.scope, limit: String(recorded.settings.budgetUsd) }]
  } catch {
    return []
  }
}

const usd = (money: Money.Money) => `$${Money.format(money)}`

const show = Command.make("show", {
  out: Flags.out,
  scope: Options.text("scope").pipe(
    Options.optional,
    Options.withDescription("one scope and its ancestors (default all)")
  )
}, (options) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const scopes = options.scope._tag === "Some"
      ? [options.scope.value]
      : (yield* sql<{ scope: string }>`SELECT DISTINCT scope FROM keel_budget_counters ORDER BY scope`).map((r) =>
        r.scope
      )
    const seen = new Set<string>()
    const lines: Array<string> = []
    for (const scope of scopes) {
      for (const status of yield* Budget.status(scope)) {
        const key = `${status.scope}|${status.window}|${status.period}`
        if (seen.has(key)) continue
        seen.add(key)
        lines.push(
          `${status.scope.padEnd(24)} ${`${status.window} ${status.period}`.padEnd(16)} spent ${
            usd(status.spent)
          }, reserved ${usd(status.reserved)}, overrun ${usd(status.overrun)}, ${
            status.limit === undefined ? "no limit" : `limit ${usd(status.limit)}`
          }`
        )
      }
    }
    yield* Console.log(lines.length === 0 ? "the ledger is empty" : lines.join("\n"))
  }).pipe(
    Effect.provide(Layer.unwrapEffect(Effect.sync(() =>
      Live.budget(options.out, limitsOf(options.out)).pipe(
        Layer.provideMerge(BudgetSql.layerSqliteClient({ filename: Live.ledgerFile(options.out) }))
      )
    ))),
    (run) => Effect.zipRight(ledgerOf(options.out), run)
  )).pipe(Command.withDescription("Show what each scope has spent and holds reserved in an output folder's ledger"))

const reset = Command.make("reset", {
  out: Flags.out,
  force: Options.boolean("force").pipe(Options.withDescription("reset even while reservations are open"))
}, (options) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const [open] = yield* sql<{ n: number }>`SELECT COUNT(*) AS n FROM keel_budget_reservations WHERE status = 'open'`
    if ((open?.n ?? 0) > 0 && !options.force) {
      return yield* new Flags.UsageError({
        message: `${
          open!.n
        } reservations are open (a run may be going, or died less than a lease ago): wait, or pass --force`
      })
    }
    yield* sql.withTransaction(
      Effect.all([sql`DELETE FROM keel_budget_counters`, sql`DELETE FROM keel_budget_reservations`])
    )
    yield* Console.log(`reset the ledger ${Live.ledgerFile(options.out)}: every scope now has spent $0`)
  }).pipe(
    Effect.provide(BudgetSql.layerSqliteClient({ filename: Live.ledgerFile(options.out) })),
    (run) => Effect.zipRight(ledgerOf(options.out), run)
  )).pipe(
    Command.withDescription("Empty an output folder's ledger (spent and reservations)")
  )

export const command = Command.make("budget").pipe(
  Command.withDescription("Show or reset the budget ledger of an output folder"),
  Command.withSubcommands([show, reset])
)
