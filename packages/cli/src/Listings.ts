/**
 * A deterministic generator of job listings for the demo: the same seed and index give the same
 * listing. Most are plain; some are messy as real feeds are (HTML fragments, emoji, very long
 * descriptions, missing salary). `examples/listings-1000.jsonl` is `lines(1000)` with seed 1.
 */
import * as Stream from "effect/Stream"

export interface Listing {
  readonly id: string
  readonly title: string
  readonly company: string
  readonly location: string
  readonly remote: boolean
  readonly salary?: { readonly min: number; readonly max: number; readonly currency: string }
  readonly description: string
}

/** The seed of the committed sample. */
export const defaultSeed = 1

const mulberry32 = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const levels = ["Junior", "", "", "Senior", "Senior", "Staff", "Lead", "Principal"]
const roles = [
  "Backend Engineer",
  "Frontend Developer",
  "Full-Stack Engineer",
  "Platform Engineer",
  "Site Reliability Engineer",
  "Data Engineer",
  "Machine Learning Engineer",
  "Mobile Developer (iOS)",
  "Android Developer",
  "Security Engineer",
  "Product Designer",
  "Product Manager",
  "Data Analyst",
  "Technical Writer",
  "Customer Success Manager",
  "Account Executive",
  "QA Engineer",
  "Engineering Manager",
  "DevOps Engineer",
  "Solutions Architect"
]
const stacks = [
  "TypeScript, Node.js, PostgreSQL",
  "React, TypeScript, GraphQL",
  "Go, Kubernetes, Terraform",
  "Python, Airflow, dbt, BigQuery",
  "Rust, gRPC, Kafka",
  "Java, Spring Boot, AWS",
  "Kotlin, Jetpack Compose",
  "Swift, SwiftUI",
  "Scala, Spark, Databricks",
  "Elixir, Phoenix, Postgres",
  "C#, .NET, Azure",
  "Ruby on Rails, Redis, Sidekiq",
  "Figma, design systems, user research",
  "SQL, Looker, experimentation"
]
const companies = [
  "Northwind Logistics",
  "Acme Analytics",
  "Brightline Health",
  "Kestrel Payments",
  "Lumen Robotics",
  "Orbital Freight",
  "Quarry Labs",
  "Tidewater Energy",
  "Fernhill Games",
  "Helix Bio",
  "Cobalt Insurance",
  "Juniper Travel",
  "Meridian Bank",
  "Pinecone Retail",
  "Sable Security"
]
const places: ReadonlyArray<readonly [string, string]> = [
  ["Berlin, Germany", "EUR"],
  ["Lisbon, Portugal", "EUR"],
  ["Amsterdam, Netherlands", "EUR"],
  ["Warsaw, Poland", "PLN"],
  ["London, UK", "GBP"],
  ["Dublin, Ireland", "EUR"],
  ["New York, NY", "USD"],
  ["Austin, TX", "USD"],
  ["Toronto, Canada", "CAD"],
  ["Remote (EU)", "EUR"],
  ["Remote (US)", "USD"],
  ["Bangalore, India", "INR"]
]
const perks = [
  "We offer 30 days of paid holiday, a learning budget and a hardware allowance.",
  "You will join a team of eight engineers shipping to production several times a day.",
  "On-call is shared fairly across the team, one week in six, with paid time off afterwards.",
  "Our stack is boring on purpose: we value reliability over novelty.",
  "We are a Series B company with 120 people across three time zones.",
  "Relocation support and visa sponsorship are available for this role.",
  "The interview process has four steps and takes about two weeks.",
  "Experience in a regulated industry (finance, health) is a plus.",
  "You will mentor two junior engineers and own the roadmap of one service.",
  "Travel to the office once a quarter for planning is expected."
]
const emoji = ["🚀", "🔥", "💼", "🌍", "✨", "🤝", "📈", "🧑‍💻"]

const pick = <A>(rng: () => number, values: ReadonlyArray<A>): A => values[Math.floor(rng() * values.length)]!

/** The listing at `index` (from 1) for `seed`. */
export const listing = (index: number, seed: number = defaultSeed): Listing => {
  const rng = mulberry32((seed * 0x9e3779b1) ^ (index * 0x85ebca6b))
  const level = pick(rng, levels)
  const role = pick(rng, roles)
  const stack = pick(rng, stacks)
  const company = pick(rng, companies)
  const [location, currency] = pick(rng, places)
  const remote = location.startsWith("Remote") || rng() < 0.3
  const title = `${level === "" ? "" : `${level} `}${role}`
  const sentences = [
    `${company} is looking for a ${title} to work with ${stack}.`,
    ...Array.from({ length: 1 + Math.floor(rng() * 4) }, () => pick(rng, perks))
  ]
  const messy = rng()
  let description = sentences.join(" ")
  let shownTitle = title
  if (messy < 0.08) {
    description = `<p><strong>About us</strong></p><ul>${
      sentences.map((s) => `<li>${s}</li>`).join("")
    }</ul><p>Apply&nbsp;now &amp; join us!</p>`
  } else if (messy < 0.14) {
    shownTitle = `${pick(rng, emoji)} ${title} ${pick(rng, emoji)}`
    description = `${pick(rng, emoji)} ${description} ${pick(rng, emoji)}${pick(rng, emoji)}`
  } else if (messy < 0.17) {
    description = Array.from({ length: 25 + Math.floor(rng() * 25) }, () => pick(rng, perks)).join("\n\n")
  }
  const base = 30_000 + Math.floor(rng() * 14) * 10_000
  const salary = rng() < 0.25 ? undefined : { min: base, max: base + 10_000 + Math.floor(rng() * 5) * 10_000, currency }
  return {
    id: `L${String(index).padStart(7, "0")}`,
    title: shownTitle,
    company,
    location,
    remote,
    ...(salary === undefined ? {} : { salary }),
    description
  }
}

/** `count` listings as JSON lines (no newline), generated as they are pulled. */
export const lines = (count: number, seed: number = defaultSeed): Stream.Stream<string> =>
  count <= 0 ? Stream.empty : Stream.range(1, count).pipe(Stream.map((index) => JSON.stringify(listing(index, seed))))
