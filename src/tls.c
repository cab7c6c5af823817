#include <ringlb/tls.h>

#ifdef RLB_HAVE_BORINGSSL
#include <openssl/crypto.h>

const char *rlb_tls_library(void)
{
    return OpenSSL_version(OPENSSL_VERSION);
}
#else
const char *rlb_tls_library(void)
{
    return "none";
}
#endif
