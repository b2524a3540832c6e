/**
 * Machine-readable benchmark results: each benchmark writes one JSON file under bench/results/
 * (`--json <file>`), holding when, where and how it ran and its rows; `bench/run.ts` reads them all
 * and writes BENCHMARKS.md and bench-results.json from them.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"

export interface Machine {
  readonly node: string
  readonly cores: number
  readonly cpu: string
  readonly memoryGb: number
  readonly platform: string
}

export interface Result<A = unknown> {
  /** the benchmark's name, e.g. "overhead" */
  readonly bench: string
  /** the command that produced it */
  readonly command: string
  readonly startedAt: string
  readonly seconds: number
  /** 1-minute load average at the start and at the end */
  readonly load: readonly [number, number]
  readonly machine: Machine
  readonly commit: string
  readonly data: A
}

export const machine = (): Machine => ({
  node: process.version,
  cores: Os.cpus().length,
  cpu: Os.cpus()[0]?.model.trim() ?? "unknown",
  memoryGb: Math.round(Os.totalmem() / 2 ** 30),
  platform: `${Os.type()} ${Os.release()}`
})

/** The value of `--json <file>` in argv, if any. */
export const jsonPath = (argv: ReadonlyArray<string> = process.argv): string | undefined => {
  const i = argv.indexOf("--json")
  return i >= 0 ? argv[i + 1] : undefined
}

/** The value of `--<name> <value>` in argv, as a number, or the fallback. */
export const numberFlag = (name: string, fallback: number, argv: ReadonlyArray<string> = process.argv): number => {
  const i = argv.indexOf(`--${name}`)
  const value = i >= 0 ? Number(argv[i + 1]) : NaN
  return Number.isFinite(value) ? value : fallback
}

/** Starts timing a benchmark; `finish` writes its result to `--json <file>` when given and returns it. */
export const start = (bench: string) => {
  const startedAt = new Date()
  const t0 = performance.now()
  const load0 = Os.loadavg()[0]!
  return {
    finish: <A>(data: A): Result<A> => {
      const result: Result<A> = {
        bench,
        command: `npx tsx --conditions=@keel/source ${Path.relative(process.cwd(), process.argv[1] ?? "")} ${
          process.argv.slice(2).filter((a, i, all) => a !== "--json" && all[i - 1] !== "--json").join(" ")
        }`
          .trim(),
        startedAt: startedAt.toISOString(),
        seconds: (performance.now() - t0) / 1000,
        load: [load0, Os.loadavg()[0]!],
        machine: machine(),
        commit: commit(),
        data
      }
      const path = jsonPath()
      if (path !== undefined) {
        Fs.mkdirSync(Path.dirname(path), { recursive: true })
        Fs.writeFileSync(path, JSON.stringify(result, null, 2) + "\n")
      }
      return result
    }
  }
}

/** The checked-out commit (short). */
export const commit = (): string => {
  try {
    return ChildProcess.execSync("git rev-parse --short HEAD", { encoding: "utf8" }).trim()
  } catch {
    return "unknown"
  }
}

export const read = <A>(path: string): Result<A> | undefined => {
  try {
    return JSON.parse(Fs.readFileSync(path, "utf8")) as Result<A>
  } catch {
    return undefined
  }
}
