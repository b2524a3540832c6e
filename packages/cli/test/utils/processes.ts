/**
 * `keel` as real processes for the cluster tests: spawned from sources, their output kept, each one
 * still running killed by `killAll` after the file; a free port; waiting on a condition; the JSON
 * lines of a run's output folder, and the check that it holds every item once.
 */
import { assert } from "@effect/vitest"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as Listings from "../../src/Listings.js"

const bin = Path.join(import.meta.dirname, "..", "..", "src", "bin.ts")

export interface Keel {
  readonly process: ChildProcess.ChildProcess
  /** stdout and stderr as they came (the simulator says where it listens on stdout, the others write to stderr). */
  readonly output: () => string
  readonly exited: Promise<number | null>
}

const running: Array<Keel> = []

/** Starts `keel` with the given arguments, without an OpenAI key. */
export const spawnKeel = (...args: Array<string>): Keel => {
  const child = ChildProcess.spawn(process.execPath, ["--import", "tsx", "--conditions=@keel/source", bin, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, OPENAI_API_KEY: "", NO_COLOR: "1" }
  })
  let output = ""
  child.stdout.on("data", (chunk) => (output += chunk))
  child.stderr.on("data", (chunk) => (output += chunk))
  const keel = {
    process: child,
    output: () => output,
    exited: new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
  }
  running.push(keel)
  return keel
}

/** Kills every process `spawnKeel` started that still runs, and waits for them. */
export const killAll = async () => {
  for (const keel of running) keel.process.kill("SIGKILL")
  await Promise.all(running.map((keel) => keel.exited))
}

export const freePort = () =>
  new Promise<number>((resolve) => {
    const server = Net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resolve(port))
    })
  })

/** Waits until `check` holds; past `timeoutMs`, fails naming `what` and, if given, the `state` it was in. */
export const waitFor = async (
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 60_000,
  state: () => unknown = () => ""
) => {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} ${String(await state())}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** A JSON-lines file's records; none if the file is absent. */
export const jsonLines = (file: string): Array<Record<string, any>> =>
  Fs.existsSync(file) ? Fs.readFileSync(file, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l)) : []

/** Every listing of the run once in results.jsonl or errors.jsonl, and nothing else. */
export const assertEachOnce = (out: string, count: number, from: number) => {
  const ids = [
    ...jsonLines(Path.join(out, "results.jsonl")).map((r) => r.id as string),
    ...jsonLines(Path.join(out, "errors.jsonl")).map((e) => e.id as string)
  ]
  assert.strictEqual(ids.length, count)
  assert.deepStrictEqual(
    new Set(ids),
    new Set(Array.from({ length: count }, (_, i) => Listings.listing(from + i).id))
  )
}
