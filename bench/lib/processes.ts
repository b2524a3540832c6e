/**
 * Processes for the benchmarks: `keel` spawned from sources (`node --import tsx`) with the tail of
 * its output kept, stopped with SIGTERM; a free port on 127.0.0.1; sleeping and waiting on a condition.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as Net from "node:net"
import * as Path from "node:path"

const bin = Path.resolve("packages/cli/src/bin.ts")
const nodeArgs = ["--conditions=@keel/source", "--import", "tsx"]

/** Starts `keel` with the given arguments, without an OpenAI key. */
export const keel = (args: ReadonlyArray<string>) => {
  const child = spawn(process.execPath, [...nodeArgs, bin, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, OPENAI_API_KEY: "", NO_COLOR: "1" }
  })
  let output = ""
  const keep = (chunk: unknown) => {
    output += String(chunk)
    if (output.length > 100_000) output = output.slice(-50_000)
  }
  child.stdout!.on("data", keep)
  child.stderr!.on("data", keep)
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve))
  return { child, output: () => output, exited }
}

/** Sends SIGTERM to each process and waits for them to exit. */
export const stop = async (
  processes: ReadonlyArray<{ readonly child: ChildProcess; readonly exited: Promise<unknown> }>
) => {
  for (const p of processes) p.child.kill("SIGTERM")
  await Promise.all(processes.map((p) => p.exited))
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Waits until `check` holds; past `timeoutMs`, fails naming `what`. */
export const until = async (what: string, check: () => boolean, timeoutMs = 120_000) => {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

/** A free port on 127.0.0.1, e.g. for a simulator started after its client. */
export const freePort = () =>
  new Promise<number>((resolve) => {
    const server = Net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      server.close(() => resolve(port))
    })
  })
