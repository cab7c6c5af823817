/* libFuzzer harness for the configuration loader: whatever the bytes, it
 * either yields a snapshot that frees cleanly or refuses with a message that
 * starts "FILE:LINE:COLUMN: " (the promise operators rely on), and never
 * crashes or leaks. */
#include <ringlb/config.h>
#include <ringlb/log.h>

#include <stdio.h>
#include <string.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char err[RLB_CONFIG_ERR_MAX];
    rlb_log_level = RLB_LOG_ERROR;
    err[0] = '\0';
    struct rlb_config *cfg = rlb_config_load_string("f.yaml", (const char *)data, size, err, sizeof(err));
    if (cfg) {
        CHECK(cfg->num_listeners > 0 && cfg->num_pools > 0 && cfg->num_vhosts > 0);
        rlb_config_free(cfg);
        return 0;
    }
    unsigned line = 0, column = 0;
    int used = 0;
    CHECK(sscanf(err, "f.yaml:%u:%u: %n", &line, &column, &used) == 2 && used > 0);
    CHECK(line >= 1 && column >= 1 && err[used] != '\0');
    return 0;
}
