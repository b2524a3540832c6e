/**
 * What a call log says: `Report.Accumulator` folds `CallRecord`s (as read from calls.jsonl, or as
 * they are written) into calls, tokens and cost by model, the routing split and what routing (and
 * batch pricing) saved, retries, failures by error tag and latency percentiles; `text` prints it as
 * terminal tables and `html` as a self-contained page with SVG charts (no network).
 */
import * as CallRecord from "@keel/core/CallRecord"
import * as Money from "@keel/core/Money"
import * as Pricing from "@keel/core/Pricing"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Fs from "node:fs"
import * as Readline from "node:readline"

interface ModelTotals {
  calls: number
  errors: number
  inputTokens: number
  cachedInputTokens: number
  outputTokens: number
  cost: Money.Money
  /** Usage and cost of the calls made in batch mode. */
  batch: { inputTokens: number; cachedInputTokens: number; outputTokens: number; cost: Money.Money }
  tiers: Map<string, number>
}

/** Prices to compare against: the model every call would have gone to without routing. */
export interface Comparison {
  readonly lookup: (model: string) => Pricing.ModelPrice | undefined
  /** The complex tier's model; default the model most complex-tier calls went to. */
  readonly complexModel?: string | undefined
}

export class Accumulator {
  calls = 0
  ok = 0
  retries = 0
  retriedCalls = 0
  repairs = 0
  cost: Money.Money = 0n
  costUnknown = 0
  firstMs = Number.POSITIVE_INFINITY
  lastMs = 0
  readonly models = new Map<string, ModelTotals>()
  readonly errorsByTag = new Map<string, number>()
  readonly attempts = new Map<number, number>()
  readonly latencies: Array<number> = []
  /** (end time, model index, cost in USD) per call, for the spend chart. */
  readonly spend: Array<readonly [number, number, number]> = []
  private readonly modelIndex = new Map<string, number>()

  add(record: CallRecord.CallRecord): void {
    this.calls++
    if (record.outcome === "ok") this.ok++
    else {
      const tag = record.errorTag ?? "Unknown"
      this.errorsByTag.set(tag, (this.errorsByTag.get(tag) ?? 0) + 1)
    }
    const retries = Math.max(0, record.attempts - 1)
    this.retries += retries
    if (retries > 0) this.retriedCalls++
    this.repairs += record.repairs ?? 0
    this.attempts.set(record.attempts, (this.attempts.get(record.attempts) ?? 0) + 1)
    this.latencies.push(record.latencyMs)
    const start = Date.parse(record.ts)
    const end = start + record.latencyMs
    this.firstMs = Math.min(this.firstMs, start)
    this.lastMs = Math.max(this.lastMs, end)
    let model = this.models.get(record.model)
    if (model === undefined) {
      model = {
        calls: 0,
        errors: 0,
        inputTokens: 0,
        cachedInputTokens: 0,
        outputTokens: 0,
        cost: 0n,
        batch: { inputTokens: 0, cachedInputTokens: 0, outputTokens: 0, cost: 0n },
        tiers: new Map()
      }
      this.models.set(record.model, model)
      this.modelIndex.set(record.model, this.modelIndex.size)
    }
    model.calls++
    if (record.outcome !== "ok") model.errors++
    model.inputTokens += record.inputTokens
    model.cachedInputTokens += record.cachedInputTokens
    model.outputTokens += record.outputTokens
    const tier = record.tier ?? "none"
    model.tiers.set(tier, (model.tiers.get(tier) ?? 0) + 1)
    if (record.costUsd === undefined) {
      this.costUnknown++
    } else {
      const cost = Money.unsafeParse(record.costUsd)
      model.cost += cost
      this.cost += cost
      if (record.mode === "batch") {
        model.batch.inputTokens += record.inputTokens
        model.batch.cachedInputTokens += record.cachedInputTokens
        model.batch.outputTokens += record.outputTokens
        model.batch.cost += cost
      }
      this.spend.push([end, this.modelIndex.get(record.model)!, Number(cost) / 1e12])
    }
  }

