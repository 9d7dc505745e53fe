/* An external map and reduce for disco.worker.classic.external (tests/cluster and unit tests).
 *
 * stdin: the ext_params ("TOTAL\n" then "KLEN KEY VLEN VALUE\n" entries), then key-value pairs
 * <u32 len><key><u32 len><value> (little-endian); stdout: <u32 n> then n pairs.
 * map: each pair comes back three times, an empty key replaced by "dkey".
 * reduce: the sum of all value bytes, as text, ten times as (sum, sum).
 * Parameters checked: test1 = "1,2,3", "one two three" = "dim\ndam\n", dummy = "value";
 * a missing or wrong one is reported with **<ERR>. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "**<ERR> %s %s\n", what, detail);
    exit(1);
}

static unsigned char *read_exact(size_t n)
{
    unsigned char *p = malloc(n + 1);
    if (!p || (n && fread(p, 1, n, stdin) != n))
        die("short read of", "an item");
    p[n] = 0;
    return p;
}

static int read_u32(uint32_t *v)
{
    unsigned char b[4];
    size_t got = fread(b, 1, 4, stdin);
    if (got == 0)
        return 0;
    if (got != 4)
        die("short read of", "a length");
    *v = b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24;
    return 1;
}

static void write_u32(uint32_t v)
{
    unsigned char b[4] = {v & 255, v >> 8 & 255, v >> 16 & 255, v >> 24 & 255};
    fwrite(b, 1, 4, stdout);
}

static void write_item(const unsigned char *p, uint32_t n)
{
    write_u32(n);
    fwrite(p, 1, n, stdout);
}

#define MAX_PARAMS 16
static char *keys[MAX_PARAMS], *vals[MAX_PARAMS];
static int nparams;

/* one netstring entry "LEN SP BYTES SP|\n"; returns bytes consumed */
static unsigned read_netstr(char **out)
{
    unsigned len;
    int n = 0;
    if (scanf("%u%n", &len, &n) != 1)
        die("bad parameter", "length");
    getchar(); /* the space after the length */
    *out = (char *)read_exact(len);
    getchar(); /* the space or newline after the bytes */
    return (unsigned)n + 1 + len + 1;
}

static void read_params(void)
{
    unsigned total, used = 0;
    if (scanf("%u", &total) != 1)
        die("bad parameter", "set size");
    getchar(); /* the newline */
    while (used < total && nparams < MAX_PARAMS) {
        used += read_netstr(&keys[nparams]);
        used += read_netstr(&vals[nparams]);
        nparams++;
    }
    if (used != total)
        die("parameter set size does not match", "its entries");
}

static void check(const char *key, const char *want)
{
    for (int i = 0; i < nparams; i++)
        if (!strcmp(keys[i], key)) {
            if (strcmp(vals[i], want))
                die("parameter has a wrong value:", key);
            return;
        }
    die("parameter missing:", key);
}

int main(int argc, char **argv)
{
    uint32_t klen, vlen;
    read_params();
    check("test1", "1,2,3");
    check("one two three", "dim\ndam\n");
    check("dummy", "value");
    fprintf(stderr, "**<MSG> All parameters ok!\n");
    fflush(stderr);
    if (argc > 1 && !strcmp(argv[1], "map")) {
        int n = 0;
        while (read_u32(&klen)) {
            unsigned char *key = read_exact(klen);
            if (!read_u32(&vlen))
                die("no value after", "a key");
            unsigned char *val = read_exact(vlen);
            if (!klen) {
                free(key);
                key = malloc(5);
                memcpy(key, "dkey", 5);
                klen = 4;
            }
            write_u32(3);
            for (int i = 0; i < 3; i++) {
                write_item(key, klen);
                write_item(val, vlen);
            }
            fflush(stdout);
            free(key);
            free(val);
            n++;
        }
        fprintf(stderr, "**<MSG> %d key-value pairs read ok\n", n);
    } else {
        unsigned long sum = 0;
        char text[32];
        while (read_u32(&klen)) {
            free(read_exact(klen));
            if (!read_u32(&vlen))
                die("no value after", "a key");
            unsigned char *val = read_exact(vlen);
            for (uint32_t i = 0; i < vlen; i++)
                sum += val[i];
            free(val);
        }
        uint32_t len = (uint32_t)snprintf(text, sizeof text, "%lu", sum);
        write_u32(10);
        for (int i = 0; i < 10; i++) {
            write_item((unsigned char *)text, len);
            write_item((unsigned char *)text, len);
        }
        fflush(stdout);
    }
    return 0;
}
