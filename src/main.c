/* ringlb: command line, configuration, then the server. */
#include <ringlb/config.h>
#include <ringlb/demo.h>
#include <ringlb/log.h>
#include <ringlb/server.h>
#include <ringlb/tls.h>

#include <getopt.h>
#include <liburing.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BACKENDS 256

static void usage(FILE *out)
{
    fprintf(out,
            "Usage:\n"
            "  ringlb -c FILE            run with a YAML configuration\n"
            "  ringlb -t -c FILE         check a configuration and exit (0: valid, 1: invalid)\n"
            "  ringlb --listen ADDR --backend ADDR [--backend ADDR ...] [--workers N]\n"
            "                            one-line mode: one listener, one round-robin pool\n"
            "  ringlb --demo [--listen ADDR]\n"
            "                            start two built-in backends and balance them (default 127.0.0.1:8080)\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE     configuration file (see docs/configuration.md)\n"
            "  -t, --test            validate only\n"
            "  -l, --listen ADDR     listen address, e.g. 127.0.0.1:8080, [::]:8080, *:80\n"
            "  -b, --backend ADDR    backend address; ADDR@WEIGHT sets a weight (repeatable)\n"
            "  -w, --workers N       worker threads (default: one per CPU)\n"
            "      --balance ALG     rr (default), leastconn, p2c, or hash[:KEY] with KEY one of client_ip\n"
            "                        (default), uri, header:NAME, cookie:NAME (Maglev consistent hashing)\n"
            "      --zerocopy-min SIZE  send-zero-copy for sends of at least SIZE (e.g. 64k; default: never)\n"
            "      --splice-min SIZE    splice(2) response bodies of at least SIZE (default 128k; 0: never)\n"
            "      --tls-cert FILE   terminate TLS on the listener with this PEM certificate chain...\n"
            "      --tls-key FILE    ...and this PEM private key\n"
            "      --ktls on|off     hand TLS records to the kernel after the handshake (default on)\n"
            "      --cache SIZE      cache responses (RFC 9111) in SIZE of memory per worker, e.g. 256m\n"
            "  -v, --verbose         debug logging\n"
            "  -q, --quiet           errors and warnings only\n"
            "  -h, --help            this text\n"
            "  -V, --version         version and libraries\n");
}

static void print_demo_banner(const struct rlb_config *cfg, uint32_t workers)
{
    const char *addr = cfg->listeners[0].addr.text;
    fprintf(stderr,
            "\n"
            "  ringlb demo is up: %u worker%s in front of two built-in backends (%s, %s).\n"
            "\n"
            "    curl -i http://%s/\n"
            "\n"
            "  Run it a few times: the body names the backend that answered, alternating\n"
            "  demo-backend-1 and demo-backend-2 (round-robin; each worker keeps its own\n"
            "  rotation). The backends' Server header is hidden behind ringlb.\n",
            workers, workers == 1 ? "" : "s", cfg->pools[0].backends[0].addr.text,
            cfg->pools[0].backends[1].addr.text, addr);
    if (cfg->cache.enabled)
        fprintf(stderr,
                "\n    curl -i http://%s/static/logo.png\n"
                "\n"
                "  Twice: the backends mark /static/ cacheable for 60 s, so the second answer is\n"
                "  X-Cache: HIT, served from this worker's cache (same request number in the body).\n",
                addr);
    fprintf(stderr, "  Stop with Ctrl-C.\n\n");
}

/* A byte-count option ("64k", "0"): parsed into <out>, or a message and false. */
static bool size_option(const char *name, const char *text, uint64_t *out)
{
    if (rlb_size_parse(text, out) == 0 && *out <= UINT32_MAX)
        return true;
    fprintf(stderr, "ringlb: %s expects a size like 64k or 0, got \"%s\"\n", name, text);
    return false;
}

/* What SIGHUP reads again: the same file, or the same one-line options (whose certificate files may have been
 * replaced). */
static const char *reload_path;
static struct rlb_oneline_args reload_args;
static int64_t reload_zerocopy = -1, reload_splice = -1;

static struct rlb_config *reload_config(char *err, size_t errlen)
{
    struct rlb_config *cfg = reload_path ? rlb_config_load_file(reload_path, err, errlen)
                                         : rlb_config_from_oneline(&reload_args, err, errlen);
    if (cfg && reload_zerocopy >= 0)
        cfg->buffers.zerocopy_min = (uint32_t)reload_zerocopy;
    if (cfg && reload_splice >= 0)
        cfg->buffers.splice_min = (uint32_t)reload_splice;
    return cfg;
}

