/* tests/cli/xml_check.c — is each file well-formed XML whose root is an SVG element? For the
 * experiment's smoke test (test_gpt_experiment.sh), so that it needs no XML tool on the machine.
 *
 *   xml_check FILE...   exit 0 if every file is well-formed XML (one root element, every tag
 *                       closed in order, attributes quoted and unique per element, entities
 *                       known or numeric, no '<' or stray '&' in text or values; a prolog,
 *                       comments and whitespace around the root allowed) and its root is <svg>
 *                       with xmlns="http://www.w3.org/2000/svg"; else 1 with the first problem
 *                       and its byte offset. Not a validating parser. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s, *p, *path;
    char err[256];
} parser;

static int failf(parser *x, const char *what)
{
    snprintf(x->err, sizeof x->err, "%s: byte %ld: %s", x->path, (long)(x->p - x->s), what);
    return 0;
}

static int name_start(int c) { return isalpha(c) || c == '_' || c == ':'; }
static int name_char(int c) { return isalnum(c) || c == '_' || c == ':' || c == '-' || c == '.'; }

static void spaces(parser *x)
{
    while (*x->p && isspace((unsigned char)*x->p)) x->p++;
}

/* A name at x->p into out (cap bytes). */
static int name(parser *x, char *out, size_t cap)
{
    size_t n = 0;
    if (!name_start((unsigned char)*x->p)) return failf(x, "a name was expected");
    while (name_char((unsigned char)*x->p)) {
        if (n + 1 < cap) out[n++] = *x->p;
        x->p++;
    }
    out[n] = '\0';
    return 1;
}

/* An entity after '&': &amp; &lt; &gt; &quot; &apos; &#N; &#xH;. */
static int entity(parser *x)
{
    static const char *const named[] = {"amp;", "lt;", "gt;", "quot;", "apos;"};
    x->p++;
    for (int i = 0; i < 5; i++)
        if (!strncmp(x->p, named[i], strlen(named[i]))) return x->p += strlen(named[i]), 1;
    if (*x->p == '#') {
        x->p++;
        int hex = *x->p == 'x' && (x->p++, 1), digits = 0;
        while (hex ? isxdigit((unsigned char)*x->p) : isdigit((unsigned char)*x->p))
            x->p++, digits++;
        if (digits && *x->p == ';') return x->p++, 1;
    }
    return failf(x, "'&' that starts no entity");
}

/* Text up to the next '<' (no stray '&'). */
static int text(parser *x)
{
    while (*x->p && *x->p != '<')
        if (*x->p == '&') {
            if (!entity(x)) return 0;
        } else {
            x->p++;
        }
    return 1;
}

/* A comment or prolog at x->p, if there is one: skipped. */
static int skip_special(parser *x, int *skipped)
{
    *skipped = 0;
    const char *end = NULL;
    if (!strncmp(x->p, "<!--", 4)) end = strstr(x->p + 4, "-->"), *skipped = 3;
    else if (!strncmp(x->p, "<?", 2)) end = strstr(x->p + 2, "?>"), *skipped = 2;
    if (!*skipped) return 1;
    if (!end) return failf(x, "an unterminated comment or processing instruction");
    x->p = end + *skipped;
    return 1;
}

/* One element at x->p ('<'), with everything inside it. depth bounds the recursion. */
static int element(parser *x, int depth, char *root, int *svg_ns)
{
    char tag[128], attrs[64][128];
    int n_attrs = 0;
    if (depth > 200) return failf(x, "elements nested too deeply");
    x->p++;
    if (!name(x, tag, sizeof tag)) return 0;
    if (root && !depth) snprintf(root, 128, "%s", tag);
    for (;;) {
        const char *before = x->p;
        spaces(x);
        if (*x->p == '/' || *x->p == '>') break;
        if (x->p == before) return failf(x, "attributes must be separated by spaces");
        char an[128];
        if (!name(x, an, sizeof an)) return 0;
        for (int i = 0; i < n_attrs; i++)
            if (!strcmp(attrs[i], an)) return failf(x, "an attribute given twice");
        if (n_attrs < 64) snprintf(attrs[n_attrs++], 128, "%s", an);
        spaces(x);
        if (*x->p++ != '=') return failf(x, "'=' expected after an attribute name");
        spaces(x);
        char q = *x->p++;
        if (q != '"' && q != '\'') return failf(x, "an attribute value must be quoted");
        const char *v = x->p;
        while (*x->p && *x->p != q) {
            if (*x->p == '<') return failf(x, "'<' in an attribute value");
            if (*x->p == '&') {
                if (!entity(x)) return 0;
            } else {
                x->p++;
            }
        }
        if (!*x->p) return failf(x, "an unterminated attribute value");
        if (!depth && !strcmp(an, "xmlns") && x->p - v == 26 &&
            !strncmp(v, "http://www.w3.org/2000/svg", 26))
            *svg_ns = 1;
        x->p++;
    }
    if (*x->p == '/') {
        if (x->p[1] != '>') return failf(x, "'/' not followed by '>'");
        x->p += 2;
        return 1;
    }
    x->p++; /* '>' */
    for (;;) {
        if (!text(x)) return 0;
        if (!*x->p) return failf(x, "the document ends inside an element");
        int skipped;
        if (!skip_special(x, &skipped)) return 0;
        if (skipped) continue;
        if (x->p[1] == '/') {
            x->p += 2;
            char end[128];
            if (!name(x, end, sizeof end)) return 0;
            if (strcmp(end, tag)) return failf(x, "an end tag that does not match its start tag");
            spaces(x);
            if (*x->p++ != '>') return failf(x, "'>' expected to close an end tag");
            return 1;
        }
        if (!element(x, depth + 1, NULL, svg_ns)) return 0;
    }
}

static int check(parser *x, char *root, int *svg_ns)
{
    int skipped, seen = 0;
    for (;;) {
        spaces(x);
        if (!*x->p) break;
        if (*x->p != '<') return failf(x, "text outside the root element");
        if (!skip_special(x, &skipped)) return 0;
        if (skipped) continue;
        if (seen++) return failf(x, "a second root element");
        if (!element(x, 0, root, svg_ns)) return 0;
    }
    return seen ? 1 : failf(x, "no root element");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: xml_check FILE...\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) return fprintf(stderr, "xml_check: cannot open %s\n", argv[i]), 1;
        char *buf = malloc(1 << 24);
        size_t n = buf ? fread(buf, 1, (1 << 24) - 1, f) : 0;
        fclose(f);
        if (!buf) return 1;
        buf[n] = '\0';
        if (strlen(buf) != n)
            return fprintf(stderr, "xml_check: %s holds a NUL byte\n", argv[i]), 1;
        parser x = {buf, buf, argv[i], ""};
        char root[128] = "";
        int svg_ns = 0, ok = check(&x, root, &svg_ns);
        free(buf);
        if (!ok) return fprintf(stderr, "xml_check: %s\n", x.err), 1;
        if (strcmp(root, "svg") || !svg_ns)
            return fprintf(stderr, "xml_check: %s: the root is <%s>%s, not an SVG element\n",
                           argv[i], root, svg_ns ? "" : " without the SVG namespace"),
                   1;
    }
    return 0;
}