  /** Calls by tier, over every model. */
  tiers(): Map<string, number> {
    const tiers = new Map<string, number>()
    for (const model of this.models.values()) {
      for (const [tier, calls] of model.tiers) tiers.set(tier, (tiers.get(tier) ?? 0) + calls)
    }
    return tiers
  }

  percentile(p: number): number {
    if (this.latencies.length === 0) return 0
    const sorted = Float64Array.from(this.latencies).sort()
    return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
  }

  /** What every call would have cost on the complex model, when its price is known. */
  allComplex(comparison: Comparison): { readonly model: string; readonly cost: Money.Money } | undefined {
    const model = comparison.complexModel ?? [...this.models.entries()]
      .sort(([, a], [, b]) => (b.tiers.get("complex") ?? 0) - (a.tiers.get("complex") ?? 0))
      .find(([, totals]) => (totals.tiers.get("complex") ?? 0) > 0)?.[0]
    const price = model === undefined ? undefined : comparison.lookup(model)
    if (model === undefined || price === undefined) return undefined
    let cost = 0n
    for (const totals of this.models.values()) {
      cost += Pricing.costOf(price, {
        inputTokens: totals.inputTokens,
        cachedInputTokens: totals.cachedInputTokens,
        outputTokens: totals.outputTokens,
        reasoningTokens: 0
      })
    }
    return { model, cost }
  }

  /** What the batch-mode calls would have cost at sync prices, minus what they cost. */
  batchSaving(comparison: Comparison): Money.Money {
    let saving = 0n
    for (const [name, totals] of this.models) {
      const price = comparison.lookup(name)
      if (totals.batch.cost === 0n || price === undefined) continue
      saving += Pricing.costOf(price, { ...totals.batch, reasoningTokens: 0 }, "sync") - totals.batch.cost
    }
    return saving
  }

  toJSON(comparison: Comparison) {
    const allComplex = this.allComplex(comparison)
    return {
      calls: this.calls,
      ok: this.ok,
      failed: this.calls - this.ok,
      retries: this.retries,
      retriedCalls: this.retriedCalls,
      repairs: this.repairs,
      costUsd: Money.format(this.cost),
      callsWithoutCost: this.costUnknown,
      byModel: Object.fromEntries(
        [...this.models].map(([model, t]) => [model, {
          calls: t.calls,
          failed: t.errors,
          inputTokens: t.inputTokens,
          cachedInputTokens: t.cachedInputTokens,
          outputTokens: t.outputTokens,
          costUsd: Money.format(t.cost),
          tiers: Object.fromEntries(t.tiers)
        }])
      ),
      byTier: Object.fromEntries(this.tiers()),
      errorsByTag: Object.fromEntries(this.errorsByTag),
      latencyMs: {
        p50: Math.round(this.percentile(50)),
        p95: Math.round(this.percentile(95)),
        p99: Math.round(this.percentile(99))
      },
      ...(allComplex === undefined ? {} : {
        allComplex: { model: allComplex.model, costUsd: Money.format(allComplex.cost) },
        routingSavingUsd: Money.format(allComplex.cost - this.cost)
      }),
      batchSavingUsd: Money.format(this.batchSaving(comparison))
    }
  }
}

/** calls.jsonl is missing or unreadable. */
export class CallLogReadError extends Schema.TaggedError<CallLogReadError>("@keel/cli/Report/CallLogReadError")(
  "CallLogReadError",
  { path: Schema.String, reason: Schema.String }
) {
  override get message() {
    return `${this.path}: ${this.reason}`
  }
}

const decodeRecord = Schema.decodeUnknownEither(Schema.parseJson(CallRecord.CallRecord))

