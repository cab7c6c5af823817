#!/usr/bin/env python3
"""TLS (docs/tls.md): termination with TLS 1.2/1.3 and each cipher family, SNI certificate
choice and chains, ALPN, session resumption across workers, upstream TLS with verification,
handshake timeout, garbage on the TLS port, keep-alive and big bodies over TLS, redirect_https,
configuration errors and one-line mode, kTLS fallback, client certificates.

Every certificate is made at test time with the openssl CLI in a temporary directory (see
Certs); nothing binary is committed. Clients: curl, `openssl s_client` and Python's ssl module
(OpenSSL 3). Upstream TLS backends are harness.Backend with the accepted socket wrapped by
Python's ssl (TLSBackend).

Behaviours the spec leaves open, as asserted here (change both sides together):
- ALPN: a client offering only "h2" is refused with a fatal no_application_protocol alert
  (RFC 7301 3.2; ringlb's choice, src/tls.c alpn_select_cb), not served HTTP/1.1 without ALPN
  as nginx does. A client offering no ALPN at all is served.
- A stalled handshake closed by handshake_timeout counts in `timeouts` (every fired timer
  does); it also counts in tls_handshake_failures only if the client had sent some bytes
  (a silent connection is not a failed handshake).
- Garbage on the TLS port: a malformed ClientHello record gets a TLS alert (first byte 0x15);
  random bytes get an alert or a bare close; a plaintext HTTP request gets a plaintext
  "HTTP/1.1 400" with Connection: close, then the close (as nginx; src/tls_io.c); all count
  as tls_handshake_failures.
- redirect_https drops the port of the request's Host and puts the configured one;
  redirect_https: true gives https://<host><target> without a port.
- A failed upstream TLS handshake (expired certificate, wrong name) answers 502.
- Certificate paths in the configuration are absolute here (relative-path resolution is not
  exercised).
"""

import atexit
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import RssSampler, full_log, stats  # noqa: E402

SANITIZED = H.ASAN or os.environ.get("RINGLB_SANITIZED") == "1"
SLOW = 2.0 if SANITIZED else 1.0       # timing slack factor for sanitizer builds
RSS_LIMIT_KIB = 64 * 1024
BIG_DOWN = 256 * 1024 * 1024
BIG_UP = 64 * 1024 * 1024


# --------------------------------------------------------------------------------------
# Certificates (openssl CLI, at test time)

_OPENSSL_CNF = """\
[ req ]
distinguished_name = dn
prompt = no

[ dn ]
CN = placeholder

[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ v3_inter ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ ca ]
default_ca = CA_default

[ CA_default ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no

[ policy_any ]
commonName = supplied
"""

_LEAF_EXT = """\
[ leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, {ku}
extendedKeyUsage = {eku}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
{san}
"""


class Certs:
    """All PEM files, generated once per test run in a temporary directory.

    ca            root CA (ECDSA P-256) that signs the server and backend certificates
    inter         intermediate CA signed by ca
    default       ECDSA, CN/SAN default.test            (first listener certificate)
    shop          ECDSA P-256, SAN shop.test, *.shop.test
    other         RSA 2048, SAN other.test
    chain         leaf chain.test signed by inter; chain.pem = leaf + intermediate
    backend       ECDSA, SAN backend.test (upstream TLS)
    expired       backend.test valid 2020-01-01..2020-01-02 only (openssl ca -startdate/-enddate)
    wrong         ECDSA, SAN wrong.test (signed by ca)
    clientca      a separate CA for client certificates
    client        client certificate signed by clientca
    badclient     client certificate signed by ca (not the client CA)
    """

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ringlb-tls-certs-")
        atexit.register(shutil.rmtree, self.dir, True)
        self.cnf = self.path("openssl.cnf")
        with open(self.cnf, "w") as f:
            f.write(_OPENSSL_CNF.format(dir=self.dir))
        os.mkdir(self.path("newcerts"))
        open(self.path("index.txt"), "w").close()
        with open(self.path("serial"), "w") as f:
            f.write("1000\n")
        self._serial = 0x2000
        t0 = time.monotonic()
        self.ca = self._root("ca", "ringlb test CA")
        self.clientca = self._root("clientca", "ringlb test client CA")
        self.inter = self._intermediate("inter", "ringlb test intermediate", self.ca)
        self.default = self._leaf("default", "default.test", ["default.test"], self.ca)
        self.shop = self._leaf("shop", "shop.test", ["shop.test", "*.shop.test"], self.ca)
        self.other = self._leaf("other", "other.test", ["other.test"], self.ca, rsa=True)
        self.chain = self._leaf("chain", "chain.test", ["chain.test"], self.inter)
        with open(self.path("chain-full.pem"), "w") as f:
            f.write(self._read(self.chain["cert"]) + self._read(self.inter["cert"]))
        self.chain = dict(self.chain, cert=self.path("chain-full.pem"), leaf=self.chain["cert"])
        self.backend = self._leaf("backend", "backend.test", ["backend.test"], self.ca)
        self.expired = self._expired("expired", "backend.test", ["backend.test"], self.ca)
        self.wrong = self._leaf("wrong", "wrong.test", ["wrong.test"], self.ca)
        self.client = self._leaf("client", "client1", None, self.clientca, client=True)
        self.badclient = self._leaf("badclient", "client2", None, self.ca, client=True)
        H.log("certificates made in %.2fs in %s" % (time.monotonic() - t0, self.dir))

    def path(self, name):
        return os.path.join(self.dir, name)

    @staticmethod
    def _read(p):
        with open(p) as f:
            return f.read()

    def _run(self, args):
        r = subprocess.run(["openssl"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30, cwd=self.dir)
        if r.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
        return r.stdout

    def _key(self, name, rsa=False):
        key = self.path(name + ".key")
        if rsa:
            self._run(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key])
        else:
            self._run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key])
        return key

    def _root(self, name, cn):
        key = self._key(name)
        cert = self.path(name + ".pem")
        self._run(["req", "-config", self.cnf, "-x509", "-new", "-key", key, "-subj", "/CN=" + cn,
                   "-days", "3650", "-sha256", "-extensions", "v3_ca", "-out", cert])
        return {"cert": cert, "key": key}

    def _csr(self, name, cn, rsa=False):
        key = self._key(name, rsa)
        csr = self.path(name + ".csr")
        self._run(["req", "-config", self.cnf, "-new", "-key", key, "-subj", "/CN=" + cn, "-out", csr])
        return key, csr

    def _intermediate(self, name, cn, issuer):
        key, csr = self._csr(name, cn)
        cert = self.path(name + ".pem")
        self._serial += 1
        self._run(["x509", "-req", "-in", csr, "-CA", issuer["cert"], "-CAkey", issuer["key"],
                   "-set_serial", str(self._serial), "-days", "3650", "-sha256",
                   "-extfile", self.cnf, "-extensions", "v3_inter", "-out", cert])
        return {"cert": cert, "key": key}

    def _ext(self, name, dns, rsa, client):
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write(_LEAF_EXT.format(
                ku="digitalSignature, keyEncipherment" if rsa else "digitalSignature",
                eku="clientAuth" if client else "serverAuth",
                san=("subjectAltName = " + ", ".join("DNS:" + d for d in dns)) if dns else ""))
        return ext

    def _leaf(self, name, cn, dns, issuer, rsa=False, client=False):
        key, csr = self._csr(name, cn, rsa)
        cert = self.path(name + ".pem")
        self._serial += 1
        self._run(["x509", "-req", "-in", csr, "-CA", issuer["cert"], "-CAkey", issuer["key"],
                   "-set_serial", str(self._serial), "-days", "365", "-sha256",
                   "-extfile", self._ext(name, dns, rsa, client), "-extensions", "leaf", "-out", cert])
        return {"cert": cert, "key": key}

    def _expired(self, name, cn, dns, issuer):
        key, csr = self._csr(name, cn)
        cert = self.path(name + ".pem")
        self._run(["ca", "-batch", "-config", self.cnf, "-cert", issuer["cert"], "-keyfile", issuer["key"],
                   "-in", csr, "-out", cert, "-notext", "-md", "sha256",
                   "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
                   "-extfile", self._ext(name, dns, False, False), "-extensions", "leaf"])
        return {"cert": cert, "key": key}

    @staticmethod
    def der(pem_path):
        """DER of the first certificate in a PEM file."""
        with open(pem_path) as f:
            text = f.read()
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
        return ssl.PEM_cert_to_DER_cert(m.group(0))


