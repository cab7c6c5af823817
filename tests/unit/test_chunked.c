/* Chunked decoder: exact payload whatever the split of the input, and every
 * malformed framing rejected whatever the split. */
#include <criterion/criterion.h>

#include <ringlb/api.h>
#include <ringlb/http1.h>

#include <string.h>

struct outcome {
    int result;          /* last decoder result: DONE, ERROR or MORE */
    size_t consumed;     /* input bytes consumed in total */
    char payload[16384];
    size_t payload_len;
};

/* Feeds <in> in pieces ending at the offsets in <cuts> (ascending, the last
 * one is <len>), each piece in its own exactly sized heap block so that ASan
 * sees any read outside it. */
static void feed(const char *in, size_t len, const size_t *cuts, size_t ncuts, struct outcome *o)
{
    struct rlb_chunked_decoder dec;
    rlb_chunked_init(&dec);
    memset(o, 0, sizeof(*o));
    o->result = RLB_CHUNKED_MORE;

    size_t start = 0;
    for (size_t c = 0; c < ncuts; c++) {
        size_t plen = cuts[c] - start;
        char *piece = malloc(plen ? plen : 1);
        cr_assert(piece);
        memcpy(piece, in + start, plen);
        size_t off = 0;
        for (;;) {
            size_t used = 0, dlen = 0;
            const char *data = NULL;
            int r = rlb_chunked_decode(&dec, piece + off, plen - off, &used, &data, &dlen);
            cr_assert_leq(used, plen - off);
            if (r == RLB_CHUNKED_DATA) {
                cr_assert(data >= piece + off && data + dlen <= piece + off + used);
                cr_assert_gt(dlen, 0);
                cr_assert_leq(o->payload_len + dlen, sizeof(o->payload));
                memcpy(o->payload + o->payload_len, data, dlen);
                o->payload_len += dlen;
                off += used;
                continue;
            }
            off += used;
            o->result = r;
            if (r == RLB_CHUNKED_ERROR) {
                cr_assert(dec.error_reason != NULL);
                break;
            }
            if (r == RLB_CHUNKED_DONE)
                break;
            cr_assert_eq(r, RLB_CHUNKED_MORE);
            cr_assert_eq(off, plen, "MORE must consume everything");
            break;
        }
        o->consumed = start + off;
        free(piece);
        if (o->result != RLB_CHUNKED_MORE)
            return;
        start = cuts[c];
    }
}

struct chunk_case {
    const char *in;
    size_t len;
    const char *payload;
    size_t payload_len;
    size_t body_len; /* bytes that belong to the chunked body; the rest is the next message */
};

#define OK(s, p) {(s), sizeof(s) - 1, (p), sizeof(p) - 1, sizeof(s) - 1}
#define OK_TAIL(s, p, n) {(s), sizeof(s) - 1, (p), sizeof(p) - 1, (n)}