/** Reads a call log line by line into an accumulator; lines that are not call records are counted and skipped. */
export const read = (
  path: string
): Effect.Effect<{ readonly stats: Accumulator; readonly skipped: number }, CallLogReadError> =>
  Effect.suspend(() => {
    if (!Fs.existsSync(path)) {
      return Effect.fail(new CallLogReadError({ path, reason: "no such file: give the calls.jsonl of a run" }))
    }
    const stats = new Accumulator()
    let skipped = 0
    return Stream.fromAsyncIterable(
      Readline.createInterface({ input: Fs.createReadStream(path), crlfDelay: Infinity }),
      (error) => new CallLogReadError({ path, reason: error instanceof Error ? error.message : String(error) })
    ).pipe(
      Stream.runForEach((line) =>
        Effect.sync(() => {
          if (line.trim() === "") return
          const decoded = decodeRecord(line)
          if (decoded._tag === "Right") stats.add(decoded.right)
          else skipped++
        })
      ),
      Effect.as({ stats, skipped })
    )
  })

const usd = (money: Money.Money) => `$${Number(Money.format(money)).toFixed(4)}`
const int = (n: number) => n.toLocaleString("en-US")
const ms = (n: number) => (n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${Math.round(n)} ms`)

const table = (head: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ").trimEnd()
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n")
}

/** The report as terminal text: calls by model, routing, retries, failures, latency. */
export const text = (stats: Accumulator, comparison: Comparison): string => {
  const models = [...stats.models].sort(([, a], [, b]) => b.calls - a.calls)
  const byModel = table(
    ["model", "calls", "failed", "input tokens", "output tokens", "cost"],
    [
      ...models.map(([model, t]) => [
        model,
        int(t.calls),
        int(t.errors),
        int(t.inputTokens),
        int(t.outputTokens),
        usd(t.cost)
      ]),
      [
        "total",
        int(stats.calls),
        int(stats.calls - stats.ok),
        int(models.reduce((n, [, t]) => n + t.inputTokens, 0)),
        int(models.reduce((n, [, t]) => n + t.outputTokens, 0)),
        usd(stats.cost)
      ]
    ]
  )
  const tiers = [...stats.tiers()].map(([tier, calls]) => `${tier} ${int(calls)}`).join(", ")
  const allComplex = stats.allComplex(comparison)
  const routing = allComplex === undefined
    ? `routing    ${tiers}`
    : `routing    ${tiers}; all on ${allComplex.model} would have cost ${usd(allComplex.cost)}: routing saved ${
      usd(allComplex.cost - stats.cost)
    }${
      allComplex.cost > 0n
        ? ` (${(Number(allComplex.cost - stats.cost) * 100 / Number(allComplex.cost)).toFixed(0)}%)`
        : ""
    }`
  const batchSaving = stats.batchSaving(comparison)
  const errors = [...stats.errorsByTag].sort(([, a], [, b]) => b - a).map(([tag, n]) => `${tag} ${int(n)}`)
  return [
    byModel,
    "",
    routing,
    ...(batchSaving > 0n ? [`batch      batch prices saved ${usd(batchSaving)} against sync`] : []),
    `retries    ${int(stats.retries)} retries over ${int(stats.retriedCalls)} calls; ${
      int(stats.repairs)
    } repair re-asks`,
    `failures   ${errors.length === 0 ? "none" : errors.join(", ")}`,
    `latency    p50 ${ms(stats.percentile(50))}, p95 ${ms(stats.percentile(95))}, p99 ${ms(stats.percentile(99))}`,
    ...(stats.costUnknown > 0 ? [`unpriced   ${int(stats.costUnknown)} calls had no known price`] : [])
  ].join("\n")
}

// ---------------------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------------------

const palette = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"]
const escape = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

const W = 560
const H = 260
const PAD = { left: 64, right: 16, top: 16, bottom: 40 }

const axes = (yMax: number, yLabel: (v: number) => string, xLabels: ReadonlyArray<readonly [number, string]>) => {
  const plotH = H - PAD.top - PAD.bottom
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const y = PAD.top + plotH * (1 - f)
    return `<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${y}" y2="${y}" stroke="#e5e7eb"/>` +
      `<text x="${PAD.left - 6}" y="${y + 4}" text-anchor="end">${escape(yLabel(yMax * f))}</text>`
  })
  const xs = xLabels.map(([x, label]) =>
    `<text x="${x}" y="${H - PAD.bottom + 16}" text-anchor="middle">${escape(label)}</text>`
  )
  return ticks.join("") + xs.join("") +
    `<line x1="${PAD.left}" x2="${PAD.left}" y1="${PAD.top}" y2="${H - PAD.bottom}" stroke="#9ca3af"/>` +
    `<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${H - PAD.bottom}" y2="${H - PAD.bottom}" stroke="#9ca3af"/>`
}

