/* examples/gpt/corpus.c — the default training text.
 *
 * A synthetic language with structure at three scales, so that both the loss curve and the
 * long-context evaluation mean something:
 *   - within words: a lexicon of ~1500 pronounceable invented words (and English function words),
 *     with plural/past/third-person endings, used with Zipf-like frequencies;
 *   - within sentences: a handful of templates with agreement (a plural subject takes a plural
 *     verb form), years and counts, WikiText-style spacing (" , ", " . ", " @-@ ");
 *   - across a paragraph (hundreds to thousands of bytes): each paragraph has a topic, whose
 *     small vocabulary recurs, and two to four invented proper names that recur. A model that
 *     sees more of the paragraph predicts these better, so perplexity should fall (or at least
 *     hold) as the evaluation window grows, if the positional method lets the model use it.
 * Headings " = Title = " every few paragraphs mimic WikiText. All randomness comes from the
 * seeded sl_rng, so the text is the same on every machine. */
#include "corpus.h"

#include <shortlong/tensor.h>
#include <stdio.h>
#include <string.h>

enum { N_WORDS = 1536, N_TOPICS = 64, TOPIC_WORDS = 24, MAX_WORD = 24 };

typedef struct {
    char words[N_WORDS][MAX_WORD];
    int topic[N_TOPICS][TOPIC_WORDS];
} lexicon;

typedef struct {
    char *out;
    size_t n, len;
} sink;

static void put(sink *s, const char *text)
{
    while (*text && s->len < s->n) s->out[s->len++] = *text++;
}

static void make_word(sl_rng *r, char *w, int min_syl, int max_syl)
{
    static const char *onset[] = {"b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s",
                                  "t", "v", "w", "br", "cr", "dr", "gl", "pl", "st", "tr",
                                  "sh", "th", "ch", ""};
    static const char *vowel[] = {"a", "e", "i", "o", "u", "ai", "ea", "ou", "io"};
    static const char *coda[] = {"", "", "", "n", "r", "l", "s", "m", "nd", "st", "rk"};
    int syl = min_syl + (int)sl_rng_below(r, (uint64_t)(max_syl - min_syl + 1));
    w[0] = '\0';
    for (int i = 0; i < syl; i++) {
        strcat(w, onset[sl_rng_below(r, sizeof onset / sizeof *onset)]);
        strcat(w, vowel[sl_rng_below(r, sizeof vowel / sizeof *vowel)]);
    }
    strcat(w, coda[sl_rng_below(r, sizeof coda / sizeof *coda)]);
}

/* Word classes by index range in the lexicon. */
enum { NOUNS = 0, VERBS = 640, ADJS = 1088, ADVS = 1408 };

static void lexicon_init(lexicon *lx)
{
    sl_rng r = sl_rng_seed(0x5eed1e);
    for (int i = 0; i < N_WORDS; i++) make_word(&r, lx->words[i], 1, 3);
    for (int t = 0; t < N_TOPICS; t++)
        for (int k = 0; k < TOPIC_WORDS; k++) {
            /* a topic: 12 nouns, 8 verbs, 4 adjectives */
            int lo = k < 12 ? NOUNS : k < 20 ? VERBS : ADJS;
            int hi = k < 12 ? VERBS : k < 20 ? ADJS : ADVS;
            lx->topic[t][k] = lo + (int)sl_rng_below(&r, (uint64_t)(hi - lo));
        }
}

/* Zipf-like draw from [lo, hi): small indices much more often. */
static int zipf(sl_rng *r, int lo, int hi)
{
    double u = sl_rng_uniform(r);
    int span = hi - lo;
    int k = (int)(span * u * u * u);
    return lo + (k < span ? k : span - 1);
}

typedef struct {
    const lexicon *lx;
    sl_rng *r;
    int topic;
    char names[4][MAX_WORD];
    int n_names;
} para;

static const char *word_of(para *p, int lo, int hi, int topic_lo, int topic_hi)
{
    if (sl_rng_uniform(p->r) < 0.55) {
        int k = topic_lo + (int)sl_rng_below(p->r, (uint64_t)(topic_hi - topic_lo));
        return p->lx->words[p->lx->topic[p->topic][k]];
    }
    return p->lx->words[zipf(p->r, lo, hi)];
}