static const struct chunk_case good[] = {
    OK("5\r\nhello\r\n0\r\n\r\n", "hello"),
    OK("0\r\n\r\n", ""),
    OK("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"),
    OK("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij"),
    OK("005\r\nhello\r\n000\r\n\r\n", "hello"),
    OK("1\r\n\r\r\n1\r\n\n\r\n2\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n"),
    OK("5;foo=bar\r\nhello\r\n0\r\n\r\n", "hello"),
    OK("5;foo\r\nhello\r\n0;last\r\n\r\n", "hello"),
    OK("5 ; foo = bar ; baz\r\nhello\r\n0\r\n\r\n", "hello"),
    OK("5\t;\tfoo\t=\t\"b \\\"a\\\\ r\"\r\nhello\r\n0\r\n\r\n", "hello"),
    OK("5;a=\"\";b=\"x\" ;c\r\nhello\r\n0\r\n\r\n", "hello"),
    OK("5\r\nhello\r\n0\r\nExpires: never\r\nX-Checksum: abc\t def\r\nEmpty:\r\n\r\n", "hello"),
    OK("3\r\n\x00\xff\x7f\r\n0\r\n\r\n", "\x00\xff\x7f"),
    OK_TAIL("5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "hello", 15),
};

static void check_good(const struct chunk_case *c, size_t idx)
{
    struct outcome o;
    size_t cuts[3];

    /* whole */
    cuts[0] = c->len;
    feed(c->in, c->len, cuts, 1, &o);
    cr_expect_eq(o.result, RLB_CHUNKED_DONE, "case %zu whole: %d", idx, o.result);
    cr_expect_eq(o.consumed, c->body_len, "case %zu whole", idx);
    cr_expect_eq(o.payload_len, c->payload_len, "case %zu whole", idx);
    cr_expect(memcmp(o.payload, c->payload, c->payload_len) == 0, "case %zu whole", idx);

    /* one byte at a time */
    size_t *bytes = malloc(c->len * sizeof(*bytes));
    for (size_t i = 0; i < c->len; i++)
        bytes[i] = i + 1;
    feed(c->in, c->len, bytes, c->len, &o);
    free(bytes);
    cr_expect_eq(o.result, RLB_CHUNKED_DONE, "case %zu bytewise", idx);
    cr_expect_eq(o.consumed, c->body_len, "case %zu bytewise", idx);
    cr_expect_eq(o.payload_len, c->payload_len, "case %zu bytewise", idx);
    cr_expect(memcmp(o.payload, c->payload, c->payload_len) == 0, "case %zu bytewise", idx);

    /* every single split, and every double split */
    for (size_t a = 0; a <= c->len; a++) {
        for (size_t b = a; b <= c->len; b++) {
            cuts[0] = a;
            cuts[1] = b;
            cuts[2] = c->len;
            feed(c->in, c->len, cuts, 3, &o);
            cr_expect_eq(o.result, RLB_CHUNKED_DONE, "case %zu split %zu/%zu", idx, a, b);
            cr_expect_eq(o.consumed, c->body_len, "case %zu split %zu/%zu", idx, a, b);
            cr_expect_eq(o.payload_len, c->payload_len, "case %zu split %zu/%zu", idx, a, b);
            cr_expect(memcmp(o.payload, c->payload, c->payload_len) == 0, "case %zu split %zu/%zu", idx, a, b);
        }
    }
}

Test(chunked, valid_bodies_any_split)
{
    for (size_t i = 0; i < RLB_ARRAY_SIZE(good); i++)
        check_good(&good[i], i);
}

Test(chunked, big_chunk_and_max_size)
{
    /* 4 KiB of data in one chunk, streamed in odd pieces. */
    static char in[8192], payload[4096];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (char)('a' + i % 26);
    int n = snprintf(in, sizeof(in), "1000\r\n");
    memcpy(in + n, payload, sizeof(payload));
    n += (int)sizeof(payload);
    memcpy(in + n, "\r\n0\r\n\r\n", 7);
    n += 7;
    size_t cuts[] = {3, 7, 100, 101, 4000, 4104, (size_t)n};
    struct outcome o;
    feed(in, (size_t)n, cuts, RLB_ARRAY_SIZE(cuts), &o);
    cr_expect_eq(o.result, RLB_CHUNKED_DONE);
    cr_expect_eq(o.payload_len, sizeof(payload));
    cr_expect(memcmp(o.payload, payload, sizeof(payload)) == 0);

    /* 15 hex digits is the most we take; the size is reported as remaining. */
    struct rlb_chunked_decoder dec;
    rlb_chunked_init(&dec);
    const char big[] = "fffffffffffffff\r\nab";
    size_t used, dlen;
    const char *data;
    int r = rlb_chunked_decode(&dec, big, sizeof(big) - 1, &used, &data, &dlen);
    cr_expect_eq(r, RLB_CHUNKED_DATA);
    cr_expect_eq(dlen, 2);
    cr_expect_eq(used, sizeof(big) - 1);
    cr_expect_eq(dec.remaining, 0xfffffffffffffffULL - 2);
}

Test(chunked, done_is_sticky_and_zero_length_input)
{
    struct rlb_chunked_decoder dec;
    rlb_chunked_init(&dec);
    size_t used = 99, dlen = 99;
    const char *data = "x";
    cr_expect_eq(rlb_chunked_decode(&dec, "", 0, &used, &data, &dlen), RLB_CHUNKED_MORE);
    cr_expect_eq(used, 0);
    cr_expect_eq(dlen, 0);
    cr_expect_eq(rlb_chunked_decode(&dec, "0\r\n\r\nX", 6, &used, &data, &dlen), RLB_CHUNKED_DONE);
    cr_expect_eq(used, 5);
    cr_expect_eq(rlb_chunked_decode(&dec, "X", 1, &used, &data, &dlen), RLB_CHUNKED_DONE);
    cr_expect_eq(used, 0);
}

struct bad_chunk {
    const char *in;
    size_t len;
};

#define BADC(s) {(s), sizeof(s) - 1}

static const struct bad_chunk bad[] = {
    BADC("g\r\n"),
    BADC("\r\n"),
    BADC(";a\r\n"),
    BADC(" 5\r\nhello\r\n0\r\n\r\n"),
    BADC("-5\r\n"),
    BADC("+5\r\n"),
    BADC("0x5\r\nhello\r\n0\r\n\r\n"),
    BADC("5x\r\nhello\r\n0\r\n\r\n"),
    BADC("5 x\r\nhello\r\n0\r\n\r\n"),
    BADC("5 \r\nhello\r\n0\r\n\r\n"),
    BADC("5\n"),
    BADC("5\r\rhello"),
    BADC("5\rhello"),
    BADC("1234567890123456\r\n"),
    BADC("0000000000000000\r\n\r\n"),
    BADC("ffffffffffffffffff\r\n"),
    BADC("5\r\nhelloX\r\n0\r\n\r\n"),
    BADC("5\r\nhello\n0\r\n\r\n"),
    BADC("5\r\nhello\rX0\r\n\r\n"),
    BADC("5\r\nhello0\r\n\r\n"),
    BADC("5;\r\nhello\r\n0\r\n\r\n"),
    BADC("5;=x\r\nhello\r\n0\r\n\r\n"),
    BADC("5;a=\r\nhello\r\n0\r\n\r\n"),
    BADC("5;a= \r\nhello\r\n0\r\n\r\n"),
    BADC("5;a b\r\nhello\r\n0\r\n\r\n"),
    BADC("5;a=b c\r\nhello\r\n0\r\n\r\n"),
    BADC("5;a=\"x\r\nhello\r\n0\r\n\r\n"),
    BADC("5;a=\"x\"y\r\nhello\r\n0\r\n\r\n"),
    BADC("5;a=\"x\x01\"\r\nhello\r\n0\r\n\r\n"),
    BADC("5;a=\"x\\\x01\"\r\nhello\r\n0\r\n\r\n"),
    BADC("5;a@=b\r\nhello\r\n0\r\n\r\n"),
    BADC("5;a=b@\r\nhello\r\n0\r\n\r\n"),
    BADC("5;a\n"),
    BADC("0\r\n X: a\r\n\r\n"),
    BADC("0\r\nX : a\r\n\r\n"),
    BADC("0\r\n: a\r\n\r\n"),
    BADC("0\r\nX: a\n\r\n"),
    BADC("0\r\nX: a\rb\r\n\r\n"),
    BADC("0\r\nX: a\x01\r\n\r\n"),
    BADC("0\r\nX: a\x7f\r\n\r\n"),
    BADC("0\r\nX\r\n\r\n"),
    BADC("0\r\n\n"),
    BADC("0\r\n\r\r"),
    BADC("0\r\n\rX"),
    BADC("0\n\r\n"),
    BADC("0\r\nX: a\r\n\n"),
};

static void check_bad(const char *in, size_t len, const char *what)
{
    struct outcome o;
    size_t cuts[2] = {len, len};
    feed(in, len, cuts, 1, &o);
    cr_expect_eq(o.result, RLB_CHUNKED_ERROR, "%s whole: %d", what, o.result);
    size_t *bytes = malloc(len * sizeof(*bytes));
    for (size_t i = 0; i < len; i++)
        bytes[i] = i + 1;
    feed(in, len, bytes, len, &o);
    free(bytes);
    cr_expect_eq(o.result, RLB_CHUNKED_ERROR, "%s bytewise", what);
    for (size_t a = 0; a <= len; a++) {
        cuts[0] = a;
        feed(in, len, cuts, 2, &o);
        cr_expect_eq(o.result, RLB_CHUNKED_ERROR, "%s split %zu", what, a);
    }
}

Test(chunked, malformed_framing_any_split)
{
    for (size_t i = 0; i < RLB_ARRAY_SIZE(bad); i++) {
        char what[64];
        snprintf(what, sizeof(what), "bad case %zu", i);
        check_bad(bad[i].in, bad[i].len, what);
    }
}

Test(chunked, size_line_too_long)
{
    static char in[5000];
    size_t n = 0;
    in[n++] = '5';
    in[n++] = ';';
    in[n++] = 'a';
    in[n++] = '=';
    while (n < 4094)
        in[n++] = 'x';
    memcpy(in + n, "\r\nhello\r\n0\r\n\r\n", 15);
    /* 4094 + CRLF = 4096: the longest size line accepted. */
    struct outcome o;
    size_t cut = n + 15;
    feed(in, n + 15, &cut, 1, &o);
    cr_expect_eq(o.result, RLB_CHUNKED_DONE);
    cr_expect_eq(o.payload_len, 5);

    in[n++] = 'x';
    memcpy(in + n, "\r\nhello\r\n0\r\n\r\n", 15);
    check_bad(in, n + 15, "size line 4097");
}

Test(chunked, trailer_too_large)
{
    static char in[10000];
    size_t n = 0;
    memcpy(in, "0\r\nA: b\r\nY: ", 12);
    n = 12;
    /* 8 KiB trailer section including its final CRLF is accepted... */
    size_t pad = 8192 - 6 - 7;
    memset(in + n, 'p', pad);
    n += pad;
    memcpy(in + n, "\r\n\r\n", 4);
    n += 4;
    cr_assert_eq(n, 3 + 8192);
    struct outcome o;
    feed(in, n, &n, 1, &o);
    cr_expect_eq(o.result, RLB_CHUNKED_DONE, "%d", o.result);
    cr_expect_eq(o.consumed, n);

    /* ...one byte more is not. */
    memmove(in + n - 4, in + n - 5, 5);
    n++;
    struct outcome o2;
    feed(in, n, &n, 1, &o2);
    cr_expect_eq(o2.result, RLB_CHUNKED_ERROR);
}

Test(chunked, error_is_sticky)
{
    struct rlb_chunked_decoder dec;
    rlb_chunked_init(&dec);
    size_t used, dlen;
    const char *data;
    cr_expect_eq(rlb_chunked_decode(&dec, "z", 1, &used, &data, &dlen), RLB_CHUNKED_ERROR);
    cr_expect_str_eq(dec.error_reason, "invalid chunk size");
    cr_expect_eq(rlb_chunked_decode(&dec, "0\r\n\r\n", 5, &used, &data, &dlen), RLB_CHUNKED_ERROR);
    cr_expect_eq(used, 0);
}
