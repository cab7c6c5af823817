#include <ringlb/log.h>

#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int rlb_log_level = RLB_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void rlb_log(int level, const char *fmt, ...)
{
    if (level > rlb_log_level)
        return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ringlb[%d] %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (int)getpid(),
                     level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    size_t room = sizeof(line) - (size_t)n - 1; /* one byte kept for the newline */
    int m = vsnprintf(line + n, room, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : ((size_t)m < room ? (size_t)m : room - 1));
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
