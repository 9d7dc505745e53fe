/*
 * A Disco worker in C: counts the words of its task's inputs.
 *
 * It speaks Disco's worker protocol (docs/worker-protocol.md): requests go to stderr, replies
 * come on stdin, each one frame "TYPE SP LEN SP JSON\n". The session:
 *
 *   WORKER {"version":"1.1","pid":N}  -> OK "ok"
 *   TASK ""                            -> TASK {... "taskdir": DIR ...}
 *   INPUT ""                           -> INPUT ["done", [[id, "ok", label, [[rep, URL]]], ...]]
 *   MSG "..."                          -> OK "ok"
 *   OUTPUT [0, "DIR/counts.txt", SIZE] -> OK "ok"
 *   DONE ""                            -> OK "ok"
 *
 * The output holds one line per distinct word, "WORD COUNT", sorted by word. The node hands
 * every input over as a file:// URL of a local file, so no HTTP client is needed. JSON is read
 * with a small scanner that only looks for string values; that is all this worker needs.
 *
 * Build: cc -O2 -Wall -o wordcount wordcount.c   (or: make -C examples/worker_c)
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PAYLOAD (100u * 1024u * 1024u)

_Noreturn static void fail(const char *fmt, ...);

/* ---- growable byte buffer ---- */

typedef struct { char *data; size_t len, cap; } buf_t;

static void buf_add(buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            fputs("wordcount: out of memory\n", stdout);
            exit(3);
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

static void buf_addc(buf_t *b, char c) { buf_add(b, &c, 1); }

/* A JSON string literal of s (escapes ", \ and control characters). */
static void json_string(buf_t *out, const char *s)
{
    buf_addc(out, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char tmp[8];
        if (c == '"' || c == '\\') {
            buf_addc(out, '\\');
            buf_addc(out, (char)c);
        } else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            buf_add(out, tmp, strlen(tmp));
        } else {
            buf_addc(out, (char)c);
        }
    }
    buf_addc(out, '"');
}

/* ---- frames ---- */

static void send_frame(const char *type, const char *json)
{
    if (fprintf(stderr, "%s %zu %s\n", type, strlen(json), json) < 0 || fflush(stderr))
        exit(4); /* the node is gone */
}

/* Read one reply frame; its type goes to type (<= 10 chars), its JSON payload is returned
 * (malloc'd, NUL-terminated). Anything that is not a frame ends the worker. */
static char *recv_frame(char type[11])
{
    int c, n = 0;
    unsigned long len = 0;
    while ((c = getchar()) != ' ') {
        if (c == EOF)
            exit(4);
        if (n == 10 || !(isupper(c) || c == '_'))
            fail("bad reply frame: type");
        type[n++] = (char)c;
    }
    type[n] = 0;
    for (n = 0; (c = getchar()) != ' '; n++) {
        if (c == EOF || !isdigit(c) || n > 9)
            fail("bad reply frame: length");
        len = len * 10 + (unsigned long)(c - '0');
    }
    if (len > MAX_PAYLOAD)
        fail("reply of %lu bytes is too large", len);
    char *payload = malloc(len + 1);
    if (!payload || fread(payload, 1, len, stdin) != len || getchar() != '\n')
        fail("bad reply frame: payload");
    payload[len] = 0;
    return payload;
}

/* Send a request and return the reply's payload, which must be of type expect. */
static char *request(const char *type, const char *json, const char *expect)
{
    char got[11];
    send_frame(type, json);
    char *payload = recv_frame(got);
    if (strcmp(got, expect))
        fail("%s was answered %s, expected %s", type, got, expect);
    return payload;
}

_Noreturn static void fail(const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    buf_t msg = {0};
    json_string(&msg, text);
    send_frame("FATAL", msg.data);
    int c; /* wait for the node's OK, as the protocol asks, then end */
    while ((c = getchar()) != EOF && c != '\n')
        ;
    exit(1);
}

static void say(const char *text)
{
    buf_t msg = {0};
    json_string(&msg, text);
    free(request("MSG", msg.data, "OK"));
    free(msg.data);
}

/* ---- the little JSON this worker reads: string values ---- */

/* Parse the JSON string literal at *p (which points at its opening quote) into out;
 * leave *p after the closing quote. \uXXXX outside ASCII becomes UTF-8 (no surrogates). */
static void parse_string(const char **p, buf_t *out)
{
    const char *s = *p + 1;
    out->len = 0;
    buf_add(out, "", 0);
    while (*s && *s != '"') {
        if (*s != '\\') {
            buf_addc(out, *s++);
            continue;
        }
        s++;
        switch (*s) {
        case 'n': buf_addc(out, '\n'); break;
        case 't': buf_addc(out, '\t'); break;
        case 'r': buf_addc(out, '\r'); break;
        case 'b': buf_addc(out, '\b'); break;
        case 'f': buf_addc(out, '\f'); break;
        case 'u': {
            unsigned v = 0;
            int i;
            for (i = 1; i <= 4 && isxdigit((unsigned char)s[i]); i++)
                v = v * 16 + (unsigned)(isdigit((unsigned char)s[i]) ? s[i] - '0'
                                                   : (tolower((unsigned char)s[i]) - 'a' + 10));
            if (i != 5)
                fail("bad \\u escape in a reply");
            s += 4;
            if (v < 0x80) {
                buf_addc(out, (char)v);
            } else if (v < 0x800) {
                buf_addc(out, (char)(0xC0 | (v >> 6)));
                buf_addc(out, (char)(0x80 | (v & 0x3F)));
            } else {
                buf_addc(out, (char)(0xE0 | (v >> 12)));
                buf_addc(out, (char)(0x80 | ((v >> 6) & 0x3F)));
                buf_addc(out, (char)(0x80 | (v & 0x3F)));
            }
            break;
        }
        case 0: fail("unterminated string in a reply");
        default: buf_addc(out, *s); /* \" \\ \/ */
        }
        s++;
    }
    if (*s != '"')
        fail("unterminated string in a reply");
    *p = s + 1;
}