int main(int argc, char **argv)
{
    /* Blocked before any thread exists, so every thread inherits the mask
     * and only the main thread's sigwait sees these signals. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
        {"listen", required_argument, NULL, 'l'}, {"backend", required_argument, NULL, 'b'},
        {"workers", required_argument, NULL, 'w'}, {"demo", no_argument, NULL, 'D'},
        {"verbose", no_argument, NULL, 'v'},      {"quiet", no_argument, NULL, 'q'},
        {"zerocopy-min", required_argument, NULL, 'Z'}, {"balance", required_argument, NULL, 'B'},
        {"splice-min", required_argument, NULL, 'S'},
        {"tls-cert", required_argument, NULL, 'C'}, {"tls-key", required_argument, NULL, 'K'},
        {"ktls", required_argument, NULL, 'k'},   {"cache", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    bool test_only = false, demo = false;
    uint64_t zerocopy_min = 0, splice_min = 0;
    bool zerocopy_set = false, splice_set = false;
    struct rlb_oneline_args one = {.ktls = -1};
    const char *backends[MAX_BACKENDS];
    one.backends = backends;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:tl:b:w:vqhV", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 't':
            test_only = true;
            break;
        case 'l':
            one.listen = optarg;
            break;
        case 'b':
            if (one.num_backends == MAX_BACKENDS) {
                fprintf(stderr, "ringlb: at most %d --backend options\n", MAX_BACKENDS);
                return 2;
            }
            backends[one.num_backends++] = optarg;
            break;
        case 'w': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 1024) {
                fprintf(stderr, "ringlb: --workers expects 1..1024, got \"%s\"\n", optarg);
                return 2;
            }
            one.workers = (uint32_t)n;
            break;
        }
        case 'D':
            demo = true;
            break;
        case 'C':
            one.tls_cert = optarg;
            break;
        case 'K':
            one.tls_key = optarg;
            break;
        case 'k':
            if (strcmp(optarg, "on") != 0 && strcmp(optarg, "off") != 0) {
                fprintf(stderr, "ringlb: --ktls expects on or off, got \"%s\"\n", optarg);
                return 2;
            }
            one.ktls = strcmp(optarg, "on") == 0;
            break;
        case 'M':
            one.cache = optarg;
            break;
        case 'B':
            one.balance = optarg;
            break;
        case 'S':
            if (!size_option("--splice-min", optarg, &splice_min))
                return 2;
            splice_set = true;
            break;
        case 'Z':
            if (!size_option("--zerocopy-min", optarg, &zerocopy_min))
                return 2;
            zerocopy_set = true;
            break;
        case 'v':
            rlb_log_level = RLB_LOG_DEBUG;
            break;
        case 'q':
            rlb_log_level = RLB_LOG_WARN;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("ringlb %s\nio_uring via liburing, TLS library: %s\n", RLB_VERSION, rlb_tls_library());
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ringlb: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (config_path && (one.listen || one.num_backends || demo || zerocopy_set || splice_set || one.balance ||
                        one.tls_cert || one.tls_key || one.ktls >= 0 || one.cache)) {
        fprintf(stderr, "ringlb: -c cannot be combined with one-line options (--listen, --backend, --demo, --balance, "
                        "--zerocopy-min, --splice-min, --tls-cert, --tls-key, --ktls, --cache)\n");
        return 2;
    }

    char err[RLB_CONFIG_ERR_MAX] = "";
    struct rlb_config *cfg = NULL;
    char demo_addrs[2][32];
    if (config_path) {
        cfg = rlb_config_load_file(config_path, err, sizeof(err));
    } else if (demo) {
        if (one.num_backends) {
            fprintf(stderr, "ringlb: --demo brings its own backends\n");
            return 2;
        }
        int rc = rlb_demo_start_backends(demo_addrs);
        if (rc < 0) {
            fprintf(stderr, "ringlb: demo backends: %s\n", strerror(-rc));
            return 1;
        }
        backends[0] = demo_addrs[0];
        backends[1] = demo_addrs[1];
        one.num_backends = 2;
        if (!one.listen)
            one.listen = "127.0.0.1:8080";
        cfg = rlb_config_from_oneline(&one, err, sizeof(err));
        if (cfg) {
            /* Show what hiding the origin looks like. */
            cfg->vhosts[0].routes[0].server_mode = RLB_SERVER_HIDE;
            free(cfg->source);
            cfg->source = strdup("<demo>");
        }
    } else if (one.listen || one.num_backends) {
        if (!one.listen || !one.num_backends) {
            fprintf(stderr, "ringlb: one-line mode needs --listen and at least one --backend\n");
            return 2;
        }
        cfg = rlb_config_from_oneline(&one, err, sizeof(err));
    } else {
        usage(stderr);
        return 2;
    }
    if (!cfg) {
        fprintf(stderr, "ringlb: %s\n", err);
        return 1;
    }
    if (zerocopy_set)
        cfg->buffers.zerocopy_min = (uint32_t)zerocopy_min;
    if (splice_set)
        cfg->buffers.splice_min = (uint32_t)splice_min;
    if (test_only) {
        printf("ringlb: %s: configuration is valid (%u listener%s, %u pool%s, %u virtual host%s)\n", cfg->source,
               cfg->num_listeners, cfg->num_listeners == 1 ? "" : "s", cfg->num_pools, cfg->num_pools == 1 ? "" : "s",
               cfg->num_vhosts, cfg->num_vhosts == 1 ? "" : "s");
        rlb_config_free(cfg);
        return 0;
    }
    reload_path = config_path;
    reload_args = one;
    reload_args.backends = backends;
    reload_zerocopy = zerocopy_set ? (int64_t)zerocopy_min : -1;
    reload_splice = splice_set ? (int64_t)splice_min : -1;
    int status = rlb_server_run(cfg, demo ? print_demo_banner : NULL, demo ? NULL : reload_config);
    rlb_config_free(cfg);
    return status;
}
