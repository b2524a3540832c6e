/**
 * A V8 `.cpuprofile` (from `node --cpu-prof`) summarised: self time by where the code lives — a keel
 * module (packages/core/src/Llm.ts), a dependency (node_modules/effect), Node's own code, garbage
 * collection — and the top functions, as shares of the profile's samples.
 */
import * as Fs from "node:fs"

interface Node {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
}
interface Profile {
  readonly nodes: ReadonlyArray<Node>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

export interface Share {
  readonly name: string
  readonly share: number
}
export interface Summary {
  readonly samples: number
  readonly byArea: ReadonlyArray<Share>
  readonly byFunction: ReadonlyArray<Share>
}

/** Where a URL's code lives. */
export const area = (url: string, functionName: string): string => {
  if (functionName === "(garbage collector)") return "garbage collection"
  if (functionName === "(program)" || functionName === "(idle)") return "(program, idle)"
  if (url === "") return "native / V8"
  const keel = /\/packages\/([a-z]+)\/src\/(.+?)\.ts/.exec(url)
  if (keel) return `keel ${keel[1]}/${keel[2]}`
  const dep = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)
  if (dep) {
    const name = dep[1]!
    // effect's modules by file, the rest by package
    const effect = /node_modules\/effect\/(?:dist\/esm|src)\/(?:internal\/)?(.+?)\.(?:js|ts)/.exec(url)
    return name === "effect" && effect ? `effect ${effect[1]}` : name
  }
  if (url.startsWith("node:")) return `node ${url.slice(5).split("/")[0]}`
  if (url.includes("/bench/")) return "bench harness"
  return "other"
}

export const summarise = (path: string, top = 15): Summary => {
  const profile = JSON.parse(Fs.readFileSync(path, "utf8")) as Profile
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const areas = new Map<string, number>()
  const functions = new Map<string, number>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const node = byId.get(id)
    if (node === undefined) return
    const dt = profile.timeDeltas[i] ?? 0
    const { functionName, lineNumber, url } = node.callFrame
    // idle time, and the inspector session's own call that started the profiler (the frame it sampled from)
    if (functionName === "(idle)" || (functionName === "dispatch" && url === "")) return
    total += dt
    const where = area(url, functionName)
    areas.set(where, (areas.get(where) ?? 0) + dt)
    const fn = `${functionName || "(anonymous)"} (${where}${url === "" ? "" : `:${lineNumber + 1}`})`
    functions.set(fn, (functions.get(fn) ?? 0) + dt)
  })
  const shares = (m: Map<string, number>) =>
    [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, t]) => ({ name, share: t / total }))
  return { samples: profile.samples.length, byArea: shares(areas), byFunction: shares(functions) }
}
