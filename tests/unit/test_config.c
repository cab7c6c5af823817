/* Configuration: the value parsers, the YAML loader (every value and every kind of error, with its position), the
 * one-line builder, the ordering of vhosts and routes, and the example files in configs/. */
#include <criterion/criterion.h>

#include <ringlb/api.h>
#include <ringlb/config.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

static char err[RLB_CONFIG_ERR_MAX];

static struct rlb_config *load(const char *yaml)
{
    err[0] = '\0';
    return rlb_config_load_string("x.yaml", yaml, strlen(yaml), err, sizeof(err));
}

/* Every failure must name where it happened and say what was wrong. */
static void expect_error(const char *yaml, const char *prefix, const char *phrase)
{
    struct rlb_config *cfg = load(yaml);
    cr_assert_null(cfg, "expected an error \"%s%s\", but the configuration loaded", prefix, phrase);
    cr_assert(strncmp(err, prefix, strlen(prefix)) == 0, "expected prefix \"%s\", got \"%s\"", prefix, err);
    cr_assert(strstr(err, phrase) != NULL, "expected \"%s\" in \"%s\"", phrase, err);
}

static struct rlb_config *load_ok(const char *yaml)
{
    struct rlb_config *cfg = load(yaml);
    cr_assert_not_null(cfg, "unexpected error: %s", err);
    return cfg;
}

/* Short valid sections, each one line per item, to build error cases with predictable line numbers. */
#define LISTENERS "listeners:\n  - address: 127.0.0.1:8080\n"
#define POOLS "pools:\n  - name: shop\n    backends: [127.0.0.1:9001]\n"
#define VHOSTS "vhosts:\n  - hosts: [\"*\"]\n    routes: [{path: /, pool: shop}]\n"
#define BASE LISTENERS POOLS VHOSTS /* 8 lines */

/* ---------------------------------------------------------------------------------------------------------------
 * Value parsers
 */

Test(config_values, duration)
{
    static const struct {
        const char *text;
        int rc;
        uint32_t ms;
    } cases[] = {
        {"0", 0, 0},           {"250", 0, 250},
        {"250ms", 0, 250},     {"10s", 0, 10000},
        {"2m", 0, 120000},     {"1h", 0, 3600000},
        {"0s", 0, 0},          {"4294967295", 0, UINT32_MAX},
        {"4294967296", -1, 0}, {"1193h", 0, 4294800000u},
        {"1194h", -1, 0},      {"", -1, 0},
        {"ten", -1, 0},        {"10 s", -1, 0},
        {"s", -1, 0},          {"ms", -1, 0},
        {"-1s", -1, 0},        {"+1s", -1, 0},
        {"1.5s", -1, 0},       {"10S", -1, 0},
        {"10d", -1, 0},        {"10sec", -1, 0},
        {"0x10", -1, 0},       {"99999999999999999999", -1, 0},
    };
    for (size_t i = 0; i < RLB_ARRAY_SIZE(cases); i++) {
        uint32_t ms = 12345;
        int rc = rlb_duration_parse_ms(cases[i].text, &ms);
        cr_expect_eq(rc, cases[i].rc, "\"%s\": rc %d", cases[i].text, rc);
        if (cases[i].rc == 0)
            cr_expect_eq(ms, cases[i].ms, "\"%s\": %u ms", cases[i].text, ms);
    }
    cr_expect_eq(rlb_duration_parse_ms(NULL, &(uint32_t){0}), -1);
}

Test(config_values, size)
{
    static const struct {
        const char *text;
        int rc;
        uint64_t size;
    } cases[] = {
        {"0", 0, 0},
        {"16384", 0, 16384},
        {"16k", 0, 16384},
        {"16K", 0, 16384},
        {"1m", 0, 1048576},
        {"1M", 0, 1048576},
        {"2g", 0, 2ull << 30},
        {"18446744073709551615", 0, UINT64_MAX},
        {"18446744073709551616", -1, 0},
        {"17179869184g", -1, 0},
        {"", -1, 0},
        {"k", -1, 0},
        {"16kb", -1, 0},
        {"16 k", -1, 0},
        {"-1", -1, 0},
        {"1.5k", -1, 0},
        {"16t", -1, 0},
        {"sixteen", -1, 0},
    };
    for (size_t i = 0; i < RLB_ARRAY_SIZE(cases); i++) {
        uint64_t v = 12345;
        int rc = rlb_size_parse(cases[i].text, &v);
        cr_expect_eq(rc, cases[i].rc, "\"%s\": rc %d", cases[i].text, rc);
        if (cases[i].rc == 0)
            cr_expect_eq(v, cases[i].size, "\"%s\": %llu", cases[i].text, (unsigned long long)v);
    }
}