_certs = None


def certs():
    global _certs
    if _certs is None:
        _certs = Certs()
    return _certs


OID_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")
OID_RSA_ENCRYPTION = bytes.fromhex("06092a864886f70d010101")


# --------------------------------------------------------------------------------------
# TLS clients

def client_ctx(minv=None, maxv=None, ciphers=None, alpn=None, cert=None, verify=True):
    """Client context trusting the test CA; names are checked by the tests themselves (so
    any SNI, or none, can be sent)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if verify:
        ctx.load_verify_locations(certs().ca["cert"])
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if minv is not None:
        ctx.minimum_version = minv
    if maxv is not None:
        ctx.maximum_version = maxv
    if ciphers:
        ctx.set_ciphers(ciphers)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert:
        ctx.load_cert_chain(cert["cert"], cert["key"])
    return ctx


class TLSClient(H.Client):
    """harness.Client over a TLS socket (request/read_response/peer_closed work as is)."""

    def __init__(self, port, sni="shop.test", ctx=None, timeout=H.DEFAULT_TIMEOUT, session=None,
                 host="127.0.0.1"):
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = (ctx or client_ctx()).wrap_socket(raw, server_hostname=sni, session=session)
        except BaseException:
            raw.close()
            raise
        self.r = H._Reader(self.sock)


def tls_get(port, target="/", sni="shop.test", ctx=None, host="shop.test", headers=(), session=None):
    """One request on a new TLS connection -> (response, ssl socket facts)."""
    with TLSClient(port, sni, ctx, session=session) as c:
        r = c.request("GET", target, host, headers)
        facts = {"version": c.sock.version(), "cipher": c.sock.cipher()[0],
                 "alpn": c.sock.selected_alpn_protocol(), "reused": c.sock.session_reused,
                 "session": c.sock.session}
        return r, facts


def try_request(port, ctx, sni="shop.test", target="/", timeout=3.0):
    """-> ("ok", Response) | ("handshake", exc) | ("refused", exc or bytes): a request over a
    new TLS connection, telling apart a handshake that fails on the client side from a
    connection the server drops afterwards (TLS 1.3 client-certificate refusal)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s = ctx.wrap_socket(raw, server_hostname=sni)   # takes over raw's descriptor
    except (ssl.SSLError, OSError) as e:
        raw.close()
        return "handshake", e
    c = H.Client.__new__(H.Client)
    c.sock, c.r = s, H._Reader(s)
    try:
        c.send(H.build_request("GET", target, "shop.test"))
        return "ok", c.read_response()
    except (ssl.SSLError, OSError, H.PeerClosed, H.IncompleteResponse) as e:
        return "refused", e
    finally:
        c.close()