static const char *noun(para *p) { return word_of(p, NOUNS, VERBS, 0, 12); }
static const char *verb(para *p) { return word_of(p, VERBS, ADJS, 12, 20); }
static const char *adj(para *p) { return word_of(p, ADJS, ADVS, 20, 24); }
static const char *name(para *p) { return p->names[sl_rng_below(p->r, (uint64_t)p->n_names)]; }

static void sentence(sink *s, para *p)
{
    char buf[256];
    sl_rng *r = p->r;
    bool plural = sl_rng_uniform(r) < 0.3;
    const char *det = plural ? "the" : sl_rng_uniform(r) < 0.5 ? "the" : "a";
    switch (sl_rng_below(r, 7)) {
    case 0: /* The ADJ NOUN(s) VERB(s) the NOUN . */
        snprintf(buf, sizeof buf, "%s%s %s %s%s %s%s the %s", det[0] == 't' ? "T" : "A", det + 1,
                 adj(p), noun(p), plural ? "s" : "", verb(p), plural ? "" : "s", noun(p));
        break;
    case 1: /* NAME VERBed the NOUN of NAME */
        snprintf(buf, sizeof buf, "%s %sed the %s of %s", name(p), verb(p), noun(p), name(p));
        break;
    case 2: /* In YEAR , NAME was a ADJ NOUN */
        snprintf(buf, sizeof buf, "In %d , %s was a %s %s", 1800 + (int)sl_rng_below(r, 221),
                 name(p), adj(p), noun(p));
        break;
    case 3: /* NAME and NAME VERB COUNT NOUNs , and the NOUN is ADJ */
        snprintf(buf, sizeof buf, "%s and %s %s %d %ss , and the %s is %s", name(p), name(p),
                 verb(p), 2 + (int)sl_rng_below(r, 98), noun(p), noun(p), adj(p));
        break;
    case 4: /* The NOUN of the NOUN @-@ NOUN was ADJ */
        snprintf(buf, sizeof buf, "The %s of the %s @-@ %s was %s", noun(p), noun(p), noun(p),
                 adj(p));
        break;
    case 5: /* According to NAME , the NOUNs VERB in the NOUN */
        snprintf(buf, sizeof buf, "According to %s , the %ss %s in the %s", name(p), noun(p),
                 verb(p), noun(p));
        break;
    default: /* NAME 's NOUN VERBed ADV */
        snprintf(buf, sizeof buf, "%s 's %s %sed %s", name(p), noun(p), verb(p),
                 p->lx->words[zipf(r, ADVS, N_WORDS)]);
        break;
    }
    put(s, buf);
    put(s, " . ");
}

static void capitalised(sl_rng *r, char *w)
{
    make_word(r, w, 2, 3);
    if (w[0] >= 'a' && w[0] <= 'z') w[0] = (char)(w[0] - 'a' + 'A');
}

void corpus_generate(uint64_t seed, char *out, size_t n)
{
    static lexicon lx;
    static int ready;
    if (!ready) {
        lexicon_init(&lx);
        ready = 1;
    }
    sl_rng r = sl_rng_seed(seed);
    sink s = {out, n, 0};
    for (int k = 0; s.len < n; k++) {
        para p = {.lx = &lx, .r = &r, .topic = (int)sl_rng_below(&r, N_TOPICS)};
        p.n_names = 2 + (int)sl_rng_below(&r, 3);
        for (int i = 0; i < p.n_names; i++) capitalised(&r, p.names[i]);
        if (k % 6 == 0) {
            char h[96];
            snprintf(h, sizeof h, " = %s %s = \n", p.names[0], lx.words[lx.topic[p.topic][0]]);
            put(&s, h);
        }
        put(&s, " ");
        int sentences = 4 + (int)sl_rng_below(&r, 9);
        for (int i = 0; i < sentences; i++) sentence(&s, &p);
        put(&s, "\n");
    }
}
