/**
 * The second step of a chat request: whether it is served, and how. In order: a scheduled outage
 * answers its status; past the serving capacity (requests per second) it is overloaded; a model's
 * requests/min or tokens/min limit answers 429; otherwise a fault may be drawn. Time is what the
 * caller passes in (the Effect clock), so windows and outages move with `TestClock`. Arrivals are
 * counted per 100 ms since the start.
 */
import { type Decision as LimitDecision, ModelLimiter, type Snapshot } from "./limits.js"
import type { Rng } from "./random.js"

export const FAULTS = [
  "rate_limit",
  "quota",
  "500",
  "502",
  "503",
  "hang",
  "reset",
  "malformed",
  "invalid_output",
  "truncated",
  "refusal",
  "cut"
] as const

export type Fault = typeof FAULTS[number]
export type FaultRates = Partial<Record<Fault, number>>

export interface Limits {
  readonly requestsPerMinute?: number
  readonly tokensPerMinute?: number
}

/** A window, relative to the start, in which every chat request is answered `status`. */
export interface Outage {
  readonly atMs: number
  readonly durationMs: number
  readonly status: number
}

export interface DecideOptions {
  readonly startMs: number
  readonly limits: Limits
  readonly limitsByModel: Readonly<Record<string, Limits>>
  readonly faults: FaultRates
  readonly faultsByModel: Readonly<Record<string, FaultRates>>
  readonly outages: ReadonlyArray<Outage>
  /** requests per second served before answering 503; undefined: no limit */
  readonly capacityPerSecond: number | undefined
}

export type Decision =
  | { readonly _tag: "Outage"; readonly status: number }
  | { readonly _tag: "Overloaded" }
  | { readonly _tag: "Limited"; readonly decision: Extract<LimitDecision, { ok: false }> }
  | {
    readonly _tag: "Admitted"
    readonly snapshot: Snapshot
    readonly limiter: ModelLimiter
    readonly fault: Fault | undefined
  }

/** Arrival slots kept: one hour of 100 ms slots; older ones are dropped. */
const ARRIVAL_SLOTS = 36_000
const SLOT_MS = 100

export class Decider {
  private readonly limiters = new Map<string, ModelLimiter>()
  private readonly faultTables = new Map<string, ReadonlyArray<readonly [Fault, number]>>()
  /** a token bucket holding a tenth of a second of capacity (at least 1), refilled continuously */
  private capacityLevel: number
  private capacityAt: number
  private readonly capacityBurst: number
  private arrivals: Array<number> = []
  private arrivalsFirstSlot = 0
  rateLimited = 0
  outage = 0
  overloaded = 0
  readonly faultCounts: Record<Fault, number>

  constructor(private readonly options: DecideOptions) {
    this.faultCounts = Object.fromEntries(FAULTS.map((f) => [f, 0])) as Record<Fault, number>
    this.capacityBurst = Math.max(1, (options.capacityPerSecond ?? 0) / 10)
    this.capacityLevel = this.capacityBurst
    this.capacityAt = options.startMs
  }

  /** Counts a request received at `now` in its 100 ms slot. */
  arrive(now: number): void {
    const slot = Math.max(0, Math.floor((now - this.options.startMs) / SLOT_MS))
    const index = slot - this.arrivalsFirstSlot
    if (index < 0) return
    while (this.arrivals.length <= index) this.arrivals.push(0)
    this.arrivals[index]!++
    if (this.arrivals.length > ARRIVAL_SLOTS) {
      const drop = this.arrivals.length - ARRIVAL_SLOTS
      this.arrivals = this.arrivals.slice(drop)
      this.arrivalsFirstSlot += drop
    }
  }

  /** Requests received per 100 ms; `startMs` is the first slot's start, in ms since the simulator started. */
  arrivalCounts(): { readonly startMs: number; readonly counts: ReadonlyArray<number> } {
    return { startMs: this.arrivalsFirstSlot * SLOT_MS, counts: [...this.arrivals] }
  }

  decide(model: string, now: number, tokens: number, rng: Rng): Decision {
    const elapsed = now - this.options.startMs
    for (const outage of this.options.outages) {
      if (elapsed >= outage.atMs && elapsed < outage.atMs + outage.durationMs) {
        this.outage++
        return { _tag: "Outage", status: outage.status }
      }
    }
    const capacity = this.options.capacityPerSecond
    if (capacity !== undefined) {
      this.capacityLevel = Math.min(
        this.capacityBurst,
        this.capacityLevel + (Math.max(0, now - this.capacityAt) * capacity) / 1000
      )
      this.capacityAt = Math.max(this.capacityAt, now)
      if (this.capacityLevel < 1) {
        this.overloaded++
        return { _tag: "Overloaded" }
      }
      this.capacityLevel -= 1
    }
    const limiter = this.limiter(model, now)
    const admitted = limiter.admit(now, tokens)
    if (!admitted.ok) {
      this.rateLimited++
      return { _tag: "Limited", decision: admitted }
    }
    const fault = this.drawFault(model, rng)
    if (fault !== undefined) this.faultCounts[fault]++
    return { _tag: "Admitted", snapshot: admitted.snapshot, limiter, fault }
  }

  private limiter(model: string, now: number): ModelLimiter {
    let limiter = this.limiters.get(model)
    if (limiter === undefined) {
      const limits = this.options.limitsByModel[model] ?? this.options.limits
      limiter = new ModelLimiter(limits.requestsPerMinute, limits.tokensPerMinute, now)
      this.limiters.set(model, limiter)
    }
    return limiter
  }

  private faultTable(model: string): ReadonlyArray<readonly [Fault, number]> {
    let table = this.faultTables.get(model)
    if (table === undefined) {
      const rates = this.options.faultsByModel[model] ?? this.options.faults
      let cumulative = 0
      const entries: Array<readonly [Fault, number]> = []
      for (const fault of FAULTS) {
        const rate = rates[fault] ?? 0
        if (rate > 0) {
          cumulative += rate
          entries.push([fault, cumulative])
        }
      }
      table = entries
      this.faultTables.set(model, table)
    }
    return table
  }

  private drawFault(model: string, rng: Rng): Fault | undefined {
    const table = this.faultTable(model)
    if (table.length === 0) return undefined
    const u = rng.next()
    for (const [fault, upTo] of table) if (u < upTo) return fault
    return undefined
  }
}
