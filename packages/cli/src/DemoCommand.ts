/**
 * `keel demo`: the job-scoring task (`JobScoring`) over generated listings (`Listings`; the first
 * 1,000 with seed 1 are the committed examples/listings-1000.jsonl) with the whole pipeline, against
 * the in-process simulator unless OPENAI_API_KEY or --base-url says otherwise.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Flags from "./Flags.js"
import * as JobScoring from "./JobScoring.js"
import * as Listings from "./Listings.js"
import * as RunCommand from "./RunCommand.js"

export const command = Command.make("demo", {
  ...RunCommand.shared,
  count: Flags.positive("count").pipe(
    Options.withDefault(1000),
    Options.withDescription("how many listings to generate and score (default 1000)")
  ),
  scope: Options.text("scope").pipe(
    Options.withDefault("keel:demo"),
    Options.withDescription("the budget scope charged (default keel:demo)")
  )
}, (options) =>
  RunCommand.execute(
    JobScoring.task,
    { _tag: "Lines", lines: Listings.lines(options.count, options.seed), count: options.count },
    options,
    { command: "demo", count: options.count }
  )).pipe(Command.withDescription("Score generated job listings with the whole pipeline (the simulator without a key)"))
