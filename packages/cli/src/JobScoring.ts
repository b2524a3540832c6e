/**
 * The demo's task: job listings scored for one candidate. Every listing goes to a tier by a rule on
 * its title: roles near the candidate's (backend, full-stack, platform, SRE, DevOps) go to `complex`, which scores the fit 0–100
 * against the profile with reasons and red flags; the rest go to `simple`, which only classifies
 * category and seniority, on a cheaper model.
 */
import * as Schema from "effect/Schema"
import * as Task from "./Task.js"

/** A listing as the generator writes it (see `Listings`). */
export const Listing = Schema.Struct({
  id: Schema.String.pipe(Schema.minLength(1)),
  title: Schema.String.pipe(Schema.minLength(1)),
  company: Schema.String,
  location: Schema.String,
  remote: Schema.Boolean,
  salary: Schema.optional(
    Schema.Struct({ min: Schema.Number, max: Schema.Number, currency: Schema.String.pipe(Schema.length(3)) })
  ),
  description: Schema.String
}).annotations({ identifier: "Listing" })

export const Category = Schema.Literal(
  "engineering",
  "data",
  "design",
  "product",
  "sales",
  "support",
  "operations",
  "other"
)
export const Seniority = Schema.Literal("junior", "mid", "senior", "staff", "lead", "unknown")

/** The simple tier's answer. */
export const Classification = Schema.Struct({ category: Category, seniority: Seniority }).annotations({
  identifier: "Classification",
  description: "The listing's job category and seniority"
})

/** The complex tier's answer. */
export const Fit = Schema.Struct({
  category: Category,
  seniority: Seniority,
  fit: Schema.Int.pipe(Schema.between(0, 100)),
  reasons: Schema.Array(Schema.String).pipe(Schema.minItems(1), Schema.maxItems(3)),
  redFlags: Schema.Array(Schema.String).pipe(Schema.maxItems(3))
}).annotations({ identifier: "Fit", description: "How well the listing fits the candidate, 0 to 100" })

/** Who the listings are scored for. */
export const candidate =
  "Senior backend engineer, 8 years, TypeScript and Node.js, PostgreSQL, some Go and Kubernetes; " +
  "lives in Berlin, wants remote or hybrid in the EU, at least EUR 85,000; no on-call more than one week in six."

const nearCandidate = /backend|full-stack|platform|site reliability|devops/i

const clip = (text: string, max: number) => (text.length <= max ? text : `${text.slice(0, max)} …`)

const describe = (listing: typeof Listing.Type) =>
  [
    `Title: ${listing.title}`,
    `Company: ${listing.company}`,
    `Location: ${listing.location}${listing.remote ? " (remote possible)" : ""}`,
    `Salary: ${
      listing.salary === undefined
        ? "not given"
        : `${listing.salary.currency} ${listing.salary.min.toLocaleString("en")}–${
          listing.salary.max.toLocaleString("en")
        }`
    }`,
    `Description: ${clip(listing.description, 6_000)}`
  ].join("\n")

export const task = Task.make({
  name: "job-scoring",
  input: Listing,
  id: (listing) => listing.id,
  outputs: { simple: Classification, complex: Fit },
  tier: (listing) => (nearCandidate.test(listing.title) ? "complex" : "simple"),
  prompt: (listing, tier) =>
    tier === "complex"
      ? {
        messages: [
          {
            role: "system",
            content: `Score how well the job listing fits this candidate, from 0 (no fit) to 100 (ideal). ` +
              `Give up to three reasons and any red flags (salary below the minimum, location, on-call, vague role).\n` +
              `Candidate: ${candidate}`
          },
          { role: "user", content: describe(listing) }
        ],
        maxOutputTokens: 400
      }
      : {
        messages: [
          { role: "system", content: "Classify the job listing: its category and seniority." },
          { role: "user", content: describe(listing) }
        ],
        maxOutputTokens: 60
      }
})
