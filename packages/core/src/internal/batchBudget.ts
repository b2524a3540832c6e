/**
 * A chunk's budget reservation, held in the `BudgetStore` directly under ids and an owner derived
 * from the run (`keel-batch:<run>`), so that a restarted process adopts it: it renews the run's
 * leases and settles or releases the chunk's reservation by id, however many processes came before.
 * The lease is long (a batch's whole window and more) and renewed at every poll, so a batch's
 * reservation is never reclaimed as dead while the batch can still answer.
 */
import * as Effect from "effect/Effect"
import * as Budget from "../Budget.js"
import type { BudgetExceeded } from "../LlmError.js"
import type * as Money from "../Money.js"

export interface Ledger {
  readonly store: Budget.BudgetStore.Service
  readonly limits: ReadonlyArray<Budget.Limit>
  /** Lease of a batch reservation, in milliseconds. */
  readonly lease: number
}

export const ownerOf = (runId: string): string => `keel-batch:${runId}`
export const reservationId = (runId: string, chunkId: string): string => `keel-batch:${runId}:${chunkId}`

const periodOf = (window: Budget.Window, now: number): string =>
  window === "total" ? "total" : new Date(now).toISOString().slice(0, window === "day" ? 10 : 7)

/** The counters a reservation in `scope` charges now, sorted by key (as `Budget` builds them). */
export const countersOf = (
  limits: ReadonlyArray<Budget.Limit>,
  scope: string,
  now: number
): ReadonlyArray<Budget.Counter> => {
  const counters: Array<Budget.Counter> = []
  for (const path of Budget.chain(scope)) {
    const scoped = limits.filter((limit) => limit.scope === path)
    const total = scoped.find((limit) => limit.window === "total")
    const windows: Array<{ readonly window: Budget.Window; readonly limit: Money.Money | undefined }> = [
      { window: "total", limit: total?.limit },
      ...scoped.filter((limit) => limit.window !== "total")
    ]
    for (const { limit, window } of windows) {
      const period = periodOf(window, now)
      counters.push({ key: `${path}|${window}|${period}`, scope: path, window, period, limit })
    }
  }
  return counters.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
}

/**
 * Reserves `amount` for a chunk, or adopts the reservation when an earlier try already wrote it (an
 * activity that died after the store committed): the open reservation's lease is renewed instead.
 */
export const reserve = (
  ledger: Ledger,
  options: { readonly runId: string; readonly chunkId: string; readonly scope: string; readonly amount: Money.Money },
  now: number
): Effect.Effect<void, BudgetExceeded | Budget.BudgetStoreError> => {
  const request: Budget.ReserveRequest = {
    id: reservationId(options.runId, options.chunkId),
    owner: ownerOf(options.runId),
    amount: options.amount,
    counters: countersOf(ledger.limits, options.scope, now),
    lease: ledger.lease
  }
  return Effect.flatMap(
    ledger.store.extend({ ...request, amount: 0n }),
    (open) => open ? Effect.void : Effect.asVoid(ledger.store.reserve(request))
  )
}

/** Renews the leases of every open reservation of the run. */
export const renew = (ledger: Ledger, runId: string): Effect.Effect<number, Budget.BudgetStoreError> =>
  ledger.store.renew(ownerOf(runId), ledger.lease)

/**
 * Charges the chunk's billed cost and closes its reservation (releases it when nothing was billed).
 * Closing an already closed reservation charges nothing: a settle that ran before a crash is not
 * repeated.
 */
export const close = (
  ledger: Ledger,
  runId: string,
  chunkId: string,
  cost: Money.Money
): Effect.Effect<void, Budget.BudgetStoreError> => {
  const id = reservationId(runId, chunkId)
  return cost === 0n ? Effect.asVoid(ledger.store.release(id)) : Effect.asVoid(ledger.store.settle(id, cost, false))
}
