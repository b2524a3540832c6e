/** `keel report calls.jsonl [--html report.html]`: a call log as terminal tables, and as an HTML page with charts. */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Pricing from "@keel/core/Pricing"
import * as OpenAiPricing from "@keel/openai/OpenAiPricing"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Flags from "./Flags.js"
import * as Report from "./Report.js"

export const command = Command.make("report", {
  calls: Args.text({ name: "calls.jsonl" }).pipe(Args.withDescription("a call log (calls.jsonl of a run)")),
  html: Options.text("html").pipe(
    Options.optional,
    Options.withDescription("also write a self-contained HTML page with charts to this file")
  ),
  complexModel: Options.text("complex-model").pipe(
    Options.optional,
    Options.withDescription("the model to compare routing against (default the complex tier's most used model)")
  )
}, (options) =>
  Effect.gen(function*() {
    const { skipped, stats } = yield* Report.read(options.calls).pipe(
      Effect.mapError((e) => new Flags.UsageError({ message: e.message }))
    )
    const pricing = yield* Pricing.Pricing
    const comparison: Report.Comparison = {
      lookup: pricing.lookup,
      complexModel: Option.getOrUndefined(options.complexModel)
    }
    yield* Console.log(
      `${options.calls}: ${stats.calls.toLocaleString("en-US")} calls${
        skipped > 0 ? ` (${skipped} lines that are not call records skipped)` : ""
      }\n\n${Report.text(stats, comparison)}`
    )
    if (Option.isSome(options.html)) {
      const file = options.html.value
      yield* Effect.try({
        try: () => {
          Fs.mkdirSync(Path.dirname(Path.resolve(file)), { recursive: true })
          Fs.writeFileSync(file, Report.html(stats, comparison, `keel report: ${Path.basename(options.calls)}`))
        },
        catch: (error) => new Flags.UsageError({ message: `--html ${file}: cannot write it (${String(error)})` })
      })
      yield* Console.log(`\nHTML report: ${file}`)
    }
  }).pipe(Effect.provide(OpenAiPricing.layer()))).pipe(
    Command.withDescription("Read a call log: cost by model, routing, retries, errors, latency; --html for charts")
  )