/** A round axis maximum with four equal steps (whole steps for counts). */
const niceMax = (max: number, whole: boolean) => {
  if (!(max > 0)) return whole ? 4 : 1
  const raw = max / 4
  const magnitude = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((candidate) => candidate >= raw)!
  return (whole ? Math.max(1, Math.ceil(step)) : step) * 4
}

const svg = (body: string) => `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img">${body}</svg>`

const bars = (
  values: ReadonlyArray<readonly [string, number]>,
  colour: (i: number) => string,
  format: (v: number) => string
) => {
  if (values.length === 0) return `<p class="empty">none</p>`
  const max = niceMax(Math.max(...values.map(([, v]) => v)), true)
  const plotW = W - PAD.left - PAD.right
  const plotH = H - PAD.top - PAD.bottom
  const slot = plotW / values.length
  const width = Math.min(96, Math.max(2, slot * 0.7))
  const rects = values.map(([label, v], i) => {
    const h = (v / max) * plotH
    const x = PAD.left + slot * i + (slot - width) / 2
    return `<rect x="${x}" y="${PAD.top + plotH - h}" width="${width}" height="${h}" fill="${colour(i)}">` +
      `<title>${escape(label)}: ${escape(format(v))}</title></rect>` +
      (values.length <= 12 && v > 0
        ? `<text x="${x + width / 2}" y="${PAD.top + plotH - h - 4}" text-anchor="middle">${escape(format(v))}</text>`
        : "")
  })
  const every = Math.ceil(values.length / 8)
  const labels = values.flatMap(([label], i) =>
    i % every === 0 ? [[PAD.left + slot * i + slot / 2, label] as const] : []
  )
  return svg(axes(max, format, labels) + rects.join(""))
}

const spendChart = (stats: Accumulator) => {
  const names = [...stats.models.keys()]
  if (stats.spend.length === 0) return `<p class="empty">no priced calls</p>`
  const t0 = stats.firstMs
  const span = Math.max(1, stats.lastMs - t0)
  const points = [...stats.spend].sort((a, b) => a[0] - b[0])
  const totals = names.map(() => 0)
  const series: Array<Array<readonly [number, number]>> = names.map(() => [[0, 0]])
  for (const [end, model, cost] of points) {
    totals[model]! += cost
    series[model]!.push([end - t0, totals[model]!])
  }
  const max = niceMax(Math.max(...totals), false)
  const plotW = W - PAD.left - PAD.right
  const plotH = H - PAD.top - PAD.bottom
  const step = Math.max(1, Math.floor(points.length / 400))
  const lines = series.map((s, i) => {
    const kept = s.filter((_, j) => j % step === 0 || j === s.length - 1)
    const d = kept.map(([t, v]) =>
      `${(PAD.left + (t / span) * plotW).toFixed(1)},${(PAD.top + plotH * (1 - v / max)).toFixed(1)}`
    ).join(" ")
    return `<polyline fill="none" stroke="${palette[i % palette.length]}" stroke-width="2" points="${d}"/>`
  })
  const seconds = (t: number) => (span >= 120_000 ? `${(t / 60_000).toFixed(1)} min` : `${(t / 1000).toFixed(0)} s`)
  const xLabels = [0, 0.25, 0.5, 0.75, 1].map((f) => [PAD.left + plotW * f, seconds(span * f)] as const)
  const legend = names.map((name, i) =>
    `<span class="key"><i style="background:${palette[i % palette.length]}"></i>${escape(name)} $${
      totals[i]!.toFixed(4)
    }</span>`
  ).join("")
  const money = (v: number) => (v === 0 ? "$0" : `$${v.toFixed(max < 0.04 ? 4 : 2)}`)
  return svg(axes(max, money, xLabels) + lines.join("")) +
    `<div class="legend">${legend}</div>`
}

