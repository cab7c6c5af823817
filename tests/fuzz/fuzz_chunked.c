/* libFuzzer harness for rlb_chunked_decode: the input decoded whole, byte by
 * byte and in pieces chosen by the fuzzer must give the same verdict, the same
 * body length and the same payload. */
#include <ringlb/api.h>
#include <ringlb/http1.h>

#include <string.h>

#include "fuzz.h"

struct run {
    int result;
    size_t consumed;
    size_t payload_len;
    char *payload;
};

/* <step> 0 feeds everything at once; otherwise pieces of step bytes, step
 * taken from <steps> in turn so that splits vary. */
static void decode(const char *buf, size_t len, const uint8_t *steps, size_t nsteps, struct run *out)
{
    struct rlb_chunked_decoder dec;
    rlb_chunked_init(&dec);
    out->result = RLB_CHUNKED_MORE;
    out->consumed = 0;
    out->payload_len = 0;

    size_t pos = 0, k = 0;
    while (pos < len) {
        size_t piece = len - pos;
        if (nsteps) {
            size_t s = (size_t)steps[k++ % nsteps] % 17 + 1;
            if (s < piece)
                piece = s;
        }
        const char *p = buf + pos;
        size_t off = 0;
        int r;
        for (;;) {
            size_t used = 0, dlen = 0;
            const char *d = NULL;
            r = rlb_chunked_decode(&dec, p + off, piece - off, &used, &d, &dlen);
            CHECK(used <= piece - off);
            if (r == RLB_CHUNKED_DATA) {
                CHECK(dlen > 0 && dlen <= used);
                CHECK(d >= p + off && d + dlen <= p + off + used);
                memcpy(out->payload + out->payload_len, d, dlen);
                out->payload_len += dlen;
                off += used;
                continue;
            }
            off += used;
            break;
        }
        pos += off;
        out->result = r;
        if (r == RLB_CHUNKED_ERROR) {
            CHECK(dec.error_reason != NULL);
            break;
        }
        if (r == RLB_CHUNKED_DONE)
            break;
        CHECK(r == RLB_CHUNKED_MORE && off == piece);
    }
    out->consumed = pos;
    CHECK(out->consumed <= len && out->payload_len <= out->consumed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* First byte: how many split-size bytes follow; the rest is the body. */
    size_t nsteps = size ? data[0] % 8 : 0;
    if (size < 1 + nsteps)
        return 0;
    const uint8_t *steps = data + 1;
    const char *buf = (const char *)data + 1 + nsteps;
    size_t len = size - 1 - nsteps;
    static const uint8_t one[1] = {0};

    struct run a, b, c;
    a.payload = malloc(len + 1);
    b.payload = malloc(len + 1);
    c.payload = malloc(len + 1);
    decode(buf, len, NULL, 0, &a);
    decode(buf, len, one, 1, &b);
    decode(buf, len, steps, nsteps, &c);
    CHECK(a.result == b.result && a.result == c.result);
    if (a.result != RLB_CHUNKED_ERROR) {
        CHECK(a.consumed == b.consumed && a.consumed == c.consumed);
        CHECK(a.payload_len == b.payload_len && a.payload_len == c.payload_len);
        CHECK(memcmp(a.payload, b.payload, a.payload_len) == 0);
        CHECK(memcmp(a.payload, c.payload, a.payload_len) == 0);
    }
    free(a.payload);
    free(b.payload);
    free(c.payload);
    return 0;
}
