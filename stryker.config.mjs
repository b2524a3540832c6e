// Mutation testing (StrykerJS 9.6 with the vitest runner) over the modules where a silent break costs
// money or stampedes a provider. Each module is mutated against its own test files only, so a run is
// feasible on two cores; not part of CI. See docs/mutation.md.
//
//   npx stryker run                                   # every module below, one after another in one run
//   KEEL_MUTATE=RetryPolicy,Money npx stryker run     # only these
//
// Test files import core through relative paths: a test of @keel/openai that imports "@keel/core/…"
// reaches the original sources, not Stryker's sandbox, so it cannot kill a core mutant.

/** Module → [source, test files]. */
const modules = {
  // RetryPolicyHerd.test.ts (herds of 500–1,000 fibers through the pipeline) is left out: each herd costs about
  // a minute per mutant it covers, and RetryPolicy.test.ts checks the same schedule step by step.
  RetryPolicy: ["packages/core/src/RetryPolicy.ts", ["packages/core/test/RetryPolicy.test.ts"]],
  // RetryPolicy.test.ts also exercises the hints and retryability through the pipeline; LlmError.test.ts checks
  // the same predicates directly.
  LlmError: ["packages/core/src/LlmError.ts", [
    "packages/core/test/LlmError.test.ts",
    "packages/core/test/Metering.test.ts"
  ]],
  Money: ["packages/core/src/Money.ts", [
    "packages/core/test/Money.test.ts",
    "packages/core/test/MoneyEdges.test.ts",
    "packages/core/test/Metering.test.ts"
  ]],
  // CallLogLlm.test.ts also covers it, but its 1,000-call run makes each mutant it covers cost a minute.
  metering: ["packages/core/src/internal/metering.ts", [
    "packages/core/test/Metering.test.ts",
    "packages/core/test/GenerateObject.test.ts"
  ]],
  Pricing: ["packages/core/src/Pricing.ts", [
    "packages/core/test/Pricing.test.ts",
    "packages/core/test/Metering.test.ts"
  ]],
  Budget: ["packages/core/src/Budget.ts", [
    "packages/core/test/Budget.test.ts",
    "packages/core/test/BudgetLedger.test.ts",
    "packages/core/test/Metering.test.ts"
  ]],
  // BudgetSql.test.ts (600 concurrent calls, 4 worker processes, kill -9 and restart, reclaim under load) takes
  // 3.5 minutes a run on 2 shared cores and runs again for every mutant it covers; under that load its 600-call SQLite
  // test passed its 60 s timeout, which fails the dry run. BudgetLedger.test.ts checks the store's arithmetic on
  // SQLite and Postgres in seconds, BudgetSqlStore.test.ts the rest of the store (migrations, leases, the queue,
  // errors, paths) in seconds too; see docs/mutation.md for what that leaves out.
  BudgetSql: ["packages/core/src/Budget/Sql.ts", [
    "packages/core/test/BudgetLedger.test.ts",
    "packages/core/test/BudgetSqlStore.test.ts"
  ]],
  StrictSchema: ["packages/core/src/StrictSchema.ts", [
    "packages/core/test/StrictSchema.test.ts",
    "packages/core/test/StrictSchemaRefusals.test.ts",
    "packages/core/test/StrictSchemaRefinements.test.ts",
    "packages/core/test/StrictSchemaSent.test.ts",
    "packages/core/test/StrictSchemaWire.test.ts",
    "packages/core/test/Tool.test.ts",
    "packages/core/test/GenerateObject.test.ts"
  ]],
  errors: ["packages/openai/src/internal/errors.ts", [
    "packages/openai/test/errors.test.ts",
    "packages/openai/test/RetryHints.test.ts",
    "packages/openai/test/secrets.test.ts"
  ]]
}

const selected = (process.env.KEEL_MUTATE ?? Object.keys(modules).join(","))
  .split(",")
  .map((name) => name.trim())
  .filter((name) => name !== "")
for (const name of selected) {
  if (!(name in modules)) {
    throw new Error(`KEEL_MUTATE: unknown module "${name}"; one of ${Object.keys(modules).join(", ")}`)
  }
}

// StrictSchema.test.ts's property test converts 1,000 generated schemas (~30 s); it runs again for every mutant
// it covers, so the mutation run asks for 100 (the test runners inherit this process's environment).
if (selected.includes("StrictSchema")) process.env.KEEL_STRICT_PROPERTY_RUNS ??= "100"

/** @type {import("@stryker-mutator/api/core").PartialStrykerOptions} */
export default {
  testRunner: "vitest",
  vitest: { configFile: "vitest.config.ts", related: false },
  plugins: ["@stryker-mutator/vitest-runner"],
  mutate: selected.map((name) => modules[name][0]),
  testFiles: [...new Set(selected.flatMap((name) => modules[name][1]))],
  // Each mutant runs only the tests that covered it in the dry run.
  coverageAnalysis: "perTest",
  // Static mutants (module-level code: class tags, constants) were never activated under this vitest
  // setup (none was killed, even "isRetryable = () => undefined", which LlmError.test.ts asserts), so they
  // are left out rather than counted as survivors.
  ignoreStatic: true,
  concurrency: 1,
  timeoutMS: 60_000,
  reporters: ["clear-text", "progress", "html", "json"],
  htmlReporter: { fileName: `coverage/mutation/${selected.join("-")}.html` },
  jsonReporter: { fileName: `coverage/mutation/${selected.join("-")}.json` },
  // The sandbox gets only what the tests need: the core and openai packages and the root configuration
  // (node_modules is linked). Everything else is left out, so untracked files in a shared working tree (scratch
  // files that come and go) cannot make the copy fail.
  ignorePatterns: [
    "/*",
    "!/package.json",
    "!/tsconfig*.json",
    "!/vitest.config.ts",
    "!/packages",
    "/packages/*",
    "!/packages/core",
    "!/packages/openai",
    "/packages/*/*",
    "!/packages/*/src",
    "!/packages/*/test",
    "!/packages/*/package.json",
    "!/packages/*/tsconfig*.json",
    "/packages/cli"
  ],
  tempDirName: process.env.KEEL_MUTATE === undefined ? ".stryker-tmp" : `.stryker-tmp-${selected.join("-")}`,
  cleanTempDir: "always"
}