const latencyHistogram = (stats: Accumulator) => {
  if (stats.latencies.length === 0) return `<p class="empty">no calls</p>`
  const cap = stats.percentile(99) * 1.2 || 1
  const binCount = 24
  const width = cap / binCount
  const bins = Array.from({ length: binCount }, () => 0)
  for (const latency of stats.latencies) bins[Math.min(binCount - 1, Math.floor(latency / width))]!++
  return bars(
    bins.map((n, i) => [ms(i * width), n] as const),
    () => palette[0]!,
    (v) => int(Math.round(v))
  ) +
    `<p class="note">p50 ${ms(stats.percentile(50))} · p95 ${ms(stats.percentile(95))} · p99 ${
      ms(stats.percentile(99))
    } (the last bar holds everything slower)</p>`
}

/** The report as one HTML page with inline SVG charts and no external resources. */
export const html = (stats: Accumulator, comparison: Comparison, title: string): string => {
  const summary = stats.toJSON(comparison)
  const errors = [...stats.errorsByTag].sort(([, a], [, b]) => b - a)
  const attempts = [...stats.attempts].sort(([a], [b]) => a - b)
  const tiers = [...stats.tiers()]
  const models = [...stats.models].sort(([, a], [, b]) => b.calls - a.calls)
  const card = (heading: string, body: string) => `<section><h2>${escape(heading)}</h2>${body}</section>`
  const figure = (label: string, value: string) => `<div class="figure"><b>${escape(value)}</b>${escape(label)}</div>`
  const rows = models.map(([model, t]) =>
    `<tr><td>${escape(model)}</td><td>${int(t.calls)}</td><td>${int(t.errors)}</td><td>${int(t.inputTokens)}</td><td>${
      int(t.outputTokens)
    }</td><td>${usd(t.cost)}</td></tr>`
  ).join("")
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#111827;background:#f9fafb}
h1{font-size:22px;margin:0 0 4px}h2{font-size:15px;margin:0 0 8px}
.sub{color:#6b7280;margin-bottom:16px}
.figures{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:16px}
.figure{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;color:#6b7280}
.figure b{display:block;font-size:20px;color:#111827}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:16px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:14px}
svg{max-width:100%;height:auto;font-size:11px;fill:#374151}
table{border-collapse:collapse;width:100%}td,th{padding:4px 8px;border-bottom:1px solid #e5e7eb;text-align:right}
td:first-child,th:first-child{text-align:left}
.legend{display:flex;gap:12px;flex-wrap:wrap}.key i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.note,.empty{color:#6b7280;margin:4px 0 0}
</style></head><body>
<h1>${escape(title)}</h1>
<div class="sub">${int(stats.calls)} calls${
    Number.isFinite(stats.firstMs)
      ? `, ${new Date(stats.firstMs).toISOString()} to ${new Date(stats.lastMs).toISOString()}`
      : ""
  }</div>
<div class="figures">
${figure("calls", int(summary.calls))}${figure("failed", int(summary.failed))}${figure("cost", usd(stats.cost))}${
    summary.routingSavingUsd === undefined
      ? ""
      : figure("saved by routing", `$${Number(summary.routingSavingUsd).toFixed(4)}`)
  }${figure("retries", int(summary.retries))}${figure("p95 latency", ms(summary.latencyMs.p95))}
</div>
<div class="grid">
${card("Spend over time by model (cumulative)", spendChart(stats))}
${card("Latency", latencyHistogram(stats))}
${card("Errors by tag", bars(errors, () => palette[1]!, (v) => int(Math.round(v))))}
${
    card(
      "Attempts per call (retries)",
      bars(attempts.map(([a, n]) => [`${a}`, n] as const), () => palette[3]!, (v) => int(Math.round(v)))
    )
  }
${
    card(
      "Routing split (calls by tier)",
      bars(tiers, (i) => palette[(i + 4) % palette.length]!, (v) => int(Math.round(v)))
    )
  }
${
    card(
      "By model",
      `<table><tr><th>model</th><th>calls</th><th>failed</th><th>input</th><th>output</th><th>cost</th></tr>${rows}</table>`
    )
  }
</div>
</body></html>
`
}