Test(config_values, sockaddr)
{
    static const struct {
        const char *text;
        int rc;
        int family;
        const char *norm;
    } cases[] = {
        {"127.0.0.1:80", 0, AF_INET, "127.0.0.1:80"},
        {"10.1.2.3:65535", 0, AF_INET, "10.1.2.3:65535"},
        {"*:8080", 0, AF_INET, "0.0.0.0:8080"},
        {"0.0.0.0:8080", 0, AF_INET, "0.0.0.0:8080"},
        {"localhost:9001", 0, AF_INET, "127.0.0.1:9001"},
        {"LocalHost:9001", 0, AF_INET, "127.0.0.1:9001"},
        {"[::1]:80", 0, AF_INET6, "[::1]:80"},
        {"[::]:443", 0, AF_INET6, "[::]:443"},
        {"[0:0:0:0:0:0:0:1]:80", 0, AF_INET6, "[::1]:80"},
        {"[2001:DB8::1]:8443", 0, AF_INET6, "[2001:db8::1]:8443"},
        {"127.0.0.1:0", -1, 0, NULL},
        {"127.0.0.1:65536", -1, 0, NULL},
        {"127.0.0.1:x", -1, 0, NULL},
        {"127.0.0.1:", -1, 0, NULL},
        {"127.0.0.1", -1, 0, NULL},
        {"127.0.0.1:-80", -1, 0, NULL},
        {"127.0.0.1:+80", -1, 0, NULL},
        {"127.0.0.1:80 ", -1, 0, NULL},
        {"127.0.0.1:0000080", -1, 0, NULL},
        {":80", -1, 0, NULL},
        {"[::1]", -1, 0, NULL},
        {"[::1]:", -1, 0, NULL},
        {"::1:80", -1, 0, NULL},
        {"[::1:80", -1, 0, NULL},
        {"[127.0.0.1]:80", -1, 0, NULL},
        {"[]:80", -1, 0, NULL},
        {"256.0.0.1:80", -1, 0, NULL},
        {"1.2.3:80", -1, 0, NULL},
        {"example.com:80", -1, 0, NULL}, /* no DNS, ever */
        {"", -1, 0, NULL},
    };
    for (size_t i = 0; i < RLB_ARRAY_SIZE(cases); i++) {
        struct rlb_sockaddr a;
        int rc = rlb_sockaddr_parse(cases[i].text, &a);
        cr_expect_eq(rc, cases[i].rc, "\"%s\": rc %d", cases[i].text, rc);
        if (rc != 0 || cases[i].rc != 0)
            continue;
        cr_expect_eq(a.ss.ss_family, cases[i].family, "\"%s\"", cases[i].text);
        cr_expect_str_eq(a.text, cases[i].norm);
        cr_expect_eq(a.len, cases[i].family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    }
    struct rlb_sockaddr a;
    cr_assert_eq(rlb_sockaddr_parse("[::1]:9001", &a), 0);
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a.ss;
    cr_expect_eq(ntohs(sin6->sin6_port), 9001);
    cr_expect(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
    cr_assert_eq(rlb_sockaddr_parse("localhost:80", &a), 0);
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&a.ss;
    cr_expect_eq(ntohs(sin->sin_port), 80);
    cr_expect_eq(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
    cr_expect_eq(rlb_sockaddr_parse(NULL, &a), -1);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Loading: values
 */

Test(config_load, defaults)
{
    struct rlb_config *cfg = load_ok(BASE);
    cr_expect_str_eq(cfg->source, "x.yaml");
    cr_expect_eq(cfg->workers, 0);
    cr_expect_null(cfg->cpus);
    cr_expect_eq(cfg->num_cpus, 0);
    cr_expect_eq(cfg->max_connections, 16384);
    cr_expect_str_eq(cfg->via_name, "ringlb");
    cr_expect_eq(cfg->limits.max_request_line, 8192);
    cr_expect_eq(cfg->limits.max_head_size, 65536);
    cr_expect_eq(cfg->limits.max_headers, 100);
    cr_expect_eq(cfg->timeouts.client_header, 10000);
    cr_expect_eq(cfg->timeouts.client_keepalive, 60000);
    cr_expect_eq(cfg->timeouts.upstream_connect, 3000);
    cr_expect_eq(cfg->timeouts.upstream_response, 60000);
    cr_expect_eq(cfg->timeouts.body_idle, 60000);
    cr_expect_eq(cfg->timeouts.drain, 10000);
    cr_expect_eq(cfg->buffers.count, 1024);
    cr_expect_eq(cfg->buffers.size, 32768);
    cr_assert_eq(cfg->num_listeners, 1);
    cr_expect_str_eq(cfg->listeners[0].name, "listener0");
    cr_expect_eq(cfg->listeners[0].backlog, 4096);
    cr_assert_eq(cfg->num_pools, 1);
    cr_expect_eq(cfg->pools[0].balance, RLB_BALANCE_WRR);
    cr_expect_eq(cfg->pools[0].keepalive_max_idle, 32);
    cr_expect_eq(cfg->pools[0].keepalive_idle_timeout_ms, 60000);
    cr_assert_eq(cfg->pools[0].num_backends, 1);
    cr_expect_eq(cfg->pools[0].backends[0].weight, 1);
    cr_assert_eq(cfg->num_vhosts, 1);
    cr_expect_eq(cfg->vhosts[0].listener_mask, 1);
    cr_assert_eq(cfg->vhosts[0].num_routes, 1);
    const struct rlb_route_cfg *r = &cfg->vhosts[0].routes[0];
    cr_expect_str_eq(r->path_prefix, "/");
    cr_expect_eq(r->path_prefix_len, 1);
    cr_expect_eq(r->pool, 0);
    cr_expect_null(r->set_host);
    cr_expect_eq(r->server_mode, RLB_SERVER_PASS);
    cr_expect_null(r->server_value);
    cr_expect_eq(r->hide_powered_by, false);
    rlb_config_free(cfg);
}

/* The example of docs/configuration.md, verbatim except for its route: the docs pair server_value with
 * server_header: hide, which the rules reject (see docs_example_server_value_needs_replace). */
static const char docs_example[] = "workers: auto\n"
                                   "cpus: [0, 1]\n"
                                   "max_connections: 16384\n"
                                   "via: ringlb\n"
                                   "limits:\n"
                                   "  max_request_line: 8192\n"
                                   "  max_header_size: 64k\n"
                                   "  max_headers: 100\n"
                                   "timeouts:\n"
                                   "  client_header: 10s\n"
                                   "  client_keepalive: 60s\n"
                                   "  upstream_connect: 3s\n"
                                   "  upstream_response: 60s\n"
                                   "  body_idle: 60s\n"
                                   "  drain: 10s\n"
                                   "buffers:\n"
                                   "  count: 1024\n"
                                   "  size: 16k\n"
                                   "listeners:\n"
                                   "  - name: web\n"
                                   "    address: 0.0.0.0:8080\n"
                                   "    backlog: 4096\n"
                                   "pools:\n"
                                   "  - name: shop\n"
                                   "    balance: round_robin\n"
                                   "    keepalive:\n"
                                   "      max_idle: 32\n"
                                   "      idle_timeout: 60s\n"
                                   "    backends:\n"
                                   "      - address: 127.0.0.1:9001\n"
                                   "        weight: 5\n"
                                   "      - 127.0.0.1:9002\n"
                                   "vhosts:\n"
                                   "  - hosts: [\"shop.example.com\", \"*.example.com\"]\n"
                                   "    listeners: [web]\n"
                                   "    routes:\n"
                                   "      - path: /\n"
                                   "        pool: shop\n"
                                   "        set_host: shop.internal\n"
                                   "        server_header: SERVER_MODE\n" /* line 40 */
                                   "        server_value: ringlb\n"
                                   "        hide_powered_by: true\n";

static char *docs_with_mode(const char *mode)
{
    static char buf[sizeof(docs_example) + 16];
    const char *at = strstr(docs_example, "SERVER_MODE");
    snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - docs_example), docs_example, mode, at + strlen("SERVER_MODE"));
    return buf;
}

Test(config_load, docs_example)
{
    struct rlb_config *cfg = load_ok(docs_with_mode("replace"));
    cr_expect_eq(cfg->workers, 0);
    cr_assert_eq(cfg->num_cpus, 2);
    cr_expect_eq(cfg->cpus[0], 0);
    cr_expect_eq(cfg->cpus[1], 1);
    cr_expect_eq(cfg->limits.max_head_size, 65536);
    cr_expect_eq(cfg->buffers.size, 16384);
    cr_expect_str_eq(cfg->listeners[0].name, "web");
    cr_expect_str_eq(cfg->listeners[0].addr.text, "0.0.0.0:8080");
    cr_assert_eq(cfg->pools[0].num_backends, 2);
    cr_expect_eq(cfg->pools[0].backends[0].weight, 5);
    cr_expect_str_eq(cfg->pools[0].backends[1].addr.text, "127.0.0.1:9002");
    cr_expect_eq(cfg->pools[0].backends[1].weight, 1);
    const struct rlb_vhost_cfg *v = &cfg->vhosts[0];
    cr_assert_eq(v->num_hosts, 2);
    cr_expect_str_eq(v->hosts[0], "shop.example.com");
    cr_expect_str_eq(v->hosts[1], "*.example.com");
    const struct rlb_route_cfg *r = &v->routes[0];
    cr_expect_str_eq(r->set_host, "shop.internal");
    cr_expect_eq(r->server_mode, RLB_SERVER_REPLACE);
    cr_expect_str_eq(r->server_value, "ringlb");
    cr_expect(r->hide_powered_by);
    rlb_config_free(cfg);
}

Test(config_load, docs_example_server_value_needs_replace)
{
    expect_error(docs_with_mode("hide"), "x.yaml:41:23: ", "server_value is only used with server_header: replace");
}

static const char *source_root(void)
{
    const char *root = getenv("RINGLB_SOURCE_ROOT");
    return root != NULL && *root != '\0' ? root : ".";
}

static struct rlb_config *load_example(const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/configs/%s", source_root(), name);
    struct rlb_config *cfg = rlb_config_load_file(path, err, sizeof(err));
    cr_assert_not_null(cfg, "%s: %s (set RINGLB_SOURCE_ROOT to the source tree)", path, err);
    return cfg;
}

Test(config_files, full_yaml_every_field)
{
    struct rlb_config *cfg = load_example("full.yaml");
    cr_expect_eq(cfg->workers, 4);
    cr_assert_eq(cfg->num_cpus, 4);
    for (uint32_t i = 0; i < 4; i++)
        cr_expect_eq(cfg->cpus[i], (int32_t)i);
    cr_expect_eq(cfg->max_connections, 32768);
    cr_expect_str_eq(cfg->via_name, "edge-lb");
    cr_expect_eq(cfg->limits.max_request_line, 4096);
    cr_expect_eq(cfg->limits.max_head_size, 32768);
    cr_expect_eq(cfg->limits.max_headers, 64);
    cr_expect_eq(cfg->timeouts.client_header, 5000);
    cr_expect_eq(cfg->timeouts.client_keepalive, 30000);
    cr_expect_eq(cfg->timeouts.upstream_connect, 500);
    cr_expect_eq(cfg->timeouts.upstream_response, 120000);
    cr_expect_eq(cfg->timeouts.body_idle, 45000);
    cr_expect_eq(cfg->timeouts.drain, 15000);
    cr_expect_eq(cfg->buffers.count, 2048);
    cr_expect_eq(cfg->buffers.size, 32768);

    cr_assert_eq(cfg->num_listeners, 2);
    cr_expect_str_eq(cfg->listeners[0].name, "public");
    cr_expect_str_eq(cfg->listeners[0].addr.text, "0.0.0.0:8080");
    cr_expect_eq(cfg->listeners[0].addr.ss.ss_family, AF_INET);
    cr_expect_eq(cfg->listeners[0].backlog, 8192);
    cr_expect_str_eq(cfg->listeners[1].name, "local6");
    cr_expect_str_eq(cfg->listeners[1].addr.text, "[::1]:8081");
    cr_expect_eq(cfg->listeners[1].addr.ss.ss_family, AF_INET6);
    cr_expect_eq(cfg->listeners[1].backlog, 128);

    cr_assert_eq(cfg->num_pools, 3);
    const struct rlb_pool_cfg *web = &cfg->pools[0], *api = &cfg->pools[1], *fb = &cfg->pools[2];
    cr_expect_str_eq(web->name, "web");
    cr_expect_eq(web->balance, RLB_BALANCE_WRR);
    cr_expect_eq(web->keepalive_max_idle, 64);
    cr_expect_eq(web->keepalive_idle_timeout_ms, 90000);
    cr_assert_eq(web->num_backends, 2);
    cr_expect_str_eq(web->backends[0].addr.text, "10.0.0.1:8000");
    cr_expect_eq(web->backends[0].weight, 3);
    cr_expect_str_eq(web->backends[1].addr.text, "10.0.0.2:8000");
    cr_expect_eq(web->backends[1].weight, 2);
    cr_expect_str_eq(api->name, "api");
    cr_expect_eq(api->keepalive_max_idle, 0);
    cr_expect_eq(api->keepalive_idle_timeout_ms, 5000);
    cr_assert_eq(api->num_backends, 2);
    cr_expect_str_eq(api->backends[0].addr.text, "[::1]:9100");
    cr_expect_eq(api->backends[0].weight, 1);
    cr_expect_str_eq(api->backends[1].addr.text, "127.0.0.1:9101");
    cr_expect_str_eq(fb->name, "fallback");
    cr_expect_eq(fb->keepalive_max_idle, 32);
    cr_assert_eq(fb->num_backends, 1);

    cr_assert_eq(cfg->num_vhosts, 3);
    const struct rlb_vhost_cfg *exact = &cfg->vhosts[0], *wild = &cfg->vhosts[1], *any = &cfg->vhosts[2];
    cr_assert_eq(exact->num_hosts, 2);
    cr_expect_str_eq(exact->hosts[0], "www.example.com");
    cr_expect_str_eq(exact->hosts[1], "example.com");
    cr_expect_eq(exact->listener_mask, 1);
    cr_assert_eq(exact->num_routes, 2);
    const struct rlb_route_cfg *r_api = &exact->routes[0], *r_root = &exact->routes[1];
    cr_expect_str_eq(r_api->path_prefix, "/api/");
    cr_expect_eq(r_api->path_prefix_len, 5);
    cr_expect_eq(r_api->pool, 1);
    cr_expect_str_eq(r_api->set_host, "api.internal");
    cr_expect_eq(r_api->server_mode, RLB_SERVER_REPLACE);
    cr_expect_str_eq(r_api->server_value, "edge");
    cr_expect_eq(r_api->hide_powered_by, false);
    cr_expect_str_eq(r_root->path_prefix, "/");
    cr_expect_eq(r_root->pool, 0);
    cr_expect_null(r_root->set_host);
    cr_expect_eq(r_root->server_mode, RLB_SERVER_HIDE);
    cr_expect_null(r_root->server_value);
    cr_expect(r_root->hide_powered_by);
    cr_assert_eq(wild->num_hosts, 1);
    cr_expect_str_eq(wild->hosts[0], "*.example.com");
    cr_expect_eq(wild->listener_mask, 3);
    cr_expect_eq(wild->routes[0].pool, 0);
    cr_assert_eq(any->num_hosts, 1);
    cr_expect_str_eq(any->hosts[0], "*");
    cr_expect_eq(any->listener_mask, 2);
    cr_expect_eq(any->routes[0].pool, 2);
    cr_expect_eq(any->routes[0].server_mode, RLB_SERVER_PASS);
    cr_expect_eq(any->routes[0].hide_powered_by, false);
    rlb_config_free(cfg);
}

Test(config_files, minimal_yaml)
{
    struct rlb_config *cfg = load_example("minimal.yaml");
    cr_assert_eq(cfg->num_listeners, 1);
    cr_expect_str_eq(cfg->listeners[0].addr.text, "127.0.0.1:8080");
    cr_assert_eq(cfg->num_pools, 1);
    cr_assert_eq(cfg->pools[0].num_backends, 2);
    cr_expect_str_eq(cfg->pools[0].backends[0].addr.text, "127.0.0.1:9001");
    cr_expect_str_eq(cfg->pools[0].backends[1].addr.text, "127.0.0.1:9002");
    cr_assert_eq(cfg->num_vhosts, 1);
    cr_expect_str_eq(cfg->vhosts[0].hosts[0], "*");
    rlb_config_free(cfg);
}

Test(config_files, shop_yaml)
{
    struct rlb_config *cfg = load_example("shop.yaml");
    cr_assert_eq(cfg->num_pools, 3);
    cr_expect_str_eq(cfg->pools[0].name, "www");
    cr_expect_str_eq(cfg->pools[1].name, "api");
    cr_expect_str_eq(cfg->pools[2].name, "static");
    cr_expect_str_eq(cfg->vhosts[0].hosts[0], "shop.example.com");
    const struct rlb_route_cfg *r = &cfg->vhosts[0].routes[0];
    cr_expect_str_eq(r->path_prefix, "/static/");
    cr_expect_eq(r->pool, 2);
    cr_expect_str_eq(r->set_host, "assets.shop.internal");
    cr_expect_eq(r->server_mode, RLB_SERVER_HIDE);
    cr_expect(cfg->vhosts[0].routes[2].hide_powered_by);
    cr_expect_str_eq(cfg->vhosts[2].hosts[0], "*");
    rlb_config_free(cfg);
}

Test(config_files, every_example_loads)
{
    char dir[4096];
    const char *env = getenv("RINGLB_SOURCE_ROOT");
    snprintf(dir, sizeof(dir), "%s/configs", source_root());
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "cannot open %s%s", dir,
                       env == NULL ? " (RINGLB_SOURCE_ROOT is not set and ./configs is missing)" : "");
    int count = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n < 5 || (strcmp(de->d_name + n - 5, ".yaml") != 0 && (n < 4 || strcmp(de->d_name + n - 4, ".yml") != 0)))
            continue;
        char path[8192];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        struct rlb_config *cfg = rlb_config_load_file(path, err, sizeof(err));
        cr_expect_not_null(cfg, "%s", err);
        rlb_config_free(cfg);
        count++;
    }
    closedir(d);
    cr_expect_geq(count, 3, "expected at least minimal.yaml, full.yaml and shop.yaml in %s", dir);
}

