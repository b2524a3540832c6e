/**
 * NodeVersion: which Node versions keel runs on, checked before anything else loads so that an
 * unsupported Node gets a sentence saying what to install instead of a crash. It imports nothing, so
 * the `keel` entry point can run it before it imports the rest of the CLI:
 *
 * ```ts
 * const support = NodeVersion.check(process.versions.node)
 * if (support._tag !== "Supported") process.stderr.write(`keel: ${support.message}\n`)
 * if (support._tag === "Unsupported") process.exit(1)
 * await import("./bin.js")
 * ```
 */

/** The release lines keel is tested on, each from its first supported version. */
export const supportedLines: ReadonlyArray<{ readonly major: number; readonly minor: number }> = [
  { major: 20, minor: 19 },
  { major: 22, minor: 12 },
  { major: 24, minor: 0 },
  { major: 26, minor: 0 }
]

/** "20.19+, 22.12+, 24, 26": for messages, the README and `engines`. */
export const supportedText = supportedLines.map(({ major, minor }) => (minor === 0 ? `${major}` : `${major}.${minor}+`))
  .join(", ")

/** `Untested`: a line keel is not tested on (an odd-numbered line, or one newer than the newest tested), run anyway. */
export type Support =
  | { readonly _tag: "Supported"; readonly version: string }
  | { readonly _tag: "Untested"; readonly version: string; readonly message: string }
  | { readonly _tag: "Unsupported"; readonly version: string; readonly message: string }

/** Classifies a Node version such as `process.versions.node` ("24.22.3", "v24.22.3" or "27.0.0-pre"). */
export const check = (version: string): Support => {
  const [major, minor] = version.replace(/^v/, "").split(/[.-]/).map(Number) as [number, number | undefined]
  const lowest = supportedLines[0]!
  const newest = supportedLines[supportedLines.length - 1]!
  const line = supportedLines.find((supported) => supported.major === major)
  if (!Number.isInteger(major) || !Number.isInteger(minor)) {
    return {
      _tag: "Unsupported",
      version,
      message: `cannot read the Node version "${version}"; keel runs on Node ${supportedText}`
    }
  }
  if (major < lowest.major || (line !== undefined && minor! < line.minor)) {
    const needed = line ?? lowest
    return {
      _tag: "Unsupported",
      version,
      message: `keel needs Node ${needed.major}.${needed.minor} or later${
        line !== undefined ? ` on the ${major}.x line` : ""
      } (supported: ${supportedText}), and this is Node ${version}. Install a supported Node and run it again.`
    }
  }
  if (line !== undefined) return { _tag: "Supported", version }
  return {
    _tag: "Untested",
    version,
    message: `Node ${version} is ${
      major > newest.major ? "newer than the Node lines keel is tested on" : "not a Node line keel is tested on"
    } (${supportedText}): it may work; if it does not, use one of those.`
  }
}
