/**
 * Token counts for `usage`, with the o200k_base counter of `OpenAiTokenizer` (one encoder per process,
 * shared with the budget's estimates). Counting is the most
 * expensive step of an answer (about 25 characters per µs), so counts are memoised by text: system
 * prompts, tool schemas and repeated answers are counted once.
 */
import * as Effect from "effect/Effect"
import * as OpenAiTokenizer from "../../OpenAiTokenizer.js"

/** Counts tokens of a text. */
export type CountTokens = (text: string) => number

/** Texts shorter than this are counted directly; the memo holds longer ones. */
const MEMO_MIN_LENGTH = 24
/** The memo starts over when the texts it holds reach this many characters (about 8 MB). */
const MEMO_MAX_CHARS = 4_000_000

const memoise = (count: CountTokens): CountTokens => {
  const memo = new Map<string, number>()
  let chars = 0
  return (text) => {
    if (text.length < MEMO_MIN_LENGTH) return text.length === 0 ? 0 : count(text)
    const known = memo.get(text)
    if (known !== undefined) return known
    const n = count(text)
    if (chars + text.length > MEMO_MAX_CHARS) {
      memo.clear()
      chars = 0
    }
    memo.set(text, n)
    chars += text.length
    return n
  }
}

/** Loads the o200k_base encoder (about 200 ms, once per process) and returns a memoised counter. */
export const loadCounter: Effect.Effect<CountTokens> = Effect.map(OpenAiTokenizer.syncCounter, memoise).pipe(
  Effect.cached,
  Effect.runSync
)