/* The string value of "key" in a flat JSON object, or NULL. */
static char *string_field(const char *json, const char *key)
{
    buf_t str = {0};
    const char *p = json;
    while ((p = strchr(p, '"'))) {
        parse_string(&p, &str);
        while (isspace((unsigned char)*p))
            p++;
        if (*p == ':' && !strcmp(str.data, key)) {
            p++;
            while (isspace((unsigned char)*p))
                p++;
            if (*p != '"')
                return NULL;
            parse_string(&p, &str);
            return str.data;
        }
    }
    free(str.data);
    return NULL;
}

/* ---- counting ---- */

typedef struct { char *word; long count; } entry_t;
static entry_t *table;
static size_t table_size = 0, table_used = 0;

static unsigned long hash(const char *s)
{
    unsigned long h = 5381;
    while (*s)
        h = h * 33 + (unsigned char)*s++;
    return h;
}

static void grow(void);

static void count(const char *word)
{
    if (2 * (table_used + 1) > table_size)
        grow();
    size_t i = hash(word) & (table_size - 1);
    while (table[i].word && strcmp(table[i].word, word))
        i = (i + 1) & (table_size - 1);
    if (!table[i].word) {
        table[i].word = strdup(word);
        table_used++;
    }
    table[i].count++;
}

static void grow(void)
{
    entry_t *old = table;
    size_t old_size = table_size;
    table_size = table_size ? table_size * 2 : 1024;
    table = calloc(table_size, sizeof *table);
    if (!table)
        fail("out of memory");
    for (size_t i = 0; i < old_size; i++)
        if (old[i].word) {
            size_t j = hash(old[i].word) & (table_size - 1);
            while (table[j].word)
                j = (j + 1) & (table_size - 1);
            table[j] = old[i];
        }
    free(old);
}

static void count_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        buf_t msg = {0};
        json_string(&msg, path);
        free(request("ERROR", msg.data, "OK")); /* retryable: another node may read it */
        exit(1);
    }
    buf_t word = {0};
    int c;
    buf_add(&word, "", 0);
    while ((c = getc(f)) != EOF) {
        if (isspace(c)) {
            if (word.len)
                count(word.data);
            word.len = 0;
            word.data[0] = 0;
        } else {
            buf_addc(&word, (char)c);
        }
    }
    if (word.len)
        count(word.data);
    free(word.data);
    fclose(f);
}

static int by_word(const void *a, const void *b)
{
    return strcmp(((const entry_t *)a)->word, ((const entry_t *)b)->word);
}

/* ---- the session ---- */

int main(void)
{
    char hello[64], text[256];
    snprintf(hello, sizeof hello, "{\"version\":\"1.1\",\"pid\":%d}", (int)getpid());
    free(request("WORKER", hello, "OK"));

    char *task = request("TASK", "\"\"", "TASK");
    char *taskdir = string_field(task, "taskdir");
    if (!taskdir)
        fail("the TASK reply has no taskdir");

    /* every string in the INPUT reply that is a file:// URL is one input's replica */
    char *inputs = request("INPUT", "\"\"", "INPUT");
    buf_t str = {0};
    const char *p = inputs;
    int files = 0;
    while ((p = strchr(p, '"'))) {
        parse_string(&p, &str);
        if (!strncmp(str.data, "file://", 7)) {
            count_file(str.data + 7);
            files++;
        } else if (strstr(str.data, "://")) {
            fail("cannot read %s (only file:// inputs)", str.data);
        }
    }

    buf_t out = {0};
    buf_add(&out, taskdir, strlen(taskdir));
    buf_add(&out, "/counts.txt", 11);
    FILE *f = fopen(out.data, "w");
    if (!f)
        fail("cannot write %s", out.data);
    entry_t *sorted = calloc(table_used + 1, sizeof *sorted);
    size_t n = 0;
    for (size_t i = 0; i < table_size; i++)
        if (table[i].word)
            sorted[n++] = table[i];
    qsort(sorted, n, sizeof *sorted, by_word);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s %ld\n", sorted[i].word, sorted[i].count);
    long size = ftell(f);
    if (fclose(f))
        fail("cannot write %s", out.data);

    snprintf(text, sizeof text, "counted %zu distinct words in %d inputs", n, files);
    say(text);

    buf_t output = {0};
    buf_add(&output, "[0,", 3);
    json_string(&output, out.data);
    snprintf(text, sizeof text, ",%ld]", size);
    buf_add(&output, text, strlen(text));
    free(request("OUTPUT", output.data, "OK"));
    free(request("DONE", "\"\"", "OK"));
    return 0;
}
