#include <ringlb/api.h>

#include <stdio.h>
#include <stdlib.h>

void rlb_bug(const char *file, int line, const char *what)
{
    fprintf(stderr, "ringlb: BUG at %s:%d: %s\n", file, line, what);
    abort();
}
