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
