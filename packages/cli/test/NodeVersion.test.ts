import { assert, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as NodeVersion from "../src/NodeVersion.js"

describe("NodeVersion.check", () => {
  it("accepts the tested lines from their first supported version", () => {
    for (const version of ["20.19.0", "20.20.2", "22.12.0", "22.23.5", "24.0.0", "v24.22.3", "26.12.1"]) {
      assert.strictEqual(NodeVersion.check(version)._tag, "Supported", version)
    }
  })

  it("refuses a Node too old, saying which version to install and which it got", () => {
    const cases: ReadonlyArray<readonly [string, string]> = [
      ["18.20.4", "Node 20.19 or later"],
      ["20.18.1", "Node 20.19 or later on the 20.x line"],
      ["22.11.0", "Node 22.12 or later on the 22.x line"]
    ]
    for (const [version, needed] of cases) {
      const support = NodeVersion.check(version)
      assert.strictEqual(support._tag, "Unsupported", version)
      const message = support._tag === "Unsupported" ? support.message : ""
      assert.include(message, needed)
      assert.include(message, `this is Node ${version}`)
      assert.include(message, "20.19+, 22.12+, 24, 26")
    }
  })

  it("runs on an untested line but says so", () => {
    const odd = NodeVersion.check("25.2.1")
    assert.isTrue(odd._tag === "Untested" && odd.message.includes("not a Node line keel is tested on"))
    const newer = NodeVersion.check("28.0.0-pre")
    assert.isTrue(newer._tag === "Untested" && newer.message.includes("newer than the Node lines keel is tested on"))
  })

  it("refuses a version it cannot read", () => {
    const support = NodeVersion.check("banana")
    assert.isTrue(support._tag === "Unsupported" && support.message.includes(`"banana"`))
  })

  it("accepts the Node running this test, which CI installs from the supported lines", () => {
    assert.strictEqual(NodeVersion.check(process.versions.node)._tag, "Supported", process.version)
  })

  it("imports nothing, so an old Node's entry point can load it before the rest of the CLI", () => {
    const source = Fs.readFileSync(Path.join(import.meta.dirname, "..", "src", "NodeVersion.ts"), "utf8")
    assert.notMatch(source, /^\s*(import|export .* from)\b/m)
  })
})
