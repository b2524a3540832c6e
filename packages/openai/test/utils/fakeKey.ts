/** A made-up API key shaped like OpenAI's (`sk-test-<name>`), built here so no key-like literal sits in the sources. */
export const fakeKey = (name: string): string => ["sk", "test", name].join("-")
