#!/usr/bin/env node
// The `keel` binary: checks the Node version before loading anything else, then runs the built CLI.
import { check } from "../dist/NodeVersion.js"

const support = check(process.versions.node)
if (support._tag !== "Supported") process.stderr.write(`keel: ${support.message}\n`)
if (support._tag === "Unsupported") process.exit(1)
await import("../dist/bin.js")