Test(config_load, plain_backend_and_single_host_scalar)
{
    struct rlb_config *cfg = load_ok(LISTENERS POOLS "vhosts:\n  - hosts: Shop.Example.COM\n"
                                                     "    routes: [{path: /, pool: shop}]\n");
    cr_expect_str_eq(cfg->vhosts[0].hosts[0], "shop.example.com");
    cr_expect_str_eq(cfg->pools[0].backends[0].addr.text, "127.0.0.1:9001");
    rlb_config_free(cfg);
}

Test(config_load, workers_number_and_size_units)
{
    struct rlb_config *cfg = load_ok("workers: 8\nbuffers: {count: 64, size: 64k}\nlimits: {max_request_line: 1k}\n"
                                     "timeouts: {drain: 0}\n" BASE);
    cr_expect_eq(cfg->workers, 8);
    cr_expect_eq(cfg->buffers.count, 64);
    cr_expect_eq(cfg->buffers.size, 65536);
    cr_expect_eq(cfg->limits.max_request_line, 1024);
    cr_expect_eq(cfg->timeouts.drain, 0);
    rlb_config_free(cfg);
}

Test(config_load, same_host_on_different_listeners)
{
    struct rlb_config *cfg = load_ok("listeners:\n  - {name: a, address: 127.0.0.1:8080}\n"
                                     "  - {name: b, address: 127.0.0.1:8081}\n" POOLS "vhosts:\n"
                                     "  - {hosts: ['*'], listeners: [a], routes: [{path: /, pool: shop}]}\n"
                                     "  - {hosts: ['*'], listeners: b, routes: [{path: /, pool: shop}]}\n");
    cr_expect_eq(cfg->vhosts[0].listener_mask, 1);
    cr_expect_eq(cfg->vhosts[1].listener_mask, 2);
    rlb_config_free(cfg);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Ordering
 */

Test(config_order, vhosts_exact_then_longest_wildcard_then_any)
{
    struct rlb_config *cfg =
        load_ok(LISTENERS POOLS "vhosts:\n"
                                "  - {hosts: ['*'], routes: [{path: /, pool: shop}]}\n"
                                "  - {hosts: ['*.example.com'], routes: [{path: /, pool: shop}]}\n"
                                "  - {hosts: [a.b.example.com], routes: [{path: /, pool: shop}]}\n"
                                "  - {hosts: ['*.b.example.com'], routes: [{path: /, pool: shop}]}\n"
                                "  - {hosts: ['*.c.example.com'], routes: [{path: /, pool: shop}]}\n"
                                "  - {hosts: [exact.org], routes: [{path: /, pool: shop}]}\n"
                                "  - {hosts: ['*.com', b.example.com], routes: [{path: /, pool: shop}]}\n");
    static const char *const want[] = {
        "a.b.example.com", "exact.org", "b.example.com", "*.b.example.com", "*.c.example.com", "*.example.com", "*"};
    cr_assert_eq(cfg->num_vhosts, RLB_ARRAY_SIZE(want));
    for (uint32_t i = 0; i < cfg->num_vhosts; i++)
        cr_expect_str_eq(cfg->vhosts[i].hosts[0], want[i], "vhost %u", i);
    /* Inside a vhost too: the exact name before its wildcard. */
    cr_expect_str_eq(cfg->vhosts[2].hosts[1], "*.com");
    rlb_config_free(cfg);
}

Test(config_order, routes_longest_prefix_first)
{
    struct rlb_config *cfg = load_ok(LISTENERS "pools:\n  - {name: a, backends: [127.0.0.1:1]}\n"
                                               "  - {name: b, backends: [127.0.0.1:2]}\n"
                                               "vhosts:\n  - hosts: ['*']\n    routes:\n"
                                               "      - {path: /, pool: a}\n"
                                               "      - {path: /api/v2/, pool: b}\n"
                                               "      - {path: /api/, pool: a}\n"
                                               "      - {path: /static/, pool: b}\n"
                                               "      - {path: /api/v1/, pool: a}\n");
    static const struct {
        const char *path;
        uint32_t pool;
    } want[] = {{"/api/v2/", 1}, {"/static/", 1}, {"/api/v1/", 0}, {"/api/", 0}, {"/", 0}};
    const struct rlb_vhost_cfg *v = &cfg->vhosts[0];
    cr_assert_eq(v->num_routes, RLB_ARRAY_SIZE(want));
    for (uint32_t i = 0; i < v->num_routes; i++) {
        cr_expect_str_eq(v->routes[i].path_prefix, want[i].path, "route %u", i);
        cr_expect_eq(v->routes[i].path_prefix_len, strlen(want[i].path));
        cr_expect_eq(v->routes[i].pool, want[i].pool, "route %u", i);
    }
    rlb_config_free(cfg);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Errors: one test per kind, each with its exact position
 */

Test(config_errors, file_not_found)
{
    struct rlb_config *cfg = rlb_config_load_file("/nonexistent/ringlb.yaml", err, sizeof(err));
    cr_assert_null(cfg);
    cr_expect_str_eq(err, "/nonexistent/ringlb.yaml: cannot open: No such file or directory");
}

Test(config_errors, yaml_syntax)
{
    expect_error("workers: auto\nvia: a: b\n", "x.yaml:2:7: ", "mapping values are not allowed");
    expect_error("listeners: [\n", "x.yaml:2:1: ", "YAML syntax error");
    expect_error("a:\n\tb: 1\n", "x.yaml:2:1: ", "cannot start any token");
}

Test(config_errors, unquoted_star_gets_a_hint)
{
    expect_error("listeners:\n  - address: *:8080\n", "x.yaml:2:15: ", "must be quoted");
}

Test(config_errors, invalid_utf8)
{
    expect_error("via: ok\nvia2: \"\xff\"\n", "x.yaml:2:8: ", "UTF-8");
}

Test(config_errors, empty_and_multiple_documents)
{
    expect_error("# nothing here\n", "x.yaml:1:1: ", "empty");
    expect_error("---\n" BASE "---\nworkers: 2\n", "x.yaml:11:1: ", "only one YAML document");
}

Test(config_errors, root_not_a_mapping)
{
    expect_error("- a\n- b\n", "x.yaml:1:1: ", "expected a mapping, got a sequence");
}

Test(config_errors, wrong_node_type)
{
    expect_error(BASE "limits:\n  - 1\n", "x.yaml:10:3: ", "expected a mapping, got a sequence");
    expect_error(BASE "limits:\n", "x.yaml:9:8: ", "expected a mapping, got an empty value");
    expect_error(BASE "via: [a]\n", "x.yaml:9:6: ", "expected a single value, got a sequence");
    expect_error("listeners: {a: 1}\n", "x.yaml:1:12: ", "expected a sequence, got a mapping");
}

Test(config_errors, unknown_key)
{
    expect_error("listeners:\n  - name: web\n    address: 127.0.0.1:8080\n    backlogg: 5\n" POOLS VHOSTS,
                 "x.yaml:4:5: ", "unknown key \"backlogg\" in listener (expected one of: name, address, backlog, defer_accept, tls, redirect_https)");
    expect_error(BASE "worker: 2\n", "x.yaml:9:1: ", "unknown key \"worker\" in the top level");
    expect_error(BASE "timeouts:\n  client_headers: 5s\n",
                 "x.yaml:10:3: ", "unknown key \"client_headers\" in timeouts");
    expect_error(LISTENERS POOLS "vhosts:\n  - hosts: ['*']\n    routes: [{path: /, pool: shop, sethost: x}]\n",
                 "x.yaml:8:36: ", "unknown key \"sethost\" in route");
}

Test(config_errors, non_scalar_key)
{
    expect_error(BASE "? [a]\n: 1\n", "x.yaml:9:3: ", "expected a key name in the top level");
}

Test(config_errors, duplicate_key)
{
    expect_error("listeners:\n  - address: 127.0.0.1:8080\n    address: 127.0.0.1:8081\n" POOLS VHOSTS,
                 "x.yaml:3:5: ", "duplicate key \"address\" in listener (first at 2:5)");
    expect_error(BASE "via: a\nvia: b\n", "x.yaml:10:1: ", "duplicate key \"via\"");
}

Test(config_errors, missing_required_key)
{
    expect_error("listeners:\n  - name: web\n    backlog: 5\n" POOLS VHOSTS,
                 "x.yaml:2:5: ", "missing required key \"address\" in listener");
    expect_error(LISTENERS VHOSTS, "x.yaml:1:1: ", "missing required key \"pools\" in the top level");
    expect_error(LISTENERS "pools:\n  - backends: [127.0.0.1:1]\n" VHOSTS,
                 "x.yaml:4:5: ", "missing required key \"name\" in pool");
    expect_error(LISTENERS POOLS "vhosts:\n  - hosts: ['*']\n    routes: [{path: /}]\n",
                 "x.yaml:8:14: ", "missing required key \"pool\" in route");
    expect_error(LISTENERS "pools:\n  - name: a\n    backends:\n      - weight: 2\n" VHOSTS,
                 "x.yaml:6:9: ", "missing required key \"address\" in backend");
}

Test(config_errors, empty_lists)
{
    expect_error("listeners: []\n" POOLS VHOSTS, "x.yaml:1:12: ", "expected at least one listener");
    expect_error(LISTENERS "pools:\n  - name: a\n    backends: []\n" VHOSTS,
                 "x.yaml:5:15: ", "expected at least one backend");
    expect_error(LISTENERS POOLS "vhosts:\n  - hosts: []\n    routes: [{path: /, pool: shop}]\n",
                 "x.yaml:7:12: ", "expected at least one host");
    expect_error(LISTENERS POOLS "vhosts:\n  - hosts: ['*']\n    routes: []\n",
                 "x.yaml:8:13: ", "expected at least one route");
    expect_error("cpus: []\n" BASE, "x.yaml:1:7: ", "expected at least one CPU");
}

Test(config_errors, bad_duration)
{
    expect_error(BASE "timeouts:\n  client_header: ten\n",
                 "x.yaml:10:18: ", "expected a duration like 250ms, 10s, 2m, got \"ten\"");
    expect_error(BASE "timeouts:\n  body_idle: 0s\n", "x.yaml:10:14: ", "at least 1ms");
    expect_error(LISTENERS
                 "pools:\n  - name: a\n    keepalive: {idle_timeout: 5 s}\n    backends: [127.0.0.1:1]\n" VHOSTS,
                 "x.yaml:5:31: ", "expected a duration");
}

Test(config_errors, bad_size)
{
    expect_error(BASE "limits:\n  max_header_size: 64kb\n",
                 "x.yaml:10:20: ", "expected a size like 16384, 16k, 1m, got \"64kb\"");
    expect_error(BASE "limits:\n  max_header_size: 1g\n", "x.yaml:10:20: ", "expected a size of at most");
}

Test(config_errors, bad_integer)
{
    expect_error(BASE "max_connections: lots\n", "x.yaml:9:18: ", "expected an integer 2..16777216, got \"lots\"");
    expect_error("listeners:\n  - address: 127.0.0.1:8080\n    backlog: -1\n" POOLS VHOSTS,
                 "x.yaml:3:14: ", "expected an integer 1..1048576");
    expect_error("cpus: [0, 1024]\n" BASE, "x.yaml:1:11: ", "expected an integer 0..1023, got \"1024\"");
}

Test(config_errors, bad_workers)
{
    expect_error("workers: many\n" BASE, "x.yaml:1:10: ", "expected auto or an integer 1..1024, got \"many\"");
    expect_error("workers: 0\n" BASE, "x.yaml:1:10: ", "expected auto or an integer 1..1024");
    expect_error("workers: 1025\n" BASE, "x.yaml:1:10: ", "expected auto or an integer 1..1024");
}

Test(config_errors, bad_bool_and_enums)
{
    expect_error(LISTENERS POOLS
                 "vhosts:\n  - hosts: ['*']\n    routes: [{path: /, pool: shop, hide_powered_by: yes}]\n",
                 "x.yaml:8:53: ", "expected true or false, got \"yes\"");
    expect_error(LISTENERS POOLS
                 "vhosts:\n  - hosts: ['*']\n    routes: [{path: /, pool: shop, server_header: drop}]\n",
                 "x.yaml:8:51: ", "expected pass, hide or replace, got \"drop\"");
    expect_error(LISTENERS "pools:\n  - name: a\n    balance: random\n    backends: [127.0.0.1:1]\n" VHOSTS,
                 "x.yaml:5:14: ", "expected a balance algorithm (round_robin, least_conn, p2c or hash), got \"random\"");
}

Test(config_errors, bad_address)
{
    expect_error("listeners:\n  - address: 127.0.0.1:0\n" POOLS VHOSTS,
                 "x.yaml:2:14: ", "expected an address like 127.0.0.1:8080");
    expect_error("listeners:\n  - address: 127.0.0.1:65536\n" POOLS VHOSTS, "x.yaml:2:14: ", "got \"127.0.0.1:65536\"");
    expect_error("listeners:\n  - address: 127.0.0.1\n" POOLS VHOSTS, "x.yaml:2:14: ", "expected an address");
    expect_error("listeners:\n  - address: example.com:80\n" POOLS VHOSTS, "x.yaml:2:14: ", "expected an address");
    expect_error(LISTENERS "pools:\n  - name: a\n    backends:\n      - 127.0.0.1:x\n" VHOSTS,
                 "x.yaml:6:9: ", "expected an address");
    expect_error(LISTENERS "pools:\n  - name: a\n    backends: ['*:80']\n" VHOSTS,
                 "x.yaml:5:16: ", "a backend needs a concrete address");
    expect_error(LISTENERS "pools:\n  - name: a\n    backends: [[127.0.0.1:1]]\n" VHOSTS,
                 "x.yaml:5:16: ", "expected a backend address or a mapping");
}

Test(config_errors, undefined_pool)
{
    expect_error(LISTENERS POOLS "vhosts:\n  - hosts: ['*']\n    routes:\n      - path: /\n        pool: shopp\n",
                 "x.yaml:10:15: ", "pool \"shopp\" is not defined");
}

Test(config_errors, undefined_listener)
{
    expect_error(LISTENERS POOLS
                 "vhosts:\n  - hosts: ['*']\n    listeners: [web]\n    routes: [{path: /, pool: shop}]\n",
                 "x.yaml:8:17: ", "listener \"web\" is not defined");
}

Test(config_errors, duplicate_names)
{
    expect_error(
        "listeners:\n  - {name: web, address: 127.0.0.1:1}\n  - {name: web, address: 127.0.0.1:2}\n" POOLS VHOSTS,
        "x.yaml:3:12: ", "listener name \"web\" is already used");
    /* A default name counts too. */
    expect_error("listeners:\n  - {address: 127.0.0.1:1}\n  - {name: listener0, address: 127.0.0.1:2}\n" POOLS VHOSTS,
                 "x.yaml:3:12: ", "listener name \"listener0\" is already used");
    expect_error("listeners:\n  - {name: a, address: '*:80'}\n  - {name: b, address: 0.0.0.0:80}\n" POOLS VHOSTS,
                 "x.yaml:3:5: ", "address 0.0.0.0:80 is already used by listener \"a\"");
    expect_error(
        LISTENERS
        "pools:\n  - {name: shop, backends: [127.0.0.1:1]}\n  - {name: shop, backends: [127.0.0.1:2]}\n" VHOSTS,
        "x.yaml:5:12: ", "pool \"shop\" is defined twice");
}

Test(config_errors, weight_out_of_range)
{
    expect_error(LISTENERS "pools:\n  - name: a\n    backends:\n      - {address: 127.0.0.1:1, weight: 0}\n" VHOSTS,
                 "x.yaml:6:40: ", "weight 0 is out of range (expected 1..1000)");
    expect_error(LISTENERS "pools:\n  - name: a\n    backends:\n      - {address: 127.0.0.1:1, weight: 1001}\n" VHOSTS,
                 "x.yaml:6:40: ", "weight 1001 is out of range");
}

Test(config_errors, buffers)
{
    expect_error("buffers:\n  count: 1000\n" BASE, "x.yaml:2:10: ", "power of two between 64 and 65536");
    expect_error("buffers:\n  count: 32\n" BASE, "x.yaml:2:10: ", "power of two between 64 and 65536");
    expect_error("buffers:\n  count: 131072\n" BASE, "x.yaml:2:10: ", "buffers.count");
    expect_error("buffers:\n  size: 2k\n" BASE, "x.yaml:2:9: ", "buffers.size: 2048 must be a power of two");
    expect_error("buffers:\n  size: 12k\n" BASE, "x.yaml:2:9: ", "buffers.size");
    expect_error("buffers:\n  size: 128k\n" BASE, "x.yaml:2:9: ", "buffers.size");
}

Test(config_errors, limits)
{
    expect_error("limits:\n  max_request_line: 63\n" BASE, "x.yaml:2:21: ", "max_request_line: 63 is too small");
    expect_error("limits:\n  max_request_line: 8k\n  max_header_size: 4k\n" BASE,
                 "x.yaml:3:20: ", "smaller than max_request_line");
    expect_error("limits:\n  max_headers: 0\n" BASE,
                 "x.yaml:2:16: ", "max_headers: 0 is out of range (expected 1..1000)");
    expect_error("limits:\n  max_headers: 1001\n" BASE, "x.yaml:2:16: ", "max_headers: 1001");
}

Test(config_errors, too_many_listeners)
{
    char yaml[16384];
    size_t o = (size_t)snprintf(yaml, sizeof(yaml), "listeners:\n");
    for (int i = 0; i < 65; i++)
        o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "  - address: 127.0.0.1:%d\n", 10000 + i);
    snprintf(yaml + o, sizeof(yaml) - o, POOLS VHOSTS);
    expect_error(yaml, "x.yaml:66:5: ", "too many listeners (at most 64)");
    /* 64 is fine, and then every listener bit is set. */
    char *last = strstr(yaml, "  - address: 127.0.0.1:10064\n");
    memmove(last, last + strlen("  - address: 127.0.0.1:10064\n"),
            strlen(last + strlen("  - address: 127.0.0.1:10064\n")) + 1);
    struct rlb_config *cfg = load_ok(yaml);
    cr_expect_eq(cfg->num_listeners, 64);
    cr_expect_eq(cfg->vhosts[0].listener_mask, UINT64_MAX);
    rlb_config_free(cfg);
}

Test(config_errors, server_header_replace)
{
    expect_error(LISTENERS POOLS
                 "vhosts:\n  - hosts: ['*']\n    routes: [{path: /, pool: shop, server_header: replace}]\n",
                 "x.yaml:8:51: ", "server_header: replace needs server_value");
    expect_error(LISTENERS POOLS "vhosts:\n  - hosts: ['*']\n    routes: [{path: /, pool: shop, server_value: x}]\n",
                 "x.yaml:8:50: ", "server_value is only used with server_header: replace");
    struct rlb_config *cfg = load_ok(LISTENERS POOLS "vhosts:\n  - hosts: ['*']\n    routes:\n      - path: /\n"
                                                     "        pool: shop\n        server_header: replace\n"
                                                     "        server_value: 'edge (v1)'\n");
    cr_expect_str_eq(cfg->vhosts[0].routes[0].server_value, "edge (v1)");
    rlb_config_free(cfg);
}

Test(config_errors, header_values)
{
    expect_error("via: 'my proxy'\n" BASE, "x.yaml:1:6: ", "via: expected a token");
    expect_error("via: 'a/b'\n" BASE, "x.yaml:1:6: ", "via: expected a token");
    expect_error("via: \"a\\r\\nX-Evil: 1\"\n" BASE, "x.yaml:1:6: ", "single-line string");
    expect_error(LISTENERS POOLS "vhosts:\n  - hosts: ['*']\n    routes: [{path: /, pool: shop, set_host: 'a b'}]\n",
                 "x.yaml:8:46: ", "set_host: expected a host name of visible ASCII");
    expect_error(LISTENERS POOLS
                 "vhosts:\n  - hosts: ['*']\n    routes: [{path: /, pool: shop, set_host: \"a\\x80\"}]\n",
                 "x.yaml:8:46: ", "set_host");
    expect_error(LISTENERS POOLS "vhosts:\n  - hosts: ['*']\n    routes:\n      - path: /\n        pool: shop\n"
                                 "        server_header: replace\n        server_value: \"x\\ny\"\n",
                 "x.yaml:12:23: ", "single-line string");
    expect_error(LISTENERS POOLS "vhosts:\n  - hosts: ['*']\n    routes:\n      - path: /\n        pool: shop\n"
                                 "        server_header: replace\n        server_value: \"x \"\n",
                 "x.yaml:12:23: ", "server_value: expected visible ASCII");
}

Test(config_errors, bad_host)
{
    static const char *const bad[] = {"shop example.com",
                                      "*foo.com",
                                      "a..b",
                                      "*.",
                                      "**",
                                      "a.*.com",
                                      "shop.example.com:80",
                                      ".example.com",
                                      "[::1",
                                      "[zz]",
                                      "caf\xc3\xa9.com"};
    for (size_t i = 0; i < RLB_ARRAY_SIZE(bad); i++) {
        char yaml[512];
        snprintf(yaml, sizeof(yaml),
                 LISTENERS POOLS "vhosts:\n  - hosts: [ok.com, '%s']\n"
                                 "    routes: [{path: /, pool: shop}]\n",
                 bad[i]);
        expect_error(yaml, "x.yaml:7:21: ", "expected a host name like shop.example.com");
    }
    struct rlb_config *cfg =
        load_ok(LISTENERS POOLS "vhosts:\n  - hosts: [127.0.0.1, '[::1]', my_host.local, 'A-B.C']\n"
                                "    routes: [{path: /, pool: shop}]\n");
    cr_expect_str_eq(cfg->vhosts[0].hosts[3], "a-b.c");
    rlb_config_free(cfg);
}

Test(config_errors, duplicate_host_and_route)
{
    expect_error(LISTENERS POOLS "vhosts:\n  - {hosts: [a.com], routes: [{path: /, pool: shop}]}\n"
                                 "  - {hosts: [b.com, A.com], routes: [{path: /, pool: shop}]}\n",
                 "x.yaml:8:21: ", "host \"a.com\" is already served by an earlier vhost");
    expect_error(LISTENERS POOLS "vhosts:\n  - {hosts: [a.com, a.com], routes: [{path: /, pool: shop}]}\n",
                 "x.yaml:7:21: ", "host \"a.com\" is already served by this vhost");
    expect_error(LISTENERS POOLS "vhosts:\n  - hosts: ['*']\n    routes:\n      - {path: /a, pool: shop}\n"
                                 "      - {path: /a, pool: shop}\n",
                 "x.yaml:10:16: ", "route \"/a\" appears twice");
}

Test(config_errors, bad_path)
{
    expect_error(LISTENERS POOLS "vhosts:\n  - hosts: ['*']\n    routes: [{path: api, pool: shop}]\n",
                 "x.yaml:8:21: ", "expected a path prefix starting with \"/\"");
    expect_error(LISTENERS POOLS "vhosts:\n  - hosts: ['*']\n    routes: [{path: '/a b', pool: shop}]\n",
                 "x.yaml:8:21: ", "expected a path prefix");
}

Test(config_errors, empty_string)
{
    expect_error("listeners:\n  - {name: '', address: 127.0.0.1:1}\n" POOLS VHOSTS,
                 "x.yaml:2:12: ", "expected a non-empty string");
}

Test(config_errors, message_is_truncated_safely)
{
    char small[24];
    struct rlb_config *cfg = rlb_config_load_string("x.yaml", "workers: many\n", 14, small, sizeof(small));
    cr_assert_null(cfg);
    cr_expect_eq(strlen(small), sizeof(small) - 1);
    cr_expect(strncmp(small, "x.yaml:1:10: ", 13) == 0, "%s", small);
}

/* ---------------------------------------------------------------------------------------------------------------
 * One-line mode
 */

Test(config_oneline, builds_the_documented_shape)
{
    const char *backends[] = {"127.0.0.1:9001", "[::1]:9002@3", "localhost:9003@1000"};
    struct rlb_oneline_args args = {.listen = "*:8080", .backends = backends, .num_backends = 3, .workers = 2};
    struct rlb_config *cfg = rlb_config_from_oneline(&args, err, sizeof(err));
    cr_assert_not_null(cfg, "%s", err);
    cr_expect_str_eq(cfg->source, "<command line>");
    cr_expect_eq(cfg->workers, 2);
    cr_assert_eq(cfg->num_listeners, 1);
    cr_expect_str_eq(cfg->listeners[0].name, "main");
    cr_expect_str_eq(cfg->listeners[0].addr.text, "0.0.0.0:8080");
    cr_expect_eq(cfg->listeners[0].backlog, 4096);
    cr_assert_eq(cfg->num_pools, 1);
    const struct rlb_pool_cfg *p = &cfg->pools[0];
    cr_expect_str_eq(p->name, "default");
    cr_expect_eq(p->balance, RLB_BALANCE_WRR);
    cr_expect_eq(p->keepalive_max_idle, 32);
    cr_assert_eq(p->num_backends, 3);
    cr_expect_str_eq(p->backends[0].addr.text, "127.0.0.1:9001");
    cr_expect_eq(p->backends[0].weight, 1);
    cr_expect_str_eq(p->backends[1].addr.text, "[::1]:9002");
    cr_expect_eq(p->backends[1].weight, 3);
    cr_expect_str_eq(p->backends[2].addr.text, "127.0.0.1:9003");
    cr_expect_eq(p->backends[2].weight, 1000);
    cr_assert_eq(cfg->num_vhosts, 1);
    cr_assert_eq(cfg->vhosts[0].num_hosts, 1);
    cr_expect_str_eq(cfg->vhosts[0].hosts[0], "*");
    cr_expect_eq(cfg->vhosts[0].listener_mask, 1);
    cr_assert_eq(cfg->vhosts[0].num_routes, 1);
    cr_expect_str_eq(cfg->vhosts[0].routes[0].path_prefix, "/");
    cr_expect_eq(cfg->vhosts[0].routes[0].pool, 0);
    /* Everything else at its default. */
    cr_expect_eq(cfg->timeouts.client_header, 10000);
    cr_expect_eq(cfg->buffers.count, 1024);
    cr_expect_str_eq(cfg->via_name, "ringlb");
    rlb_config_free(cfg);
}

Test(config_oneline, rejects_bad_input)
{
    static const struct {
        const char *listen;
        const char *backend;
        uint32_t workers;
        const char *phrase;
    } cases[] = {
        {"127.0.0.1:8080", "127.0.0.1:9001@0", 0, "--backend \"127.0.0.1:9001@0\": expected a weight 1..1000"},
        {"127.0.0.1:8080", "127.0.0.1:9001@1001", 0, "expected a weight 1..1000"},
        {"127.0.0.1:8080", "127.0.0.1:9001@", 0, "expected a weight"},
        {"127.0.0.1:8080", "127.0.0.1:9001@x", 0, "expected a weight"},
        {"127.0.0.1:8080", "127.0.0.1", 0, "--backend \"127.0.0.1\": expected host:port[@weight]"},
        {"127.0.0.1:8080", "backend.local:9001", 0, "expected host:port[@weight]"},
        {"127.0.0.1:8080", "127.0.0.1:0@2", 0, "expected host:port[@weight]"},
        {"127.0.0.1:99999", "127.0.0.1:9001", 0, "--listen \"127.0.0.1:99999\": expected an address"},
        {NULL, "127.0.0.1:9001", 0, "--listen is required"},
        {"127.0.0.1:8080", NULL, 0, "at least one --backend is required"},
        {"127.0.0.1:8080", "127.0.0.1:9001", 1025, "workers: 1025 is out of range"},
    };
    for (size_t i = 0; i < RLB_ARRAY_SIZE(cases); i++) {
        const char *b[] = {cases[i].backend};
        struct rlb_oneline_args args = {.listen = cases[i].listen,
                                        .backends = b,
                                        .num_backends = cases[i].backend != NULL ? 1 : 0,
                                        .workers = cases[i].workers};
        err[0] = '\0';
        struct rlb_config *cfg = rlb_config_from_oneline(&args, err, sizeof(err));
        cr_expect_null(cfg, "case %zu loaded", i);
        rlb_config_free(cfg);
        cr_expect(strncmp(err, "<command line>: ", 16) == 0, "case %zu: %s", i, err);
        cr_expect(strstr(err, cases[i].phrase) != NULL, "case %zu: expected \"%s\" in \"%s\"", i, cases[i].phrase, err);
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Other builders: rlb_config_new + rlb_config_finish without any marks
 */

Test(config_builder, finish_without_marks)
{
    struct rlb_config *cfg = rlb_config_new("<demo>");
    cr_assert_not_null(cfg);
    cr_assert_eq(rlb_config_alloc(cfg, 1, 1, 1), 0);
    cr_assert_eq(rlb_sockaddr_parse("127.0.0.1:1", &cfg->listeners[0].addr), 0);
    cfg->pools[0].name = strdup("p");
    cr_assert_eq(rlb_config_alloc_backends(&cfg->pools[0], 1), 0);
    cr_assert_eq(rlb_sockaddr_parse("127.0.0.1:2", &cfg->pools[0].backends[0].addr), 0);
    struct rlb_vhost_cfg *v = &cfg->vhosts[0];
    v->hosts = calloc(1, sizeof(*v->hosts));
    v->hosts[0] = strdup("*");
    v->num_hosts = 1;
    v->routes = calloc(1, sizeof(*v->routes));
    v->num_routes = 1;
    v->routes[0].path_prefix = strdup("/");
    v->routes[0].pool = 1; /* no such pool */
    cr_expect_eq(rlb_config_finish(cfg, err, sizeof(err)), -1);
    cr_expect(strncmp(err, "<demo>: ", 8) == 0, "%s", err);
    cr_expect(strstr(err, "does not exist") != NULL, "%s", err);
    v->routes[0].pool = 0;
    cr_expect_eq(rlb_config_finish(cfg, err, sizeof(err)), 0, "%s", err);
    cr_expect_str_eq(cfg->listeners[0].name, "listener0");
    rlb_config_free(cfg);
    rlb_config_free(NULL);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Balancing and availability
 */

#define AVAIL_LISTENERS "listeners:\n  - address: 127.0.0.1:8080\n"

Test(config_availability, every_key_loads)
{
    struct rlb_config *cfg = load_ok(AVAIL_LISTENERS
                                     "pools:\n"
                                     "  - name: shop\n"
                                     "    balance: hash\n"
                                     "    hash: {key: cookie, name: session, bounded_load: 1.25}\n"
                                     "    health_check: {path: /healthz, status: 200-299, interval: 500ms, timeout: 200ms, "
                                     "rise: 1, fall: 2}\n"
                                     "    passive: {eject: 2s, eject_max: 1m, consecutive_5xx: 5}\n"
                                     "    slow_start: 30s\n"
                                     "    retry: {tries: 4, budget_percent: 10, budget_min: 3, on_5xx: false}\n"
                                     "    backup: [dr]\n"
                                     "    local_zone: a\n"
                                     "    backends:\n"
                                     "      - {address: 127.0.0.1:9001, zone: a}\n"
                                     "      - {address: 127.0.0.1:9002, zone: b}\n"
                                     "  - name: dr\n"
                                     "    balance: least_conn\n"
                                     "    backends: [127.0.0.1:9101]\n"
                                     "  - name: beta\n"
                                     "    balance: p2c\n"
                                     "    backends: [127.0.0.1:9201]\n"
                                     "vhosts:\n"
                                     "  - hosts: [\"*\"]\n"
                                     "    routes:\n"
                                     "      - {path: /new, split: [{pool: shop, weight: 95}, {pool: beta, weight: 5}]}\n"
                                     "      - {path: /, pool: shop}\n");
    const struct rlb_pool_cfg *p = &cfg->pools[0];
    cr_expect_eq(p->balance, RLB_BALANCE_HASH);
    cr_expect_eq(p->hash.key, RLB_HASH_KEY_COOKIE);
    cr_expect_str_eq(p->hash.name, "session");
    cr_expect_eq(p->hash.table_size, 65537);
    cr_expect_eq(p->hash.bounded_load, 125);
    cr_expect(p->check.enabled);
    cr_expect_str_eq(p->check.method, "GET");
    cr_expect_str_eq(p->check.path, "/healthz");
    cr_expect_eq(p->check.status_min, 200);
    cr_expect_eq(p->check.status_max, 299);
    cr_expect_eq(p->check.interval_ms, 500);
    cr_expect_eq(p->check.timeout_ms, 200);
    cr_expect_eq(p->check.rise, 1);
    cr_expect_eq(p->check.fall, 2);
    cr_expect_eq(p->passive.eject_ms, 2000);
    cr_expect_eq(p->passive.eject_max_ms, 60000);
    cr_expect_eq(p->passive.consecutive_5xx, 5);
    cr_expect_eq(p->slow_start_ms, 30000);
    cr_expect_eq(p->retry.tries, 4);
    cr_expect_eq(p->retry.budget_percent, 10);
    cr_expect_eq(p->retry.budget_min, 3);
    cr_expect(!p->retry.on_5xx);
    cr_expect_eq(p->num_backups, 1);
    cr_expect_eq(p->backups[0], 1);
    cr_expect_str_eq(p->backends[1].zone, "b");
    cr_expect_eq(cfg->pools[1].balance, RLB_BALANCE_LEASTCONN);
    cr_expect_eq(cfg->pools[2].balance, RLB_BALANCE_P2C);
    /* Defaults of a pool that says nothing. */
    cr_expect(!cfg->pools[1].check.enabled);
    cr_expect_eq(cfg->pools[1].retry.tries, 3);
    cr_expect(cfg->pools[1].retry.on_5xx);
    const struct rlb_route_cfg *r = &cfg->vhosts[0].routes[0];
    cr_expect_eq(r->num_splits, 2);
    cr_expect_eq(r->splits[0].pool, 0);
    cr_expect_eq(r->splits[1].pool, 2);
    cr_expect_eq(r->splits[1].weight, 5);
    cr_expect_str_eq(r->split_cookie, "rlb_variant");
    rlb_config_free(cfg);
}

Test(config_availability, errors_point_at_the_value)
{
#define ONE_POOL(extra) AVAIL_LISTENERS "pools:\n  - name: shop\n" extra "    backends: [127.0.0.1:9001]\n" VHOSTS
    expect_error(ONE_POOL("    balance: hash\n    hash: {key: header}\n"), "x.yaml:6:11: ", "hash: key header needs a name");
    expect_error(ONE_POOL("    balance: hash\n    hash: {table_size: 65536}\n"), "x.yaml:6:11: ",
                 "table_size 65536 must be a prime");
    expect_error(ONE_POOL("    hash: {key: uri}\n"), "x.yaml:5:11: ", "hash settings need balance: hash");
    expect_error(ONE_POOL("    balance: hash\n    hash: {bounded_load: 0.5}\n"), "x.yaml:6:26: ",
                 "expected a load factor from 1.0");
    expect_error(ONE_POOL("    health_check: {status: 200-99}\n"), "x.yaml:5:28: ", "low to high");
    expect_error(ONE_POOL("    health_check: {path: health}\n"), "x.yaml:5:19: ", "expected a path starting with \"/\"");
    expect_error(ONE_POOL("    health_check: {interval: 1s, timeout: 2s}\n"), "x.yaml:5:19: ", "timeout (2000 ms) is longer");
    expect_error(ONE_POOL("    passive: {eject: 10s, eject_max: 1s}\n"), "x.yaml:4:5: ", "eject_max (1000 ms) is below");
    expect_error(ONE_POOL("    retry: {tries: 9}\n"), "x.yaml:4:5: ", "retry: tries 9 is above 8");
    expect_error(ONE_POOL("    backup: [nowhere]\n"), "x.yaml:5:14: ", "backup pool \"nowhere\" is not defined");
    expect_error(ONE_POOL("    backup: [shop]\n"), "x.yaml:5:14: ", "cannot be its own backup");
    expect_error(ONE_POOL("    local_zone: mars\n"), "x.yaml:4:5: ", "local_zone \"mars\" matches no backend");
    expect_error(AVAIL_LISTENERS POOLS "vhosts:\n  - hosts: [\"*\"]\n    routes: [{path: /, split: [{pool: shop, weight: 1}]}]\n",
                 "x.yaml:8:31: ", "a split needs at least two variants");
    expect_error(AVAIL_LISTENERS POOLS
                 "vhosts:\n  - hosts: [\"*\"]\n    routes: [{path: /, split: [{pool: shop, weight: 1}, {pool: x, weight: 1}]}]\n",
                 "x.yaml:8:57: ", "pool \"x\" is not defined");
    expect_error(AVAIL_LISTENERS POOLS "vhosts:\n  - hosts: [\"*\"]\n    routes: [{path: /, pool: shop, split_cookie: v}]\n",
                 "x.yaml:8:14: ", "split_cookie is only used with split");
#undef ONE_POOL
}

Test(config_availability, oneline_balance)
{
    static const struct {
        const char *text;
        enum rlb_balance balance;
        enum rlb_hash_key key;
        const char *name;
    } ok[] = {
        {"rr", RLB_BALANCE_WRR, 0, NULL},
        {"leastconn", RLB_BALANCE_LEASTCONN, 0, NULL},
        {"p2c", RLB_BALANCE_P2C, 0, NULL},
        {"hash", RLB_BALANCE_HASH, RLB_HASH_KEY_CLIENT_IP, NULL},
        {"hash:uri", RLB_BALANCE_HASH, RLB_HASH_KEY_URI, NULL},
        {"hash:header:X-User", RLB_BALANCE_HASH, RLB_HASH_KEY_HEADER, "X-User"},
        {"hash:cookie:sid", RLB_BALANCE_HASH, RLB_HASH_KEY_COOKIE, "sid"},
    };
    const char *b[] = {"127.0.0.1:9001"};
    for (size_t i = 0; i < RLB_ARRAY_SIZE(ok); i++) {
        struct rlb_oneline_args args = {.listen = "127.0.0.1:8080", .backends = b, .num_backends = 1,
                                        .balance = ok[i].text};
        struct rlb_config *cfg = rlb_config_from_oneline(&args, err, sizeof(err));
        cr_assert_not_null(cfg, "%s: %s", ok[i].text, err);
        cr_expect_eq(cfg->pools[0].balance, ok[i].balance, "%s", ok[i].text);
        cr_expect_eq(cfg->pools[0].hash.key, ok[i].key, "%s", ok[i].text);
        if (ok[i].name)
            cr_expect_str_eq(cfg->pools[0].hash.name, ok[i].name);
        rlb_config_free(cfg);
    }
    static const char *const bad[] = {"random", "rr:uri", "hash:body", "hash:header:", "hash:header:a b"};
    for (size_t i = 0; i < RLB_ARRAY_SIZE(bad); i++) {
        struct rlb_oneline_args args = {.listen = "127.0.0.1:8080", .backends = b, .num_backends = 1,
                                        .balance = bad[i]};
        struct rlb_config *cfg = rlb_config_from_oneline(&args, err, sizeof(err));
        cr_expect_null(cfg, "%s loaded", bad[i]);
        cr_expect(strstr(err, "--balance") != NULL || strstr(err, "hash:") != NULL, "%s: %s", bad[i], err);
        rlb_config_free(cfg);
    }
}
