/**
 * Scale: a `keel demo --count N` run (the job-scoring task over N generated listings, the whole
 * pipeline: router, retry, breaker, prices, a SQLite ledger, the JSON-lines call log, results and
 * errors files) against `keel simulate` (zero latency, no faults) in another process, at concurrency
 * 64. Reported: items/s over the run (wall time from the start of the process to its exit, startup
 * included, and CPU of the keel process), and its peak resident memory (VmHWM, read from /proc while
 * it runs). Both processes run from sources (`node --import tsx --conditions=@keel/source`).
 *
 *   npx tsx --conditions=@keel/source bench/scale.ts [--count 100000] [--json FILE]
 */
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Results from "./lib/results.js"

const bin = Path.resolve("packages/cli/src/bin.ts")
const nodeArgs = ["--conditions=@keel/source", "--import", "tsx"]

/** Peak resident memory (MB) of a running process, from /proc; undefined once it has exited. */
const peakRssMb = (pid: number): number | undefined => {
  try {
    const status = Fs.readFileSync(`/proc/${pid}/status`, "utf8")
    const match = /VmHWM:\s+(\d+) kB/.exec(status)
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
  readonly exitCode: number | null
  readonly wallSeconds: number
  readonly cpuSeconds: number
  readonly itemsPerSecond: number
  readonly cpuUsPerItem: number
  readonly peakRssMb: number
  readonly summary: string
}

const main = async () => {
  const timer = Results.start("scale")
  const count = Results.numberFlag("count", 100_000)
  const concurrency = 64
  const out = Fs.mkdtempSync(Path.join(Os.tmpdir(), "keel-bench-scale-"))
  const simulator = spawn(process.execPath, [...nodeArgs, bin, "simulate", "--port", "0", "--seed", "1"], {
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
  const started = performance.now()
  const run = spawn(
    process.execPath,
    [
      ...nodeArgs,
      bin,
      "demo",
      "--count",
      String(count),
      "--concurrency",
      String(concurrency),
      "--base-url",
      url,
      "--out",
      Path.join(out, "run")
    ],
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, OPENAI_API_KEY: "sk-bench", NO_COLOR: "1" } }
  )
  let peak = 0
  let cpu = 0
  const sample = setInterval(() => {
    peak = Math.max(peak, peakRssMb(run.pid!) ?? 0)
    cpu = Math.max(cpu, cpuSeconds(run.pid!) ?? 0)
  }, 100)
  let output = ""
  run.stdout!.on("data", (chunk) => {
    output += String(chunk)
    if (output.length > 200_000) output = output.slice(-100_000)
  })
  const exitCode = await new Promise<number | null>((resolve) => run.once("exit", resolve))
  clearInterval(sample)
  const wallSeconds = (performance.now() - started) / 1000
  simulator.kill()
  Fs.rmSync(out, { recursive: true, force: true })
  // the summary is the last lines the run printed (progress lines end in carriage returns)
  const summary = output.split(/\r|\n/).filter((line) => line.trim() !== "").slice(-25).join("\n")
  const data: Data = {
    count,
    concurrency,
    exitCode,
    wallSeconds,
    cpuSeconds: cpu,
    itemsPerSecond: count / wallSeconds,
    cpuUsPerItem: (cpu * 1e6) / count,
    peakRssMb: peak,
    summary
  }
  timer.finish(data)
  console.log(JSON.stringify(data, null, 1))
}

await main().then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
