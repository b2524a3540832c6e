/**
 * Scale: a `keel demo --count N` run (the job-scoring task over N generated listings, the whole
 * pipeline: router, retry, breaker, prices, a SQLite ledger, the JSON-lines call log, results and
 * errors files) at concurrency 64, against `keel simulate` (zero latency, no faults) in another
 * process, or with `--simulator in-process` against the simulator inside the keel process (the
 * demo's default: realistic latency and a light fault mix). Reported: items/s over the run (wall time
 * from the start of the process to its exit, startup included, and CPU of the keel process), its peak
 * resident memory (VmHWM, read from /proc while it runs), and its resident memory at each of the
 * run's progress lines (every 5 s), to show whether memory grows with the items done.
 *
 * `--entry sources` (the default) runs keel from its sources (`node --import tsx`, as `npm run demo`
 * does); `--entry built` builds the packages (`tsc -b tsconfig.build.json`) and runs the `keel`
 * binary a user installs (`packages/cli/bin/keel.js`, plain node). The simulator always runs from
 * sources.
 *
 * `--command run` runs `keel run --task JobScoring --input FILE` instead, over the same N listings
 * written to a JSON-lines file first (`Listings.lines`, seed 1): the input streamed from disk.
 *
 *   npx tsx --conditions=@keel/source bench/scale.ts [--count 100000] [--entry sources|built]
 *     [--simulator separate|in-process] [--command demo|run] [--json FILE]
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { execFileSync, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Listings from "../packages/cli/src/Listings.js"
import * as Results from "./lib/results.js"

const sources = Path.resolve("packages/cli/src/bin.ts")
const built = Path.resolve("packages/cli/bin/keel.js")
const nodeArgs = ["--conditions=@keel/source", "--import", "tsx"]

/** A `--<name> <value>` flag that must be one of the choices. */
const choiceFlag = <A extends string>(name: string, choices: ReadonlyArray<A>): A => {
  const i = process.argv.indexOf(`--${name}`)
  if (i < 0) return choices[0]!
  const value = process.argv[i + 1] as A
  if (!choices.includes(value)) throw new Error(`--${name} must be one of ${choices.join(", ")}, got ${value}`)
  return value
}

/** A field of /proc/PID/status in MB; undefined once the process has exited. */
const statusMb = (pid: number, field: "VmHWM" | "VmRSS"): number | undefined => {
  try {
    const status = Fs.readFileSync(`/proc/${pid}/status`, "utf8")
    const match = new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)
    return match ? Number(match[1]) / 1024 : undefined
  } catch {
    return undefined
  }
}

const cpuSeconds = (pid: number): number | undefined => {
  try {
    const fields = Fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
    return (Number(fields[11]) + Number(fields[12])) / 100 // utime + stime, in clock ticks (100/s)
  } catch {
    return undefined
  }
}

export interface Data {
  readonly count: number
  readonly concurrency: number
  /** How keel ran: from its sources under tsx, or the built binary under plain node. */
  readonly entry?: "sources" | "built"
  /** The command: `keel demo --count N`, or `keel run` over a file of N listings. */
  readonly command?: "demo" | "run"
  /** Where the simulator ran: its own process (`keel simulate`), or inside keel's. */
  readonly simulator?: "separate" | "in-process"
  readonly exitCode: number | null
  readonly wallSeconds: number
  readonly cpuSeconds: number
  readonly itemsPerSecond: number
  readonly cpuUsPerItem: number
  readonly peakRssMb: number
  /** (items done, resident MB) at each progress line of the run. */
  readonly rssByItems?: ReadonlyArray<readonly [number, number]>
  readonly summary: string
}

/** Starts `keel simulate` on a free port; resolves to its URL and the process. */
const startSimulator = async () => {
  const simulator = spawn(process.execPath, [...nodeArgs, sources, "simulate", "--port", "0", "--seed", "1"], {
    stdio: ["ignore", "pipe", "inherit"]
  })
  const url = await new Promise<string>((resolve, reject) => {
    let text = ""
    simulator.stdout!.on("data", (chunk) => {
      text += String(chunk)
      const match = /(http:\/\/127\.0\.0\.1:\d+\/v1)/.exec(text)
      if (match) resolve(match[1]!)
    })
    simulator.once("exit", (code) => reject(new Error(`keel simulate exited with ${code}: ${text}`)))
  })
  return { simulator, url }
}

