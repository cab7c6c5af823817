#include <criterion/criterion.h>
#include <ringlb/config.h>
#include <ringlb/route.h>

#include <string.h>

static const char yaml[] =
    "listeners:\n"
    "  - {name: a, address: 127.0.0.1:18001}\n"
    "  - {name: b, address: 127.0.0.1:18002}\n"
    "pools:\n"
    "  - {name: www, backends: [127.0.0.1:9001]}\n"
    "  - {name: api, backends: [127.0.0.1:9002]}\n"
    "  - {name: wild, backends: [127.0.0.1:9003]}\n"
    "  - {name: any, backends: [127.0.0.1:9004]}\n"
    "  - {name: bonly, backends: [127.0.0.1:9005]}\n"
    "vhosts:\n"
    "  - hosts: [shop.example.com]\n"
    "    routes:\n"
    "      - {path: /, pool: www}\n"
    "      - {path: /api/, pool: api}\n"
    "      - {path: /api/v2/, pool: wild}\n"
    "  - hosts: ['*.example.com']\n"
    "    routes: [{path: /, pool: wild}]\n"
    "  - hosts: [only-b.test]\n"
    "    listeners: [b]\n"
    "    routes: [{path: /, pool: bonly}]\n"
    "  - hosts: ['*']\n"
    "    listeners: [a]\n"
    "    routes: [{path: /static/, pool: any}]\n";

static struct rlb_config *cfg;

static void setup(void)
{
    char err[512];
    cfg = rlb_config_load_string("route.yaml", yaml, strlen(yaml), err, sizeof(err));
    cr_assert_not_null(cfg, "%s", err);
}

static void teardown(void)
{
    rlb_config_free(cfg);
}

static const char *pool_of(uint32_t listener, const char *host, const char *path)
{
    const struct rlb_route_cfg *r = rlb_route_find(cfg, listener, host, strlen(host), path, strlen(path));
    return r ? cfg->pools[r->pool].name : NULL;
}

TestSuite(route, .init = setup, .fini = teardown);

Test(route, exact_host_and_longest_prefix)
{
    cr_expect_str_eq(pool_of(0, "shop.example.com", "/"), "www");
    cr_expect_str_eq(pool_of(0, "shop.example.com", "/api/x"), "api");
    cr_expect_str_eq(pool_of(0, "shop.example.com", "/api/v2/x"), "wild");
    cr_expect_str_eq(pool_of(0, "SHOP.Example.COM:8080", "/api/"), "api");
    cr_expect_str_eq(pool_of(0, "shop.example.com.", "/"), "www");
}

Test(route, wildcard_needs_a_label)
{
    cr_expect_str_eq(pool_of(0, "a.example.com", "/"), "wild");
    cr_expect_str_eq(pool_of(0, "a.b.example.com", "/x"), "wild");
    /* "example.com" is not under "*.example.com": it falls to the catch-all, which has no "/" route. */
    cr_expect_null(pool_of(0, "example.com", "/"));
    cr_expect_str_eq(pool_of(0, "example.com", "/static/x"), "any");
}

Test(route, listener_attachment)
{
    cr_expect_str_eq(pool_of(1, "only-b.test", "/"), "bonly");
    cr_expect_null(pool_of(0, "only-b.test", "/"));
    cr_expect_null(pool_of(1, "unknown.test", "/static/"));
    cr_expect_str_eq(pool_of(0, "unknown.test", "/static/"), "any");
}

Test(route, split_absolute_target)
{
    struct rlb_str host = {"orig", 4}, path;
    const char *t = "http://Shop.Example.com:80/api/x?y=1";
    rlb_route_split_target(t, strlen(t), &host, &path);
    cr_expect_eq(host.len, strlen("Shop.Example.com:80"));
    cr_expect(memcmp(host.ptr, "Shop.Example.com:80", host.len) == 0);
    cr_expect_eq(path.len, strlen("/api/x?y=1"));
    const char *o = "/plain";
    host = (struct rlb_str){"orig", 4};
    rlb_route_split_target(o, strlen(o), &host, &path);
    cr_expect_eq(host.len, 4);
    cr_expect_eq(path.ptr, o);
    const char *bare = "http://h.test";
    rlb_route_split_target(bare, strlen(bare), &host, &path);
    cr_expect_eq(path.len, 1);
    cr_expect_eq(host.len, 6);
}

