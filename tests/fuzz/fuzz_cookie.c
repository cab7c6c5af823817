/* libFuzzer harness for the Cookie field parser used by hash balancing and
 * A/B splits: any value found lies inside the field and the name it was found
 * under matches exactly. The first input byte picks the name's length. */
#include <ringlb/route.h>

#include <string.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t name_len = (size_t)(data[0] % 8) + 1;
    if (size < 1 + name_len)
        return 0;
    const char *name = (const char *)data + 1;
    struct rlb_http_header h = {
        .name = "Cookie",
        .name_len = 6,
        .value = (const char *)data + 1 + name_len,
        .value_len = (uint32_t)(size - 1 - name_len),
    };
    struct rlb_str v;
    if (rlb_cookie_find(&h, 1, name, name_len, &v)) {
        CHECK(v.ptr >= h.value && v.ptr + v.len <= h.value + h.value_len);
        /* The name sits right before "=" (and a quote, if one was stripped). */
        const char *eq = v.ptr - 1;
        if (eq >= h.value && *eq == '"' && eq - 1 >= h.value && eq[-1] == '=')
            eq--;
        CHECK(eq - (ptrdiff_t)name_len >= h.value && *eq == '=' && memcmp(eq - name_len, name, name_len) == 0);
    }
    return 0;
}
