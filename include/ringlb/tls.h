/* TLS library glue (BoringSSL). Termination arrives with the TLS issue;
 * for now the library is linked and identified at start-up. */
#ifndef RINGLB_TLS_H
#define RINGLB_TLS_H

/* "BoringSSL" or "none" when built without it. */
const char *rlb_tls_library(void);

#endif