/* A/B splits: over 100,000 simulated first visits each variant gets its
 * configured share within one point, and a returning client's cookie always
 * names the same variant. */
Test(split, shares_within_one_point_and_stable_per_cookie)
{
    static const char split_yaml[] = "listeners: [{address: 127.0.0.1:18003}]\n"
                                     "pools:\n"
                                     "  - {name: shop, backends: [127.0.0.1:9001]}\n"
                                     "  - {name: shop-beta, backends: [127.0.0.1:9002]}\n"
                                     "  - {name: shop-gamma, backends: [127.0.0.1:9003]}\n"
                                     "vhosts:\n"
                                     "  - hosts: ['*']\n"
                                     "    routes:\n"
                                     "      - {path: /, split: [{pool: shop, weight: 90}, {pool: shop-beta, weight: 7},"
                                     " {pool: shop-gamma, weight: 3}]}\n";
    char err[RLB_CONFIG_ERR_MAX];
    struct rlb_config *scfg = rlb_config_load_string("s.yaml", split_yaml, sizeof(split_yaml) - 1, err, sizeof(err));
    cr_assert_not_null(scfg, "%s", err);
    const struct rlb_route_cfg *r = &scfg->vhosts[0].routes[0];
    enum { CLIENTS = 100000 };
    int count[3] = {0};
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < CLIENTS; i++) {
        /* splitmix64: the uniform 64-bit draws a worker's generator gives */
        x += 0x9E3779B97F4A7C15ull;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        uint32_t v = rlb_split_choose(r, z);
        cr_assert_lt(v, 3);
        count[v]++;
        /* The cookie set for this client brings it back to the same variant. */
        const char *name = scfg->pools[r->splits[v].pool].name;
        cr_assert_eq(rlb_split_from_cookie(scfg, r, name, strlen(name)), (int)v);
    }
    static const double want[3] = {0.90, 0.07, 0.03};
    for (int i = 0; i < 3; i++) {
        double share = (double)count[i] / CLIENTS;
        cr_expect(share > want[i] - 0.01 && share < want[i] + 0.01, "variant %d: %.4f, want %.2f", i, share, want[i]);
    }
    cr_expect_eq(rlb_split_from_cookie(scfg, r, "shop-delta", 10), -1);
    cr_expect_eq(rlb_split_from_cookie(scfg, r, "sho", 3), -1);
    /* Edge draws land on the first and last variant. */
    cr_expect_eq(rlb_split_choose(r, 0), 0);
    cr_expect_eq(rlb_split_choose(r, UINT64_MAX), 2);
    rlb_config_free(scfg);
}

Test(split, cookie_parser)
{
    static const char value[] = "a=1; rlb_variant=\"shop-beta\";x=; rlb_variant2=no";
    struct rlb_http_header h = {.name = "cookie", .name_len = 6, .value = value, .value_len = sizeof(value) - 1};
    struct rlb_str v;
    cr_assert(rlb_cookie_find(&h, 1, "rlb_variant", 11, &v));
    cr_expect_eq(v.len, 9);
    cr_expect(memcmp(v.ptr, "shop-beta", 9) == 0);
    cr_assert(rlb_cookie_find(&h, 1, "x", 1, &v));
    cr_expect_eq(v.len, 0);
    cr_expect(!rlb_cookie_find(&h, 1, "rlb", 3, &v));
    h.name = "Set-Cookie";
    h.name_len = 10;
    cr_expect(!rlb_cookie_find(&h, 1, "a", 1, &v), "only Cookie fields count");
}
