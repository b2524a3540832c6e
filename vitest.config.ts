import { defineConfig } from "vitest/config"

// Tests run from sources: the "@keel/source" export condition points each workspace package at src/.
const conditions = ["@keel/source", "node", "import", "default"]
// Vitest passes the SSR conditions to the test processes as `node --conditions`. Node's require()
// honours them too, so "import" there makes CommonJS packages load the ESM build of their
// dependencies (pg → pg-pool's esm/index.mjs: "Class extends value [object Module]"). Vite adds
// "import" to ESM resolution by itself, so the SSR list leaves it out.
const serverConditions = ["@keel/source", "node", "default"]

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions: serverConditions, externalConditions: ["@keel/source"] } },
  test: {
    include: ["packages/*/test/**/*.test.ts", "examples/test/**/*.test.ts"],
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 120_000,
    sequence: { concurrent: false }
  }
})