const main = async () => {
  const timer = Results.start("scale")
  const count = Results.numberFlag("count", 100_000)
  const entry = choiceFlag("entry", ["sources", "built"] as const)
  const where = choiceFlag("simulator", ["separate", "in-process"] as const)
  const command = choiceFlag("command", ["demo", "run"] as const)
  const concurrency = 64
  if (entry === "built") {
    execFileSync(process.execPath, [Path.resolve("node_modules/typescript/bin/tsc"), "-b", "tsconfig.build.json"], {
      stdio: "inherit"
    })
  }
  const out = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bench-scale-"))
  const input = Path.join(out, "listings.jsonl")
  if (command === "run") {
    const file = Fs.createWriteStream(input)
    await Effect.runPromise(
      Stream.runForEach(
        Listings.lines(count),
        (line) =>
          Effect.promise(() =>
            new Promise<void>((resolve) => file.write(`${line}\n`) ? resolve() : file.once("drain", resolve))
          )
      )
    )
    await new Promise<void>((resolve) => file.end(resolve))
  }
  const task = entry === "sources" ? "packages/cli/src/JobScoring.ts" : "packages/cli/dist/JobScoring.js"
  const separate = where === "separate" ? await startSimulator() : undefined
  const { OPENAI_API_KEY: _key, ...env } = process.env
  const started = performance.now()
  const run = spawn(
    process.execPath,
    [
      ...(entry === "sources" ? [...nodeArgs, sources] : [built]),
      ...(command === "demo" ? ["demo", "--count", String(count)] : ["run", "--task", task, "--input", input]),
      "--concurrency",
      String(concurrency),
      ...(separate === undefined ? [] : ["--base-url", separate.url]),
      "--out",
      Path.join(out, "run")
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...env, NO_COLOR: "1", ...(separate === undefined ? {} : { OPENAI_API_KEY: "sk-bench" }) }
    }
  )
  let peak = 0
  let cpu = 0
  const sample = setInterval(() => {
    peak = Math.max(peak, statusMb(run.pid!, "VmHWM") ?? 0)
    cpu = Math.max(cpu, cpuSeconds(run.pid!) ?? 0)
  }, 100)
  const rssByItems: Array<readonly [number, number]> = []
  let progress = ""
  run.stderr!.on("data", (chunk) => {
    process.stderr.write(chunk)
    progress += String(chunk)
    const lines = progress.split("\n")
    progress = lines.pop()!
    for (const line of lines) {
      const done = /^([\d,]+)\/[\d,]+ done/.exec(line)
      const rss = statusMb(run.pid!, "VmRSS")
      if (done !== null && rss !== undefined) rssByItems.push([Number(done[1]!.replace(/,/g, "")), rss])
    }
  })
  let output = ""
  run.stdout!.on("data", (chunk) => {
    output += String(chunk)
    if (output.length > 200_000) output = output.slice(-100_000)
  })
  const exitCode = await new Promise<number | null>((resolve) => run.once("exit", resolve))
  clearInterval(sample)
  const wallSeconds = (performance.now() - started) / 1000
  separate?.simulator.kill()
  Fs.rmSync(out, { recursive: true, force: true })
  // the summary is the last lines the run printed (progress lines end in carriage returns)
  const summary = output.split(/\r|\n/).filter((line) => line.trim() !== "").slice(-25).join("\n")
  const data: Data = {
    count,
    concurrency,
    entry,
    command,
    simulator: where,
    exitCode,
    wallSeconds,
    cpuSeconds: cpu,
    itemsPerSecond: count / wallSeconds,
    cpuUsPerItem: (cpu * 1e6) / count,
    peakRssMb: peak,
    rssByItems,
    summary
  }
  timer.finish(data)
  console.log(JSON.stringify(data, null, 1))
}

await main().then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