def client_hello_bytes(sni="shop.test"):
    """A real ClientHello (from Python's ssl through memory BIOs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def s_client(port, args, request=None, timeout=10):
    """`openssl s_client` against 127.0.0.1:port trusting the test CA. With `request`, it is
    sent after the handshake and the output runs until the server closes (-ign_eof; send
    Connection: close); without, s_client closes right after the handshake.
    -> (returncode, stdout text, stderr text)."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", certs().ca["cert"]] + list(args)
    if request is not None:
        cmd.append("-ign_eof")
    try:
        r = subprocess.run(cmd, input=request or b"", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("openssl s_client did not finish in %ss: %s\n%r" % (timeout, " ".join(cmd),
                                                                                (e.stdout or b"")[-2000:]))
    return r.returncode, r.stdout.decode("latin-1"), r.stderr.decode("latin-1")


def negotiated(out):
    """(protocol, cipher) from s_client output, or None when no cipher was agreed. The
    protocol comes from the SSL-Session block ("New, X, Cipher is" shows the cipher's
    minimum version, e.g. TLSv1.0 for a CBC suite over TLS 1.2); for TLS 1.3 that block
    may be missing and the "New," line is exact."""
    m = re.search(r"New, (\S+), Cipher is (\S+)", out)
    if not m or m.group(2) in ("(NONE)", "0000"):
        return None
    p = re.search(r"(?m)^\s+Protocol\s*:\s*(\S+)", out)
    return (p.group(1) if p else m.group(1)), m.group(2)


REQ_CLOSE = b"GET /sclient HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n"


def curl_env():
    env = dict(os.environ)
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(k, None)
    return env


# --------------------------------------------------------------------------------------
# ringlb helpers


def stats_until(p, pred, timeout=2.0):
    """stats(p) again until pred(stats) holds or `timeout` passes (a counter may be bumped
    just after the close the client saw); returns the last stats."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        st = stats(p)
        if pred(st) or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


def delta(before, after, key):
    if key not in after:
        raise AssertionError("stats line has no %s=: %r" % (key, sorted(after)))
    return after[key] - before.get(key, 0)


def wait_port(port, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nothing accepts on 127.0.0.1:%d" % port)


def cert_entry(c, names=None):
    e = {"cert": c["cert"], "key": c["key"]}
    if names:
        e["names"] = names
    return e


def one_pool_config(listeners, backend, extra_pools=(), extra_routes=(), workers=1):
    return {
        "workers": workers,
        "listeners": listeners,
        "pools": [{"name": "p", "backends": [backend.address]}] + list(extra_pools),
        "vhosts": [{"hosts": ["*"], "routes": [{"path": "/", "pool": "p"}] + list(extra_routes)}],
    }


# --------------------------------------------------------------------------------------
# Upstream TLS backend: harness.Backend with each accepted socket wrapped by Python's ssl

class TLSBackend(H.Backend):
    """An HTTPS test backend presenting `cert` (a Certs entry). Records the SNI names
    ringlb sent (sni_names), completed handshakes (handshakes) and failed ones
    (handshake_errors); requests are logged as by harness.Backend (echo mode by default)."""

    def __init__(self, cert, mode="echo", **kw):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert["cert"], cert["key"])
        self.sni_names = []
        self.handshakes = 0
        self.handshake_errors = []
        self.ctx.sni_callback = self._on_sni
        super().__init__(mode, **kw)

    def _on_sni(self, sslobj, name, ctx):
        with self.lock:
            self.sni_names.append(name)
        return None

    def _serve_safe(self, c, cid):
        try:
            c.settimeout(10)
            s = self.ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self.lock:
                self.handshake_errors.append(repr(e))
            try:
                c.close()
            except OSError:
                pass
            return
        with self.lock:
            self.handshakes += 1
            self._conns.append(s)
        super()._serve_safe(s, cid)


# --------------------------------------------------------------------------------------
# 1-4, 8-10: termination on one listener with four certificates

class TerminationTest(H.ProxyTestCase):
    @classmethod
    def setup_class(cls):
        c = certs()
        cls.echo = cls.cbackend("echo", name="echo")
        cls.up = cls.cbackend("upload", name="upload")
        cls.down = cls.cbackend("download", name="download", size=BIG_DOWN)
        cls.port = H.free_port()
        cfg = one_pool_config(
            [{"name": "https", "address": "127.0.0.1:%d" % cls.port, "tls": {"certificates": [
                cert_entry(c.default),                       # first: the default
                cert_entry(c.shop),                          # names from the certificate
                cert_entry(c.other, names=["other.test"]),   # names given
                cert_entry(c.chain),                         # leaf + intermediate
            ]}}],
            cls.echo,
            extra_pools=[{"name": "up", "backends": [cls.up.address]},
                         {"name": "down", "backends": [cls.down.address]}],
            extra_routes=[{"path": "/up", "pool": "up"}, {"path": "/down", "pool": "down"}])
        cls.p = cls.cproxy(cfg)

    def url(self, path, name="shop.test"):
        return ["--cacert", certs().ca["cert"], "--resolve", "%s:%d:127.0.0.1" % (name, self.port),
                "https://%s:%d%s" % (name, self.port, path)]

    # 1 ----------------------------------------------------------------------------
    def _curl_version(self, flags, want_proto):
        before = stats(self.p)
        r = H.curl(["-v", "-H", "X-Forwarded-Proto: http", "-w", "\n%{http_code} %{http_version}"]
                   + flags + self.url("/curl/%s?x=1" % want_proto))
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace")[-2000:])
        err = r.stderr.decode(errors="replace")
        self.assertRegex(err, r"SSL connection using %s / " % re.escape(want_proto), err[-2000:])
        self.assertIn("ALPN: server accepted http/1.1", err)   # curl offered h2,http/1.1
        body, _, tail = r.stdout.rpartition(b"\n")
        self.assertEqual(tail, b"200 1.1")
        j = json.loads(body)
        self.assertEqual(j["target"], "/curl/%s?x=1" % want_proto)
        self.assertEqual(j["backend"], "echo")
        self.assertEqual(H.hall(j["headers"], "x-forwarded-proto"), ["https"])
        self.assertEqual(H.hget(j["headers"], "host"), "shop.test:%d" % self.port)
        after = stats(self.p)
        self.assertGreaterEqual(delta(before, after, "tls_handshakes"), 1)

    def test_01_curl_tls12(self):
        self._curl_version(["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2")

    def test_01_curl_tls13(self):
        self._curl_version(["--tlsv1.3"], "TLSv1.3")

    # 2 ----------------------------------------------------------------------------
    def _cipher_ok(self, args, want_proto, want_cipher, sni="shop.test"):
        rc, out, err = s_client(self.port, ["-servername", sni, "-verify_return_error"] + args, REQ_CLOSE)
        self.assertEqual(negotiated(out), (want_proto, want_cipher), "rc=%s out=%s err=%s" % (rc, out[-1500:], err[-800:]))
        self.assertIn("Verify return code: 0 (ok)", out)
        self.assertIn("HTTP/1.1 200 OK", out)
        self.assertIn('"target": "/sclient"', out)

    def test_02_tls12_ecdsa_ciphers(self):
        for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                       "ECDHE-ECDSA-CHACHA20-POLY1305"):
            with self.subTest(cipher=cipher):
                self._cipher_ok(["-tls1_2", "-cipher", cipher], "TLSv1.2", cipher)

    def test_02_tls12_rsa_ciphers(self):
        for cipher in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                       "ECDHE-RSA-CHACHA20-POLY1305"):
            with self.subTest(cipher=cipher):
                self._cipher_ok(["-tls1_2", "-cipher", cipher], "TLSv1.2", cipher, sni="other.test")

    def test_02_tls13_suites(self):
        for suite in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"):
            with self.subTest(suite=suite):
                self._cipher_ok(["-tls1_3", "-ciphersuites", suite], "TLSv1.3", suite)

    def test_02_python_tls12_cipher(self):
        ctx = client_ctx(maxv=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")
        r, f = tls_get(self.port, "/py12", ctx=ctx)
        self.assertEqual((f["version"], f["cipher"]), ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305"))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["target"], "/py12")

    def test_02_old_protocols_refused(self):
        for flag in ("-tls1", "-tls1_1"):
            with self.subTest(protocol=flag):
                rc, out, err = s_client(self.port, ["-servername", "shop.test", flag,
                                                    "-cipher", "DEFAULT@SECLEVEL=0"], REQ_CLOSE)
                self.assertIsNone(negotiated(out), out[-1500:])
                self.assertNotIn("HTTP/1.1", out)
                self.assertNotEqual(rc, 0)
        self.assertEqual(tls_get(self.port, "/after-old")[0].status, 200)

    def test_02_weak_tls12_suites_refused(self):
        """Default TLS 1.2 suites are ECDHE with AES-GCM or ChaCha20 only: CBC and plain-RSA
        key exchange are not agreed."""
        for cipher in ("ECDHE-ECDSA-AES128-SHA", "AES128-GCM-SHA256"):
            with self.subTest(cipher=cipher):
                sni = "shop.test" if "ECDSA" in cipher else "other.test"
                rc, out, _ = s_client(self.port, ["-servername", sni, "-tls1_2", "-cipher", cipher], REQ_CLOSE)
                self.assertIsNone(negotiated(out), out[-1500:])
                self.assertNotIn("HTTP/1.1", out)

    # 3 ----------------------------------------------------------------------------
    def _presented(self, sni):
        with TLSClient(self.port, sni) as c:
            der = c.sock.getpeercert(binary_form=True)
            info = c.sock.getpeercert()
            r = c.request("GET", "/sni", sni or "nosni.test")
            self.assertEqual(r.status, 200)
        return der, info

    def test_03_sni(self):
        c = certs()
        cases = [("shop.test", c.shop["cert"], "shop.test", OID_EC_PUBLIC_KEY),
                 ("a.shop.test", c.shop["cert"], "shop.test", OID_EC_PUBLIC_KEY),
                 ("other.test", c.other["cert"], "other.test", OID_RSA_ENCRYPTION),
                 ("unknown.test", c.default["cert"], "default.test", OID_EC_PUBLIC_KEY),
                 (None, c.default["cert"], "default.test", OID_EC_PUBLIC_KEY)]
        for sni, cert, cn, oid in cases:
            with self.subTest(sni=sni):
                der, info = self._presented(sni)
                self.assertEqual(der, Certs.der(cert), "sni %r: wrong certificate %r" % (sni, info.get("subject")))
                self.assertEqual(info["subject"], ((("commonName", cn),),))
                self.assertIn(oid, der)
        _, info = self._presented("a.shop.test")
        self.assertEqual(info["subjectAltName"], (("DNS", "shop.test"), ("DNS", "*.shop.test")))

    def test_03_chain_sent(self):
        rc, out, err = s_client(self.port, ["-servername", "chain.test", "-showcerts", "-verify_return_error"])
        self.assertEqual(out.count("-----BEGIN CERTIFICATE-----"), 2, out[-3000:])
        self.assertIn("Verify return code: 0 (ok)", out)
        self.assertRegex(out, r"s:\s*CN\s*=\s*chain\.test")
        self.assertRegex(out, r"s:\s*CN\s*=\s*ringlb test intermediate")
        # Python, trusting only the root, verifies too: the intermediate came from ringlb
        der, info = self._presented("chain.test")
        self.assertEqual(der, Certs.der(certs().chain["leaf"]))

    # 4 ----------------------------------------------------------------------------
    def test_04_alpn_http11(self):
        r, f = tls_get(self.port, "/alpn", ctx=client_ctx(alpn=["h2", "http/1.1"]))
        self.assertEqual(f["alpn"], "http/1.1")
        self.assertEqual(r.status, 200)

    def test_04_alpn_h2_only_refused(self):
        """Only h2 offered: no protocol in common is a fatal no_application_protocol alert
        (RFC 7301 3.2), for TLS 1.2 and 1.3; the handshake failure is counted and the
        listener goes on serving."""
        before = stats(self.p)
        for maxv in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(version=maxv.name):
                with self.assertRaises(ssl.SSLError) as cm:
                    tls_get(self.port, "/alpn-h2", ctx=client_ctx(maxv=maxv, alpn=["h2"]))
                # (Python's ssl leaves .reason None for this alert: match the message)
                self.assertIn("alert no application protocol", str(cm.exception))
        r, f = tls_get(self.port, "/after-alpn", ctx=client_ctx(alpn=["http/1.1"]))
        self.assertEqual((r.status, f["alpn"]), (200, "http/1.1"))
        after = stats_until(self.p, lambda st: delta(before, st, "tls_handshake_failures") >= 2)
        self.assertEqual(delta(before, after, "tls_handshake_failures"), 2)

    def test_04_no_alpn(self):
        r, f = tls_get(self.port, "/no-alpn")
        self.assertIsNone(f["alpn"])
        self.assertEqual(r.status, 200)

    # 8 ----------------------------------------------------------------------------
    def _garbage(self, data, wait=2.0):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=3)
        try:
            s.sendall(data)
            got, closed = b"", False
            deadline = time.monotonic() + wait * SLOW
            s.settimeout(0.1)
            while time.monotonic() < deadline:
                try:
                    d = s.recv(4096)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    closed = True
                    break
                if not d:
                    closed = True
                    break
                got += d
            return closed, got
        finally:
            s.close()

    def test_08_garbage(self):
        before = stats(self.p)
        # a complete handshake record holding a truncated ClientHello: decode_error alert
        bad_hello = b"\x16\x03\x01\x00\x20" + b"\x01\x00\x00\x1c" + b"\x03\x03" + b"\x00" * 26
        closed, got = self._garbage(bad_hello)
        self.assertTrue(closed, "malformed ClientHello: not closed within 2 s")
        self.assertEqual(got[:1], b"\x15", "no alert record for a malformed ClientHello: %r" % got[:20])
        rnd = bytearray(random.Random(7).randbytes(64))
        rnd[0] = 0x99   # no such record type: nothing to wait for
        closed, got = self._garbage(bytes(rnd))
        self.assertTrue(closed, "random bytes: not closed within 2 s")
        self.assertTrue(got == b"" or got[:1] == b"\x15",
                        "random bytes: answered with something other than an alert: %r" % got[:40])
        # plain HTTP to the TLS port: told so in plain HTTP, then closed
        closed, got = self._garbage(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        self.assertTrue(closed, "plaintext HTTP: not closed within 2 s")
        head, sep, body = got.partition(b"\r\n\r\n")
        self.assertTrue(sep, "plaintext HTTP: no HTTP answer: %r" % got[:60])
        start, headers, _ = H.parse_head(head + sep)
        self.assertEqual(start, "HTTP/1.1 400 Bad Request")
        self.assertEqual(H.conn_tokens(headers), ["close"])
        self.assertEqual(H.hget(headers, "content-length"), str(len(body)))
        r, _ = tls_get(self.port, "/after-garbage")
        self.assertEqual(r.status, 200)
        after = stats_until(self.p, lambda st: delta(before, st, "tls_handshake_failures") >= 3)
        self.assertGreaterEqual(delta(before, after, "tls_handshake_failures"), 3)

    def test_09_close_notify_before_fin(self):
        """A response ended by the close comes with close_notify (TLS 1.2 and 1.3): a client that
        refuses ragged EOFs reads it to the end without a truncation error."""
        for maxv in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(version=maxv.name):
                raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                s = client_ctx(maxv=maxv).wrap_socket(raw, server_hostname="shop.test", suppress_ragged_eofs=False)
                s.sendall(b"GET /bye HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    d = s.recv(65536)   # SSLEOFError here: the FIN came without close_notify
                    if not d:
                        break
                    data += d
                s.close()
                self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])
                self.assertIn(b"/bye", data)

    # 9 ----------------------------------------------------------------------------
    def test_09_keepalive_100(self):
        before_conns = self.echo.conn_count
        before = stats(self.p)
        with TLSClient(self.port, "shop.test") as c:
            for i in range(100):
                r = c.request("GET", "/ka/%d" % i, "shop.test")
                self.assertEqual(r.status, 200)
                self.assertEqual(r.header("content-length"), str(len(r.body)))
                j = r.json()
                self.assertEqual(j["target"], "/ka/%d" % i)
                self.assertEqual(H.hall(j["headers"], "x-forwarded-proto"), ["https"])
            self.assertFalse(c.sock.session_reused)
        after = stats(self.p)
        self.assertEqual(delta(before, after, "tls_handshakes"), 1)
        self.assertLessEqual(self.echo.conn_count - before_conns, 2,
                             "100 keep-alive requests opened %d backend connections" % (self.echo.conn_count - before_conns))

    # 10 ---------------------------------------------------------------------------
    def test_10_big_download_curl(self):
        want = H.pattern_sha256(BIG_DOWN)
        base = self.p.rss_kib()
        cmd = ["curl", "-sS", "--max-time", "40", "--noproxy", "*", "-o", "-",
               "-w", "%{stderr}SIZE=%{size_download} CODE=%{http_code}\n"] + self.url("/down/big")
        h = hashlib.sha256()
        got = 0
        with RssSampler(self.p) as s:
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=curl_env())
            with H._procs_lock:
                H._procs.append(p)
            buf = bytearray(1 << 20)
            while True:
                n = p.stdout.readinto(buf)
                if not n:
                    break
                h.update(memoryview(buf)[:n])
                got += n
            err = p.stderr.read().decode(errors="replace")
            rc = p.wait(timeout=10)
        H.log("tls download: rss base %d KiB, peak %d KiB, %d samples" % (base, s.peak, len(s.samples)))
        self.assertEqual(rc, 0, err)
        self.assertIn("SIZE=%d CODE=200" % BIG_DOWN, err)
        self.assertEqual(got, BIG_DOWN)
        self.assertEqual(h.hexdigest(), want)
        self.assertGreater(len(s.samples), 0)
        if not SANITIZED:
            self.assertLess(s.peak - base, RSS_LIMIT_KIB, "proxy RSS grew by %d KiB" % (s.peak - base))

    def test_10_big_upload(self):
        want = H.pattern_sha256(BIG_UP)
        base = self.p.rss_kib()
        with TLSClient(self.port, "shop.test", timeout=30) as c, RssSampler(self.p) as s:
            c.send(H.build_request("POST", "/up/big", "shop.test", headers=[("Content-Length", str(BIG_UP))]))
            for chunk in H.pattern_chunks(BIG_UP, 256 * 1024):
                c.sock.sendall(chunk)
            r = c.read_response()
        H.log("tls upload: rss base %d KiB, peak %d KiB, %d samples" % (base, s.peak, len(s.samples)))
        self.assertEqual(r.status, 200, r.body[:200])
        self.assertEqual(r.json(), {"bytes": BIG_UP, "sha256": want})
        self.assertGreater(len(s.samples), 0)
        if not SANITIZED:
            self.assertLess(s.peak - base, RSS_LIMIT_KIB, "proxy RSS grew by %d KiB" % (s.peak - base))


# --------------------------------------------------------------------------------------
# 5: session resumption across two workers

class ResumptionTest(H.ProxyTestCase):
    N = 20

    @classmethod
    def setup_class(cls):
        c = certs()
        cls.echo = cls.cbackend("echo", name="echo")
        cls.port = H.free_port()
        cls.p = cls.cproxy(one_pool_config(
            [{"name": "https", "address": "127.0.0.1:%d" % cls.port,
              "tls": {"certificates": [cert_entry(c.shop)]}}], cls.echo, workers=2))

    def _resume(self, ctx, want_version):
        before = stats(self.p)
        r, f = tls_get(self.port, "/first", ctx=ctx)   # a response read: TLS 1.3 tickets have arrived
        self.assertEqual(r.status, 200)
        self.assertEqual(f["version"], want_version)
        self.assertFalse(f["reused"])
        sess = f["session"]
        self.assertIsNotNone(sess)
        self.assertTrue(sess.has_ticket, "no session ticket received")
        reused = []
        for i in range(self.N):
            r, f = tls_get(self.port, "/again/%d" % i, ctx=ctx, session=sess)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["target"], "/again/%d" % i)
            self.assertEqual(f["version"], want_version)
            reused.append(f["reused"])
        self.assertEqual(reused, [True] * self.N, "resumed: %d of %d (ticket keys not shared by the workers?)"
                         % (sum(reused), self.N))
        # a fresh context has no session: a full handshake
        r, f = tls_get(self.port, "/fresh", ctx=client_ctx(maxv=ctx.maximum_version))
        self.assertFalse(f["reused"])
        after = stats(self.p)
        self.assertGreaterEqual(delta(before, after, "tls_resumed"), self.N)
        self.assertGreaterEqual(delta(before, after, "tls_handshakes"), self.N + 2)

    def test_05_tls13_resumption(self):
        self._resume(client_ctx(minv=ssl.TLSVersion.TLSv1_3), "TLSv1.3")

    def test_05_tls12_resumption(self):
        self._resume(client_ctx(maxv=ssl.TLSVersion.TLSv1_2), "TLSv1.2")


# --------------------------------------------------------------------------------------
# 6: TLS to the backends

class UpstreamTLSTest(H.ProxyTestCase):
    @classmethod
    def setup_class(cls):
        c = certs()
        cls.good = cls.cbackend_tls(c.backend, name="tls-good")
        cls.expired = cls.cbackend_tls(c.expired, name="tls-expired")
        cls.wrong = cls.cbackend_tls(c.wrong, name="tls-wrong")
        cls.wrong2 = cls.cbackend_tls(c.wrong, name="tls-wrong-noverify")
        cls.plain = cls.cbackend("echo", name="plain")
        tls = {"ca": c.ca["cert"], "sni": "backend.test"}
        pools, routes = [], []
        for name, b, t in (("good", cls.good, tls), ("expired", cls.expired, tls), ("wrong", cls.wrong, tls),
                           ("noverify", cls.wrong2, {"verify": False, "sni": "backend.test"})):
            pools.append({"name": name, "backends": [b.address], "tls": t})
            routes.append({"path": "/" + name, "pool": name})
        cls.port = H.free_port()
        cls.p = cls.cproxy(one_pool_config([{"name": "web", "address": "127.0.0.1:%d" % cls.port}],
                                           cls.plain, extra_pools=pools, extra_routes=routes))

    @classmethod
    def cbackend_tls(cls, cert, **kw):
        b = TLSBackend(cert, **kw)
        cls._class_objs.append(b)
        return b

    def test_06_verified(self):
        r = H.get_once(self.port, "/good/x?y=1", host="shop.test")
        self.assertEqual(r.status, 200, r.body[:300])
        j = r.json()
        self.assertEqual(j["backend"], "tls-good")
        self.assertEqual(j["target"], "/good/x?y=1")
        self.assertEqual(H.hall(j["headers"], "x-forwarded-proto"), ["http"])
        with self.good.lock:
            self.assertIn("backend.test", self.good.sni_names)
            self.assertEqual(set(self.good.sni_names), {"backend.test"})
        self.assertTrue(self.good.completed())

    def test_06_verified_keepalive(self):
        """Upstream TLS connections are pooled like plain ones: three requests in a row, one
        backend handshake."""
        before = self.good.handshakes
        with H.Client(self.port) as c:
            for i in range(3):
                r = c.request("GET", "/good/ka%d" % i)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.json()["target"], "/good/ka%d" % i)
        self.assertLessEqual(self.good.handshakes - before, 1)

    def test_06_expired_502(self):
        r = H.get_once(self.port, "/expired/x")
        self.assertEqual(r.status, 502, r.body[:300])
        time.sleep(0.2)
        self.assertEqual(self.expired.requests, [], "a request reached the backend with the expired certificate")
        self.assertEqual(self.expired.all_raw(), b"", "request bytes were sent over the rejected connection")

    def test_06_wrong_name_502(self):
        r = H.get_once(self.port, "/wrong/x")
        self.assertEqual(r.status, 502, r.body[:300])
        time.sleep(0.2)
        self.assertEqual(self.wrong.requests, [], "a request reached the backend with the wrong name")
        self.assertEqual(self.wrong.all_raw(), b"", "request bytes were sent over the rejected connection")

    def test_06_wrong_name_verify_off(self):
        r = H.get_once(self.port, "/noverify/x")
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(r.json()["backend"], "tls-wrong-noverify")
        self.assertEqual(len(self.wrong2.completed()), 1)


    def test_06_health_checks_speak_tls(self):
        """Health checks of a TLS pool handshake and verify like requests do: the good backend stays
        up, the one whose certificate names another host goes DOWN with the TLS reason."""
        c = certs()
        good = self.backend_tls(c.backend, name="hc-good")
        wrong = self.backend_tls(c.wrong, name="hc-wrong")
        check = {"path": "/healthz", "interval": "200ms", "timeout": "200ms", "rise": 1, "fall": 1}
        tls = {"ca": c.ca["cert"], "sni": "backend.test"}
        port = H.free_port()
        p = self.proxy({
            "workers": 1,
            "listeners": [{"name": "web", "address": "127.0.0.1:%d" % port}],
            "pools": [{"name": "good", "backends": [good.address], "tls": tls, "health_check": check},
                      {"name": "bad", "backends": [wrong.address], "tls": tls, "health_check": check}],
            "vhosts": [{"hosts": ["*"], "routes": [{"path": "/", "pool": "good"}, {"path": "/bad", "pool": "bad"}]}],
        })
        deadline = time.monotonic() + 3
        while "is DOWN" not in p.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertRegex(p.log(), r"pool bad backend 127\.0\.0\.1:\d+ is DOWN \(TLS handshake: .*CERTIFICATE_VERIFY_FAILED")
        deadline = time.monotonic() + 3
        checks = []
        while len(checks) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            with good.lock:
                checks = [r for r in good.requests if r.get("target") == "/healthz"]
        self.assertGreaterEqual(len(checks), 3, "the good TLS backend was not probed over TLS")
        self.assertNotRegex(p.log(), r"pool good .* is DOWN")
        r = H.get_once(port, "/x")
        self.assertEqual(r.status, 200, r.body[:200])

    def backend_tls(self, cert, **kw):
        b = TLSBackend(cert, **kw)
        self._objs.append(b)
        return b


# --------------------------------------------------------------------------------------
# 7: handshake timeout

class HandshakeTimeoutTest(H.ProxyTestCase):
    @classmethod
    def setup_class(cls):
        c = certs()
        cls.echo = cls.cbackend("echo", name="echo")
        cls.port = H.free_port()
        # defer_accept off: a client that sends nothing is accepted (and timed) at once
        cls.p = cls.cproxy(one_pool_config(
            [{"name": "https", "address": "127.0.0.1:%d" % cls.port, "defer_accept": False,
              "tls": {"certificates": [cert_entry(c.shop)], "handshake_timeout": "1s"}}], cls.echo))

    def test_07_stalled_handshakes_closed(self):
        before = stats(self.p)
        hello = client_hello_bytes()
        self.assertGreater(len(hello), 20)
        stalled = []
        for first in (b"", hello[:20]):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            if first:
                s.sendall(first)
            stalled.append((s, time.monotonic()))
        closed_at = [None, None]

        def watch(i):
            s, t0 = stalled[i]
            s.settimeout(4 * SLOW)
            try:
                while s.recv(4096):
                    pass
            except socket.timeout:
                return
            except OSError:
                pass
            closed_at[i] = time.monotonic() - t0

        ws = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(2)]
        for w in ws:
            w.start()
        time.sleep(0.3)
        t = time.monotonic()
        r, _ = tls_get(self.port, "/meanwhile")
        served_in = time.monotonic() - t
        self.assertEqual(r.status, 200)
        self.assertLess(served_in, 0.5 * SLOW, "a normal client waited %.2fs behind stalled handshakes" % served_in)
        for w in ws:
            w.join(6 * SLOW)
        for s, _ in stalled:
            s.close()
        for name, at in zip(("silent", "20 bytes of ClientHello"), closed_at):
            self.assertIsNotNone(at, "%s client not closed by handshake_timeout 1s" % name)
            self.assertGreaterEqual(at, 0.5, "%s client closed after %.2fs, before the timeout" % (name, at))
            self.assertLess(at, 3.0 * SLOW, "%s client closed only after %.2fs" % (name, at))
        after = stats_until(self.p, lambda st: delta(before, st, "timeouts") >= 2
                            and delta(before, st, "tls_handshake_failures") >= 1)
        failures = delta(before, after, "tls_handshake_failures")
        timeouts = delta(before, after, "timeouts")
        H.log("stalled handshakes: tls_handshake_failures +%d, timeouts +%d" % (failures, timeouts))
        # both fired the handshake timer; only the one that sent bytes failed a handshake
        self.assertEqual((timeouts, failures), (2, 1))
        self.assertEqual(tls_get(self.port, "/after")[0].status, 200)


# --------------------------------------------------------------------------------------
# 11: redirect_https

class RedirectTest(H.ProxyTestCase):
    @classmethod
    def setup_class(cls):
        cls.echo = cls.cbackend("echo", name="echo")
        cls.port = H.free_port()
        cls.port443 = H.free_port()
        cls.p = cls.cproxy(one_pool_config(
            [{"name": "plain", "address": "127.0.0.1:%d" % cls.port, "redirect_https": 8443},
             {"name": "plain443", "address": "127.0.0.1:%d" % cls.port443, "redirect_https": True}], cls.echo))
        wait_port(cls.port443)

    def test_11_redirect(self):
        cases = [(self.port, "shop.test", "https://shop.test:8443/a?b=1"),
                 (self.port, "shop.test:%d" % self.port, "https://shop.test:8443/a?b=1"),
                 (self.port443, "shop.test", "https://shop.test/a?b=1")]
        for port, host, want in cases:
            with self.subTest(port=port, host=host):
                r = H.get_once(port, "/a?b=1", host=host)
                self.assertEqual(r.status, 308)
                self.assertEqual(r.headers_all("location"), [want])
        res = H.curl(["-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                      "http://shop.test:%d/a?b=1" % self.port, "--resolve", "shop.test:%d:127.0.0.1" % self.port])
        self.assertEqual(res.stdout, b"308 https://shop.test:8443/a?b=1")
        self.assertEqual(self.echo.conn_count, 0, "redirect_https contacted a backend")
        self.assertEqual(self.echo.requests, [])


# --------------------------------------------------------------------------------------
# 12: configuration errors and one-line mode

CFG_TEMPLATE = """\
workers: 1
listeners:
  - name: https
    address: 127.0.0.1:{port}
    tls:
      certificates:
        - cert: {cert}
          key: {key}
{extra}pools:
  - name: p
    backends: [127.0.0.1:9]
vhosts:
  - hosts: ["*"]
    routes:
      - path: /
        pool: p
"""


class ConfigTest(H.ProxyTestCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="ringlb-tls-cfg-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def write(self, name, cert, key, extra=""):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(CFG_TEMPLATE.format(port=H.free_port(), cert=cert, key=key, extra=extra))
        return path

    def refused(self, path, where):
        """Both -t and a real start fail, naming FILE:LINE:COLUMN (regex `where` after the
        file name)."""
        name = os.path.basename(path)
        for args in (["-t", "-c", path], ["-c", path]):
            with self.subTest(args=args[:-1]):
                r = H.run_ringlb(args, timeout=5)
                self.assertIsNotNone(r.returncode, "ringlb started with %s" % name)
                self.assertNotEqual(r.returncode, 0, r.stderr)
                self.assertRegex(r.stderr, re.escape(name) + ":" + where, "stderr: %r" % r.stderr)
        return r.stderr

    def test_12_good_config_validates(self):
        c = certs()
        path = self.write("tls_good.yaml", c.shop["cert"], c.shop["key"])
        r = H.run_ringlb(["-t", "-c", path])
        self.assertEqual(r.returncode, 0, "stdout=%r stderr=%r" % (r.stdout, r.stderr))

    def test_12_missing_cert_file(self):
        c = certs()
        missing = os.path.join(self.tmp, "nope.pem")
        err = self.refused(self.write("tls_missing.yaml", missing, c.shop["key"]), r"7:17\b")  # the cert value
        self.assertIn("nope.pem", err)

    def test_12_key_does_not_match(self):
        c = certs()
        for what, key in (("RSA key for an ECDSA certificate", c.other["key"]),
                          ("another P-256 key", c.default["key"])):
            with self.subTest(what):
                err = self.refused(self.write("tls_mismatch.yaml", c.shop["cert"], key), r"8:16\b")  # the key value
                self.assertIn(os.path.basename(key), err)

    def test_12_unknown_tls_key(self):
        c = certs()
        err = self.refused(self.write("tls_unknown.yaml", c.shop["cert"], c.shop["key"],
                                      extra="      bogus_option: 1\n"), r"9:7\b")
        self.assertIn("bogus_option", err)

    def test_12_one_line_mode(self):
        c = certs()
        b = self.backend("echo", name="echo")
        port = H.free_port()
        p = self.proxy(args=["--listen", "127.0.0.1:%d" % port, "--tls-cert", c.shop["cert"],
                             "--tls-key", c.shop["key"], "--backend", b.address])
        r, f = tls_get(port, "/one-line")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["target"], "/one-line")
        self.assertEqual(H.hall(r.json()["headers"], "x-forwarded-proto"), ["https"])
        self.assertIn(f["version"], ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(p.stop(), 0, p.log())

    def test_12_one_line_mode_ktls_off(self):
        c = certs()
        b = self.backend("echo", name="echo")
        port = H.free_port()
        p = self.proxy(args=["--listen", "127.0.0.1:%d" % port, "--tls-cert", c.shop["cert"],
                             "--tls-key", c.shop["key"], "--ktls", "off", "--backend", b.address])
        self.assertEqual(tls_get(port, "/ktls-off")[0].status, 200)
        st = stats(p)
        self.assertEqual((st.get("ktls_tx"), st.get("ktls_rx"), st.get("ktls_fallbacks")), (0, 0, 0))


# --------------------------------------------------------------------------------------
# 13: kTLS requested on a kernel without the tls module

class KtlsTest(H.ProxyTestCase):
    def test_13_ktls_fallback(self):
        c = certs()
        b = self.backend("download", name="dl", size=1 << 20)
        port = H.free_port()
        p = self.proxy(one_pool_config(
            [{"name": "https", "address": "127.0.0.1:%d" % port,
              "tls": {"certificates": [cert_entry(c.shop)], "ktls": True}}], b))
        want = H.pattern_sha256(1 << 20)
        n = 0
        for maxv in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            for i in range(3):
                with TLSClient(port, "shop.test", client_ctx(maxv=maxv)) as cl:
                    for j in range(2):   # keep-alive after the (attempted) switch to kTLS
                        r = cl.request("GET", "/k/%d/%d" % (i, j), "shop.test")
                        self.assertEqual(r.status, 200)
                        self.assertEqual(hashlib.sha256(r.body).hexdigest(), want)
                n += 1
        st = stats(p)
        H.log("ktls stats: tx=%s rx=%s fallbacks=%s" % (st.get("ktls_tx"), st.get("ktls_rx"), st.get("ktls_fallbacks")))
        self.assertGreaterEqual(st.get("tls_handshakes", 0), n)
        if os.path.exists("/sys/module/tls"):
            self.assertGreaterEqual(st["ktls_tx"] + st["ktls_fallbacks"], 1)
        else:
            # every connection stayed on userspace TLS and is counted so (docs/tls.md: a
            # count of connections)
            self.assertEqual(st.get("ktls_fallbacks"), n, st)
            self.assertEqual(st.get("ktls_tx"), 0)
            self.assertEqual(st.get("ktls_rx"), 0)
            # "A worker logs the first refusal it meets": one worker, one line, not one per connection
            other = [ln for ln in full_log(p).splitlines() if re.search(r"(?i)ktls|kernel tls|TCP_ULP", ln)
                     and "stats (" not in ln]
            self.assertEqual(len(other), 1, "kTLS refusal log lines: %r" % other)


# --------------------------------------------------------------------------------------
# 14: client certificates

class ClientCertTest(H.ProxyTestCase):
    @classmethod
    def setup_class(cls):
        c = certs()
        cls.echo = cls.cbackend("echo", name="echo")
        cls.req_port = H.free_port()
        cls.opt_port = H.free_port()
        base = {"certificates": [cert_entry(c.shop)], "client_ca": c.clientca["cert"]}
        cls.p = cls.cproxy(one_pool_config(
            [{"name": "required", "address": "127.0.0.1:%d" % cls.req_port,
              "tls": dict(base, verify_client="required")},
             {"name": "optional", "address": "127.0.0.1:%d" % cls.opt_port,
              "tls": dict(base, verify_client="optional")}], cls.echo))
        wait_port(cls.opt_port)

    def test_14_required(self):
        c = certs()
        for maxv in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(version=maxv.name):
                n0 = len(self.echo.requests)
                kind, res = try_request(self.req_port, client_ctx(maxv=maxv), target="/nocert")
                self.assertNotEqual(kind, "ok", "served without a client certificate: %r" % (res,))
                kind, res = try_request(self.req_port, client_ctx(maxv=maxv, cert=c.badclient), target="/badcert")
                self.assertNotEqual(kind, "ok", "served with a certificate from another CA: %r" % (res,))
                self.assertEqual(len(self.echo.requests), n0, "a refused client's request reached the backend")
                kind, res = try_request(self.req_port, client_ctx(maxv=maxv, cert=c.client), target="/cert")
                self.assertEqual(kind, "ok", res)
                self.assertEqual(res.status, 200)
                self.assertEqual(res.json()["target"], "/cert")

    def test_14_optional(self):
        c = certs()
        for name, cert in (("none", None), ("good", c.client)):
            with self.subTest(cert=name):
                kind, res = try_request(self.opt_port, client_ctx(cert=cert), target="/opt-" + name)
                self.assertEqual(kind, "ok", res)
                self.assertEqual(res.status, 200)
                self.assertEqual(res.json()["target"], "/opt-" + name)



class BufferPressureTest(H.ProxyTestCase):
    def test_16_tls_clients_outnumber_receive_buffers(self):
        """64 receive buffers of 4 KiB and 120 TLS clients sending at once: receives run dry
        (ENOBUFS) mid-handshake and mid-request, and every client is still served in full."""
        c = certs()
        echo = self.backend("echo", name="echo")
        port = H.free_port()
        cfg = one_pool_config([{"name": "https", "address": "127.0.0.1:%d" % port,
                                "tls": {"certificates": [cert_entry(c.shop)]}}], echo)
        cfg["buffers"] = {"client_count": 64, "client_size": "4k"}
        p = self.proxy(cfg)
        wait_port(port)
        body = os.urandom(200 * 1024)
        results, errors = [], []

        def one(i):
            try:
                with TLSClient(port, timeout=15) as cl:
                    r = cl.request("POST", "/p/%d" % i, "shop.test", [("Content-Length", str(len(body)))], body)
                    results.append((i, r.status, r.json()["body_sha256"] if "body_sha256" in r.json() else None,
                                    r.json().get("body_len")))
            except Exception as e:  # noqa: BLE001
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(120)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 120)
        self.assertTrue(all(st == 200 for _, st, _, _ in results), results[:5])
        want = hashlib.sha256(body).hexdigest()
        for i, _, sha, n in results:
            if sha is not None:
                self.assertEqual(sha, want, "request %d" % i)
            if n is not None:
                self.assertEqual(n, len(body), "request %d" % i)
        self.assertGreater(stats(p)["enobufs"], 0, "the receive buffers never ran dry: the test proves nothing")
        self.assertIsNone(p.proc.poll())


class ReloadTest(H.ProxyTestCase):
    """SIGHUP: new certificates for new connections, open connections untouched, a bad file changes nothing."""

    def _presented_cn(self, port):
        raw = socket.create_connection(("127.0.0.1", port), timeout=3)
        ctx = client_ctx(verify=False)
        with ctx.wrap_socket(raw, server_hostname="shop.test") as s:
            der = s.getpeercert(binary_form=True)
        out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der,
                             capture_output=True, check=True).stdout.decode()
        return out.strip()

    def test_15_sighup_reloads_certificates(self):
        c = certs()
        echo = self.backend("echo", name="echo")
        port = H.free_port()
        live = os.path.join(tempfile.mkdtemp(prefix="ringlb-reload-"), "live")
        os.mkdir(live)
        atexit.register(shutil.rmtree, os.path.dirname(live), True)
        for src, dst in ((c.shop["cert"], "cert.pem"), (c.shop["key"], "key.pem")):
            shutil.copy(src, os.path.join(live, dst))
        p = self.proxy(one_pool_config(
            [{"name": "https", "address": "127.0.0.1:%d" % port,
              "tls": {"certificates": [{"cert": os.path.join(live, "cert.pem"),
                                        "key": os.path.join(live, "key.pem")}]}}], echo, workers=2))
        wait_port(port)
        self.assertIn("shop.test", self._presented_cn(port))
        old = TLSClient(port)
        r = old.request("GET", "/before", "shop.test")
        self.assertEqual(r.status, 200)

        # A broken replacement: refused with its place in the file, the running certificate stays.
        with open(os.path.join(live, "cert.pem"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        p.signal(signal.SIGHUP)
        deadline = time.monotonic() + 3
        while "reload refused" not in p.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertRegex(p.log(), r"reload refused, the running configuration stays: .*ringlb\.yaml:\d+:\d+: "
                                  r"cannot load certificate")
        self.assertIn("shop.test", self._presented_cn(port))

        # The real replacement.
        for src, dst in ((c.other["cert"], "cert.pem"), (c.other["key"], "key.pem")):
            shutil.copy(src, os.path.join(live, dst))
        p.signal(signal.SIGHUP)
        deadline = time.monotonic() + 3
        while "TLS certificates, keys and settings reloaded" not in p.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = set()
        for _ in range(8):  # both workers
            seen.add(self._presented_cn(port))
        self.assertEqual(len(seen), 1, seen)
        self.assertIn("other.test", seen.pop())
        # The connection opened before the reload carries on with its session.
        r = old.request("GET", "/after", "shop.test")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["target"], "/after")
        old.close()
        self.assertIsNone(p.proc.poll())


if __name__ == "__main__":
    H.main(budget=150)
