/**
 * The enqueued-token allowance per model: a chunk's batch is created only when the tokens of the
 * batches this process has enqueued for the model, plus its own, fit the allowance (or when nothing
 * else is enqueued). The allowance is configured, or learned: a batch refused with
 * `token_limit_exceeded` while others were enqueued lowers it to just under what was enqueued then.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"

interface Model {
  allowance: number | undefined
  readonly enqueued: Map<string, number>
}

export interface Gate {
  /** Waits until `tokens` more fit the model's allowance (or nothing is enqueued), then holds them for `key`. */
  readonly admit: (model: string, key: string, tokens: number) => Effect.Effect<void>
  /** Holds `tokens` for `key` without waiting (a batch found already enqueued after a restart). */
  readonly hold: (model: string, key: string, tokens: number) => void
  readonly release: (model: string, key: string) => void
  /**
   * Learns from a refusal of `key`'s batch: lowers the allowance below what was enqueued with it.
   * Returns whether other batches were enqueued (so waiting for them may help).
   */
  readonly refused: (model: string, key: string, tokens: number) => boolean
}

export const make = (configured: (model: string) => number | undefined): Gate => {
  const models = new Map<string, Model>()
  let changed = Deferred.unsafeMake<void>(FiberId.none)
  const announce = () => {
    const done = changed
    changed = Deferred.unsafeMake<void>(FiberId.none)
    Deferred.unsafeDone(done, Effect.void)
  }
  const modelOf = (model: string): Model => {
    let found = models.get(model)
    if (found === undefined) {
      found = { allowance: configured(model), enqueued: new Map() }
      models.set(model, found)
    }
    return found
  }
  const others = (state: Model, key: string): number => {
    let sum = 0
    for (const [other, tokens] of state.enqueued) if (other !== key) sum += tokens
    return sum
  }
  const admit = (model: string, key: string, tokens: number): Effect.Effect<void> =>
    Effect.suspend(() => {
      const state = modelOf(model)
      const before = others(state, key)
      if (
        state.enqueued.has(key) || before === 0 || state.allowance === undefined || before + tokens <= state.allowance
      ) {
        state.enqueued.set(key, tokens)
        return Effect.void
      }
      return Effect.zipRight(Deferred.await(changed), admit(model, key, tokens))
    })
  return {
    admit,
    hold: (model, key, tokens) => {
      modelOf(model).enqueued.set(key, tokens)
    },
    release: (model, key) => {
      if (modelOf(model).enqueued.delete(key)) announce()
    },
    refused: (model, key, tokens) => {
      const state = modelOf(model)
      const before = others(state, key)
      const below = Math.max(1, before + tokens - 1)
      state.allowance = state.allowance === undefined ? below : Math.min(state.allowance, below)
      state.enqueued.delete(key)
      announce()
      return before > 0
    }
  }
}
