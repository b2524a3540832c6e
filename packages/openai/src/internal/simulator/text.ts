/** Deterministic filler text for simulated answers. */
import type { Rng } from "./random.js"

const WORDS = [
  "alpha",
  "amber",
  "anchor",
  "apple",
  "atlas",
  "basil",
  "beacon",
  "birch",
  "breeze",
  "cedar",
  "cobalt",
  "comet",
  "coral",
  "crystal",
  "delta",
  "drift",
  "ember",
  "falcon",
  "fern",
  "field",
  "flint",
  "forest",
  "galaxy",
  "garnet",
  "glacier",
  "harbor",
  "hazel",
  "horizon",
  "indigo",
  "iris",
  "island",
  "jade",
  "juniper",
  "keel",
  "lagoon",
  "lantern",
  "lemon",
  "lotus",
  "maple",
  "meadow",
  "meteor",
  "mint",
  "nebula",
  "north",
  "oak",
  "ocean",
  "onyx",
  "orbit",
  "pebble",
  "pine",
  "prairie",
  "quartz",
  "raven",
  "reef",
  "river",
  "saffron",
  "sage",
  "sierra",
  "silver",
  "summit",
  "tide",
  "timber",
  "valley",
  "willow"
]

/** One word. */
export const word = (rng: Rng): string => WORDS[rng.int(WORDS.length)]!

/** `count` (≥ 1) words separated by spaces. */
export const words = (rng: Rng, count: number): string => {
  let out = word(rng)
  for (let i = 1; i < count; i++) out += " " + word(rng)
  return out
}

/** A few sentences of filler prose. */
export const paragraph = (rng: Rng): string => {
  const sentences = rng.between(2, 4)
  let out = ""
  for (let s = 0; s < sentences; s++) {
    const text = words(rng, rng.between(6, 14))
    out += (s === 0 ? "" : " ") + text[0]!.toUpperCase() + text.slice(1) + "."
  }
  return out
}
