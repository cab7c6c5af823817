/* Logging to stderr. Workers never block on it for long: lines are short and
 * written with one write(2) each, which is atomic for pipes below PIPE_BUF. */
#ifndef RINGLB_LOG_H
#define RINGLB_LOG_H

#include <ringlb/api.h>

enum rlb_log_level { RLB_LOG_ERROR = 0, RLB_LOG_WARN, RLB_LOG_INFO, RLB_LOG_DEBUG };

extern int rlb_log_level;

void rlb_log(int level, const char *fmt, ...) RLB_PRINTF(2, 3);

#define rlb_log_error(...) rlb_log(RLB_LOG_ERROR, __VA_ARGS__)
#define rlb_log_warn(...) rlb_log(RLB_LOG_WARN, __VA_ARGS__)
#define rlb_log_info(...) rlb_log(RLB_LOG_INFO, __VA_ARGS__)
#define rlb_log_debug(...)                                                                                             \
    do {                                                                                                               \
        if (rlb_unlikely(rlb_log_level >= RLB_LOG_DEBUG))                                                              \
            rlb_log(RLB_LOG_DEBUG, __VA_ARGS__);                                                                       \
    } while (0)

#endif
