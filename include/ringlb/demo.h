/* The embedded demo: two tiny HTTP backends on loopback, so that
 * `ringlb --demo` shows load balancing with nothing else installed. */
#ifndef RINGLB_DEMO_H
#define RINGLB_DEMO_H

#include <ringlb/api.h>

/* Starts the backends on free loopback ports (a thread serving both) and
 * writes "127.0.0.1:PORT" for each into <addrs>. Returns 0 or -errno. */
int rlb_demo_start_backends(char addrs[2][32]);

#endif
