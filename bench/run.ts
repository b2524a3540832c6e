/**
 * `npm run bench`: runs the side-by-side benchmarks one after another, each in its own processes
 * (overhead, the cost of each production stage, saturation and outage, budget race, scale, batch),
 * writes each one's raw results to bench/results/<name>.json (batch: its markdown to bench/results/batch.md), the run's own record
 * (steps, times, the load average sampled every 5 s) to bench/results/run.json, SVG charts to
 * bench/results/*.svg, and rewrites the generated part of BENCHMARKS.md (between the
 * `<!-- bench:begin -->` and `<!-- bench:end -->` markers; the sections outside them are earlier,
 * hand-run figures and are kept as they are).
 *
 *   npm run bench                       # everything
 *   npm run bench -- --only overhead,load
 *   npm run bench -- --render           # rewrite BENCHMARKS.md from the JSON already there
 *   npm run bench -- --skip-batch       # without bench/batch.ts (3–6 minutes here; its last output is then kept)
 *   npm run bench -- --quick            # short rounds, to try the pipeline (figures not meaningful)
 */
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Render from "./lib/render.js"
import * as Results from "./lib/results.js"

const dir = "bench/results"

export interface Step {
  readonly name: string
  readonly script: string
  readonly args: ReadonlyArray<string>
  /** where its results go: JSON written by the script, or its stdout (markdown) */
  readonly output: "json" | "stdout"
  /** run only when named in --only, or with --with-<name> */
  readonly optIn?: boolean
}

const quick = process.argv.includes("--quick")

export const steps: ReadonlyArray<Step> = [
  {
    name: "overhead",
    script: "bench/overhead.ts",
    args: quick ? ["--calls", "60", "--rounds", "2"] : ["--calls", "1000", "--rounds", "5"],
    output: "json"
  },
  {
    name: "stages",
    script: "bench/stages.ts",
    args: quick ? ["--calls", "2000", "--rounds", "2"] : ["--calls", "20000", "--rounds", "3"],
    output: "json"
  },
  {
    name: "load",
    script: "bench/load.ts",
    args: quick
      ? ["--limit", "3000", "--calls", "300", "--bound", "20"]
      : ["--limit", "6000", "--calls", "2000", "--bound", "45"],
    output: "json"
  },
  {
    name: "budget-race",
    script: "bench/budget-race.ts",
    args: quick ? ["--calls", "600", "--bound", "60"] : ["--calls", "10000", "--bound", "90"],
    output: "json"
  },
  { name: "scale", script: "bench/scale.ts", args: ["--count", quick ? "500" : "3000"], output: "json" },
  // 3 to 6 minutes on this machine: --skip-batch leaves it out (its last output is then carried)
  { name: "batch", script: "bench/batch.ts", args: [], output: "stdout" }
]

export interface RunRecord {
  readonly command: string
  readonly startedAt: string
  readonly seconds: number
  readonly machine: Results.Machine
  readonly commit: string
  readonly steps: ReadonlyArray<
    {
      readonly name: string
      readonly seconds: number
      readonly exitCode: number | null
      readonly load: readonly [number, number]
    }
  >
  /** [seconds since start, 1-minute load average] every 5 s */
  readonly loadSamples: ReadonlyArray<readonly [number, number]>
}

const runStep = (step: Step) =>
  new Promise<number | null>((resolve) => {
    const log = Fs.openSync(Path.join(dir, `${step.name}.log`), "w")
    const out = step.output === "stdout" ? Fs.openSync(Path.join(dir, `${step.name}.md`), "w") : log
    const args = step.output === "json" ? [...step.args, "--json", Path.join(dir, `${step.name}.json`)] : step.args
    const child = spawn(process.execPath, ["--conditions=@keel/source", "--import", "tsx", step.script, ...args], {
      stdio: ["ignore", out, log]
    })
    child.once("exit", (code) => {
      Fs.closeSync(log)
      if (out !== log) Fs.closeSync(out)
      resolve(code)
    })
  })

const main = async () => {
  Fs.mkdirSync(dir, { recursive: true })
  if (!process.argv.includes("--render")) {
    const onlyAt = process.argv.indexOf("--only")
    const only = onlyAt >= 0 ? process.argv[onlyAt + 1]!.split(",") : undefined
    const chosen = steps.filter((s) =>
      only !== undefined
        ? only.includes(s.name)
        : s.optIn === true
        ? process.argv.includes(`--with-${s.name}`)
        : !process.argv.includes(`--skip-${s.name}`)
    )
    const startedAt = new Date()
    const t0 = performance.now()
    const loadSamples: Array<readonly [number, number]> = [[0, Os.loadavg()[0]!]]
    const sampler = setInterval(() => loadSamples.push([(performance.now() - t0) / 1000, Os.loadavg()[0]!]), 5000)
    const done: Array<RunRecord["steps"][number]> = []
    for (const step of chosen) {
      const s0 = performance.now()
      const load0 = Os.loadavg()[0]!
      console.error(`bench: ${step.name} …`)
      const exitCode = await runStep(step)
      const seconds = (performance.now() - s0) / 1000
      done.push({ name: step.name, seconds, exitCode, load: [load0, Os.loadavg()[0]!] })
      console.error(
        `bench: ${step.name} ${exitCode === 0 ? "done" : `FAILED (exit ${exitCode}; see ${dir}/${step.name}.log)`} in ${
          seconds.toFixed(0)
        } s, load ${load0.toFixed(1)} → ${Os.loadavg()[0]!.toFixed(1)}`
      )
    }
    clearInterval(sampler)
    loadSamples.push([(performance.now() - t0) / 1000, Os.loadavg()[0]!])
    const previous = Results.read<never>(Path.join(dir, "run.json")) as unknown as RunRecord | undefined
    const record: RunRecord = {
      command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
      startedAt: startedAt.toISOString(),
      seconds: (performance.now() - t0) / 1000,
      machine: Results.machine(),
      commit: Results.commit(),
      // a partial run keeps the record of the steps it did not run
      steps: [...(previous?.steps ?? []).filter((s) => !done.some((d) => d.name === s.name)), ...done],
      loadSamples
    }
    Fs.writeFileSync(Path.join(dir, "run.json"), JSON.stringify(record, null, 2) + "\n")
  }
  Render.write(dir, "BENCHMARKS.md")
  console.error(`bench: BENCHMARKS.md and ${dir}/ written`)
}

await main().then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
