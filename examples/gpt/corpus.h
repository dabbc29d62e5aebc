/* examples/gpt/corpus.h — the built-in default corpus: deterministic synthetic English-like text,
 * so `gpt train` works with no download. See corpus.c for what is in it and why. */
#ifndef GPT_CORPUS_H
#define GPT_CORPUS_H

#include <stddef.h>
#include <stdint.h>

/* Writes exactly n bytes of text generated from `seed` into out. The same seed always gives
 * the same text; different seeds give disjoint paragraphs over the same language. */
void corpus_generate(uint64_t seed, char *out, size_t n);

#endif
