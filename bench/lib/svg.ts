/**
 * A horizontal bar chart as a self-contained SVG string (no fonts or scripts fetched): one bar per
 * row at its median, a whisker over its range, the value written beside it, and optional vertical
 * reference lines (a floor at 1×, a target). keel's bars are drawn in a second colour.
 */

export interface Bar {
  readonly label: string
  readonly value: number
  readonly min?: number
  readonly max?: number
  /** drawn in the highlight colour */
  readonly highlight?: boolean
}

export interface Line {
  readonly at: number
  readonly label: string
  readonly color?: string
}

export interface Chart {
  readonly title: string
  readonly unit: string
  readonly bars: ReadonlyArray<Bar>
  readonly lines?: ReadonlyArray<Line>
  readonly digits?: number
  /** the axis' upper end; default the largest value or line, plus a margin */
  readonly max?: number
}

const escape = (text: string) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

/** Renders a chart 760 px wide. */
export const barChart = (chart: Chart): string => {
  const width = 760
  const labelWidth = 330
  const plotWidth = width - labelWidth - 90
  const rowHeight = 26
  const top = 40
  const height = top + chart.bars.length * rowHeight + 36 + 13 * (chart.lines ?? []).length
  const finite = (n: number | undefined) => (n !== undefined && Number.isFinite(n) ? n : 0)
  const top0 = Math.max(
    ...chart.bars.map((b) => Math.max(finite(b.value), finite(b.max))),
    ...(chart.lines ?? []).map((l) => l.at)
  )
  const axisMax = chart.max ?? (top0 > 0 ? top0 * 1.08 : 1)
  const x = (v: number) => labelWidth + Math.max(0, Math.min(1, v / axisMax)) * plotWidth
  const digits = chart.digits ?? 0
  const parts: Array<string> = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="10" y="22" font-size="14" font-weight="bold">${escape(chart.title)}</text>`
  ]
  chart.bars.forEach((bar, i) => {
    const y = top + i * rowHeight
    const label = bar.label.length > 52 ? `${bar.label.slice(0, 51)}…` : bar.label
    parts.push(
      `<text x="${labelWidth - 8}" y="${y + 15}" text-anchor="end">${escape(label)}</text>`,
      `<rect x="${labelWidth}" y="${y + 4}" width="${
        Math.max(0, x(finite(bar.value)) - labelWidth).toFixed(1)
      }" height="${rowHeight - 10}" fill="${bar.highlight ? "#1f77b4" : "#b0b7c3"}"/>`
    )
    if (bar.min !== undefined && bar.max !== undefined && Number.isFinite(bar.min) && Number.isFinite(bar.max)) {
      const mid = y + rowHeight / 2 - 1
      parts.push(
        `<line x1="${x(bar.min).toFixed(1)}" x2="${
          x(bar.max).toFixed(1)
        }" y1="${mid}" y2="${mid}" stroke="#222" stroke-width="1.2"/>`,
        `<line x1="${x(bar.min).toFixed(1)}" x2="${x(bar.min).toFixed(1)}" y1="${mid - 4}" y2="${
          mid + 4
        }" stroke="#222"/>`,
        `<line x1="${x(bar.max).toFixed(1)}" x2="${x(bar.max).toFixed(1)}" y1="${mid - 4}" y2="${
          mid + 4
        }" stroke="#222"/>`
      )
    }
    const shown = Number.isFinite(bar.value) ? `${bar.value.toFixed(digits)}${chart.unit}` : "n/a"
    parts.push(
      `<text x="${(Math.max(x(finite(bar.value)), x(finite(bar.max))) + 6).toFixed(1)}" y="${y + 15}">${
        escape(shown)
      }</text>`
    )
  })
  const bottom = top + chart.bars.length * rowHeight
  parts.push(`<line x1="${labelWidth}" x2="${labelWidth}" y1="${top}" y2="${bottom}" stroke="#444"/>`)
  ;(chart.lines ?? []).forEach((line, i) => {
    const lx = x(line.at).toFixed(1)
    const color = line.color ?? "#d62728"
    parts.push(
      `<line x1="${lx}" x2="${lx}" y1="${top - 4}" y2="${
        bottom + 6 + 13 * i
      }" stroke="${color}" stroke-dasharray="4 3"/>`,
      `<text x="${lx}" dx="3" y="${bottom + 16 + 13 * i}" fill="${color}">${escape(line.label)}</text>`
    )
  })
  parts.push(
    `<text x="10" y="${
      height - 8
    }" fill="#666">bar: median; whisker: range over rounds (where there are rounds)</text>`,
    `</svg>`
  )
  return parts.join("\n") + "\n"
}
