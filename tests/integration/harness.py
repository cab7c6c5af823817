"""Shared helpers for the ringlb integration tests (Python 3.11 stdlib only).

- Backend: a threaded test HTTP/1.1 server on its own 127.0.0.1 (or ::1) port with a
  connection counter, a request log and selectable behaviours (see Backend.__doc__).
- Proxy: starts ringlb with a YAML config (dict rendered to YAML in a temp dir) or with
  one-line flags, waits until its port accepts, collects stderr to a log file, stops it
  with SIGTERM and returns its exit status, reads its VmRSS.
- Client: raw-socket HTTP/1.1 client (send bytes, read responses framed by
  Content-Length / chunked / close, pipelining, peer-close detection).

Every process started here is recorded and killed by PID at exit or by the watchdog.
"""

import atexit
import base64
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SOURCE_ROOT = os.environ.get("RINGLB_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
RINGLB = os.environ.get("RINGLB") or os.path.join(SOURCE_ROOT, "build", "ringlb")
if not os.path.isabs(RINGLB):
    RINGLB = os.path.abspath(RINGLB)

DEFAULT_TIMEOUT = 5.0

_procs = []          # Popen objects started by this process
_procs_lock = threading.Lock()


def _kill_all():
    with _procs_lock:
        procs = list(_procs)
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()          # by PID (Popen.kill -> os.kill(p.pid, SIGKILL))
            except OSError:
                pass
            try:
                p.wait(timeout=5)
            except Exception:
                pass


atexit.register(_kill_all)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Ports / addresses

def free_port(host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def ipv6_available():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def split_addr(addr):
    """'127.0.0.1:80' / '[::1]:80' / 'localhost:80' / '*:80' -> (host, port) to connect to."""
    m = re.match(r"^\[(.*)\]:(\d+)$", addr)
    if m:
        host = m.group(1)
        return ("::1" if host == "::" else host), int(m.group(2))
    host, port = addr.rsplit(":", 1)
    if host in ("*", "0.0.0.0", "localhost"):
        host = "127.0.0.1"
    return host, int(port)


# --------------------------------------------------------------------------------------
# Deterministic data pattern for big transfers (period is a prime so misplaced
# blocks are detected).

PATTERN_PERIOD = 65521
_PATTERN = bytes(((i * 7) + (i >> 8) * 13) & 0xFF for i in range(PATTERN_PERIOD))
_PATTERN_BIG = _PATTERN * 6  # > 256 KiB + period
_sha_cache = {}


def pattern_chunks(total, chunk=256 * 1024):
    """Yields memoryviews covering `total` bytes of the pattern, at most `chunk` each."""
    chunk = min(chunk, len(_PATTERN_BIG) - PATTERN_PERIOD)
    mv = memoryview(_PATTERN_BIG)
    off = 0
    while off < total:
        n = min(chunk, total - off)
        start = off % PATTERN_PERIOD
        yield mv[start:start + n]
        off += n


def pattern_sha256(total):
    if total not in _sha_cache:
        h = hashlib.sha256()
        for c in pattern_chunks(total, 1 << 18):
            h.update(c)
        _sha_cache[total] = h.hexdigest()
    return _sha_cache[total]


def chunk_payload(i, size):
    """Body bytes of chunk i of the `chunked` backend."""
    return bytes(((i * 31) + j) & 0xFF for j in range(size))


# --------------------------------------------------------------------------------------
# Buffered socket reader (shared by backend and client)

class PeerClosed(Exception):
    pass


class _Reader:
    def __init__(self, sock, capture=None, capture_limit=1 << 20):
        self.sock = sock
        self.buf = bytearray()
        self.capture = capture          # bytearray receiving a copy of every byte read
        self.capture_limit = capture_limit

    def fill(self, n=65536):
        d = self.sock.recv(n)
        if not d:
            raise PeerClosed()
        if self.capture is not None and len(self.capture) < self.capture_limit:
            self.capture += d[: self.capture_limit - len(self.capture)]
        self.buf += d
        return len(d)

    def read_until(self, delim, limit):
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                out = bytes(self.buf[: i + len(delim)])
                del self.buf[: i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise ValueError("line/head too long")
            start = max(0, len(self.buf) - len(delim) + 1)
            self.fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill(max(65536, min(n - len(self.buf), 1 << 20)))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def consume(self, n, sink):
        """Reads exactly n bytes passing memoryviews to sink (no big allocation)."""
        if self.buf:
            take = min(n, len(self.buf))
            sink(memoryview(self.buf)[:take].tobytes())
            del self.buf[:take]
            n -= take
        bufsz = 1 << 18
        rb = bytearray(bufsz)
        mv = memoryview(rb)
        while n > 0:
            got = self.sock.recv_into(mv, min(bufsz, n))
            if got == 0:
                raise PeerClosed()
            if self.capture is not None and len(self.capture) < self.capture_limit:
                self.capture += mv[: min(got, self.capture_limit - len(self.capture))]
            sink(mv[:got])
            n -= got

    def read_to_close(self, limit=1 << 30):
        try:
            while len(self.buf) <= limit:
                self.fill()
        except PeerClosed:
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


def parse_head(head):
    """bytes head (with final CRLFCRLF) -> (start_line_parts, [(name, value)], errors)."""
    errors = []
    text = head[:-4] if head.endswith(b"\r\n\r\n") else head
    lines = text.split(b"\r\n")
    start = lines[0].decode("latin-1")
    headers = []
    for ln in lines[1:]:
        if ln[:1] in (b" ", b"\t"):
            errors.append("obs-fold")
            continue
        if b":" not in ln:
            errors.append("no colon: %r" % ln[:60])
            continue
        name, value = ln.split(b":", 1)
        if name != name.strip():
            errors.append("whitespace in field name")
        if any(c < 0x20 and c != 0x09 for c in value) or b"\x7f" in value:
            errors.append("control char in value")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return start, headers, errors


def hget(headers, name):
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def hall(headers, name):
    name = name.lower()
    return [v for k, v in headers if k.lower() == name]


def conn_tokens(headers):
    toks = []
    for v in hall(headers, "connection"):
        toks += [t.strip().lower() for t in v.split(",") if t.strip()]
    return toks


# --------------------------------------------------------------------------------------
# Test backends

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


class TestServer:
    """What every test server here shares: a listening socket on <host>, one thread per accepted
    connection running self._serve(c, cid) (cid counts from 1), an `errors` list for exceptions
    that are bugs of the server itself, and stop(), which refuses later connects and closes every
    open connection."""

    conn_timeout = 60

    def _listen(self, host="127.0.0.1", port=0):
        self.host = host
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.errors = []
        self.conn_count = 0
        self._conns = []
        self._running = True
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def address(self):
        if ":" in self.host:
            return "[%s]:%d" % (self.host, self.port)
        return "%s:%d" % (self.host, self.port)

    def stop(self):
        self._running = False
        for fn in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):
            try:
                fn()
            except OSError:
                pass
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            for fn in (lambda: c.shutdown(socket.SHUT_RDWR), c.close):
                try:
                    fn()
                except OSError:
                    pass
        self._thread.join(timeout=2)

    def _accept_loop(self):
        while self._running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                break
            if not self._running:
                c.close()
                break
            with self.lock:
                self.conn_count += 1
                cid = self.conn_count
                self._conns.append(c)
            if self._accepted(c, cid):
                threading.Thread(target=self._serve_safe, args=(c, cid), daemon=True).start()

    def _accepted(self, c, cid):
        """Called for each new connection; False: it was dealt with here, serve no further."""
        return True

    def _serve_safe(self, c, cid):
        try:
            c.settimeout(self.conn_timeout)
            self._serve(c, cid)
        except (PeerClosed, OSError, ValueError):
            pass
        except Exception as e:  # a bug of the test server: make it visible
            with self.lock:
                self.errors.append("%s exception: %r" % (type(self).__name__, e))
        finally:
            with self.lock:
                if c in self._conns:
                    self._conns.remove(c)
            try:
                c.close()
            except OSError:
                pass


class Backend(TestServer):
    """A threaded HTTP/1.1 test server.

    mode:
      echo          200, JSON body {request_line, method, target, version, headers
                    [[name, value], ...] in received order, body_len, body_sha256, backend}
                    with "Server: test-backend/1.0" and "X-Powered-By: PHP/8"
      fixed         200 with body `body` (default: the backend's name, e.g. "backend-A")
      chunked       streams `chunks` chunks of `chunk_size` bytes, `chunk_delay` apart
      slow          like echo but waits `delay` seconds before the head
      close-mid     head with Content-Length 1000, 10 bytes, then closes
      reset         accepts and closes at once (RST) without a byte
      download      Content-Length `size` of the repeating pattern, from a small buffer
      upload        reads the body (CL or chunked), replies JSON {bytes, sha256}
      websocket     RFC 6455 handshake then echoes frames (plain echo without Upgrade)
      100-continue  sends "HTTP/1.1 100 Continue" before reading a body, then like upload
    close_after:  every response carries "Connection: close" and the connection is closed.
    silent_close: the connection is closed after every response WITHOUT Connection: close.
    delay:        seconds to wait before the response head (any mode).
    """

    def __init__(self, mode="echo", name=None, body=None, delay=0.0, chunks=10,
                 chunk_size=1000, chunk_delay=0.01, size=0, close_after=False,
                 silent_close=False, host="127.0.0.1"):
        self.mode = mode
        self.name = name or ("backend-" + mode)
        self.body = body if body is not None else self.name.encode()
        if isinstance(self.body, str):
            self.body = self.body.encode()
        self.delay = delay if mode != "slow" or delay else 1.0
        self.chunks, self.chunk_size, self.chunk_delay = chunks, chunk_size, chunk_delay
        self.size = size
        self.close_after = close_after
        self.silent_close = silent_close
        self.requests = []       # dicts, appended when the head arrives
        self.raw = {}            # conn id -> bytearray of the first 1 MiB received
        self.ws_frames = []
        self._listen(host)

    def completed(self):
        with self.lock:
            return [r for r in self.requests if r.get("complete")]

    def all_raw(self):
        with self.lock:
            return b"".join(bytes(v) for v in self.raw.values())

    def wait_requests(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return True
            time.sleep(0.01)
        return False

    # -- internals ----------------------------------------------------------------

    def _accepted(self, c, cid):
        with self.lock:
            self.raw[cid] = bytearray()
        if self.mode == "reset":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            return False
        return True

    def _record_error(self, msg):
        with self.lock:
            self.errors.append(msg)

    def _send(self, c, data):
        c.sendall(data)

    def _serve(self, c, cid):
        r = _Reader(c, capture=self.raw[cid])
        while self._running:
            try:
                head = r.read_until(b"\r\n\r\n", 1 << 20)
            except PeerClosed:
                if r.buf:
                    self._record_error("conn %d closed with a partial head %r" % (cid, bytes(r.buf[:80])))
                return
            start, headers, errs = parse_head(head)
            for e in errs:
                self._record_error("conn %d: %s" % (cid, e))
            parts = start.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                self._record_error("conn %d: bad request line %r" % (cid, start))
                return
            method, target, version = parts
            req = {"conn": cid, "method": method, "target": target, "version": version,
                   "request_line": start, "headers": headers, "body_len": 0,
                   "body_sha256": hashlib.sha256(b"").hexdigest(), "complete": False,
                   "t_head": time.monotonic()}
            with self.lock:
                self.requests.append(req)
            if len(hall(headers, "content-length")) > 1:
                self._record_error("conn %d: several Content-Length" % cid)
            if hget(headers, "transfer-encoding") is not None and hget(headers, "content-length") is not None:
                self._record_error("conn %d: both Transfer-Encoding and Content-Length" % cid)

            upgrade = (hget(headers, "upgrade") or "").lower()
            if self.mode == "websocket" and upgrade == "websocket" and "upgrade" in conn_tokens(headers):
                req["complete"] = True
                self._websocket(c, r, headers)
                return

            te = (hget(headers, "transfer-encoding") or "").lower()
            cl = hget(headers, "content-length")
            has_body = te != "" or (cl is not None and cl.strip() != "0")
            if self.mode == "100-continue" and has_body:
                self._send(c, b"HTTP/1.1 100 Continue\r\n\r\n")
                req["sent_100"] = time.monotonic()

            h = hashlib.sha256()
            n = [0]

            def sink(b):
                h.update(b)
                n[0] += len(b)

            if te:
                if te != "chunked":
                    self._record_error("conn %d: unexpected TE %r" % (cid, te))
                    return
                if not self._read_chunked(r, sink, cid):
                    return
            elif cl is not None:
                try:
                    ln = int(cl)
                except ValueError:
                    self._record_error("conn %d: bad CL %r" % (cid, cl))
                    return
                r.consume(ln, sink)
            req["body_len"] = n[0]
            req["body_sha256"] = h.hexdigest()
            req["complete"] = True
            req["t_body"] = time.monotonic()

            close = self.close_after or "close" in conn_tokens(headers) or (
                version == "HTTP/1.0" and "keep-alive" not in conn_tokens(headers))
            if self.delay:
                time.sleep(self.delay)
            keep = self._respond(c, req, close)
            if self.close_after:
                # Said "Connection: close": anything the proxy still sends on this
                # connection is a reuse bug. Watch briefly before closing.
                c.settimeout(0.5)
                try:
                    extra = c.recv(65536)
                    if extra:
                        self._record_error("conn %d: request bytes after Connection: close: %r"
                                           % (cid, extra[:80]))
                except OSError:
                    pass
            if not keep or close or self.silent_close:
                try:
                    c.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return

    def _read_chunked(self, r, sink, cid):
        while True:
            line = r.read_until(b"\r\n", 4096)
            size_s = line[:-2].split(b";", 1)[0]
            if not re.fullmatch(rb"[0-9a-fA-F]{1,15}", size_s):
                self._record_error("conn %d: malformed chunk size %r" % (cid, line[:40]))
                return False
            size = int(size_s, 16)
            if size == 0:
                while True:  # trailers
                    t = r.read_until(b"\r\n", 65536)
                    if t == b"\r\n":
                        return True
            r.consume(size, sink)
            crlf = r.read_exact(2)
            if crlf != b"\r\n":
                self._record_error("conn %d: chunk data not followed by CRLF" % cid)
                return False

    def _head(self, status, headers, close):
        out = ["HTTP/1.1 %s" % status]
        out += ["%s: %s" % kv for kv in headers]
        if close:
            out.append("Connection: close")
        return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")

    def _respond(self, c, req, close):
        mode = self.mode
        is_head = req["method"] == "HEAD"
        std = [("Server", "test-backend/1.0"), ("X-Powered-By", "PHP/8")]
        if mode in ("echo", "slow", "websocket"):
            body = json.dumps({
                "backend": self.name, "request_line": req["request_line"],
                "method": req["method"], "target": req["target"], "version": req["version"],
                "headers": req["headers"], "body_len": req["body_len"],
                "body_sha256": req["body_sha256"]}).encode()
            hd = std + [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            self._send(c, self._head("200 OK", hd, close) + (b"" if is_head else body))
        elif mode == "fixed":
            hd = std + [("Content-Type", "text/plain"), ("Content-Length", str(len(self.body)))]
            self._send(c, self._head("200 OK", hd, close) + (b"" if is_head else self.body))
        elif mode in ("upload", "100-continue"):
            body = json.dumps({"bytes": req["body_len"], "sha256": req["body_sha256"]}).encode()
            hd = std + [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            self._send(c, self._head("200 OK", hd, close) + (b"" if is_head else body))
        elif mode == "chunked":
            hd = std + [("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")]
            self._send(c, self._head("200 OK", hd, close))
            if not is_head:
                for i in range(self.chunks):
                    data = chunk_payload(i, self.chunk_size)
                    self._send(c, b"%x\r\n" % len(data) + data + b"\r\n")
                    if self.chunk_delay:
                        time.sleep(self.chunk_delay)
                self._send(c, b"0\r\n\r\n")
        elif mode == "close-mid":
            self._send(c, b"HTTP/1.1 200 OK\r\nServer: test-backend/1.0\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            time.sleep(0.05)
            return False
        elif mode == "download":
            hd = std + [("Content-Type", "application/octet-stream"), ("Content-Length", str(self.size))]
            self._send(c, self._head("200 OK", hd, close))
            if not is_head:
                for chunk in pattern_chunks(self.size, 64 * 1024):
                    c.sendall(chunk)
        else:
            raise RuntimeError("unknown backend mode " + mode)
        return not close

    def _websocket(self, c, r, headers):
        key = hget(headers, "sec-websocket-key") or ""
        resp = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Accept: %s\r\n\r\n" % ws_accept(key)).encode()
        self._send(c, resp)
        while self._running:
            try:
                opcode, payload, masked = ws_read_frame(r)
            except PeerClosed:
                return
            with self.lock:
                self.ws_frames.append((opcode, payload, masked))
            if opcode == 0x8:
                self._send(c, ws_frame(0x8, payload[:2], mask=False))
                return
            if opcode == 0x9:
                self._send(c, ws_frame(0xA, payload, mask=False))
                continue
            self._send(c, ws_frame(opcode, payload, mask=False))


# --------------------------------------------------------------------------------------
# WebSocket frames

def ws_frame(opcode, payload, mask=True, fin=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = bytes([b0, mbit | n])
    elif n < 65536:
        hdr = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
        return hdr + key + payload
    return hdr + payload


def ws_read_frame(r):
    """-> (opcode, payload, was_masked) from a _Reader."""
    b0, b1 = r.read_exact(2)
    opcode = b0 & 0x0F
    masked = bool(b1 & 0x80)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", r.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", r.read_exact(8))[0]
    key = r.read_exact(4) if masked else None
    payload = r.read_exact(n)
    if masked:
        payload = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    return opcode, payload, masked


# --------------------------------------------------------------------------------------
# Client

class Response:
    def __init__(self, version, status, reason, headers, body=b"", raw_head=b""):
        self.version, self.status, self.reason = version, status, reason
        self.headers, self.body, self.raw_head = headers, body, raw_head

    def header(self, name):
        return hget(self.headers, name)

    def headers_all(self, name):
        return hall(self.headers, name)

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %s %s %r body=%d bytes>" % (self.version, self.status, self.reason, len(self.body))


class IncompleteResponse(Exception):
    def __init__(self, msg, response=None):
        super().__init__(msg)
        self.response = response


class Client:
    def __init__(self, port, host="127.0.0.1", timeout=DEFAULT_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.r = _Reader(self.sock)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def read_head(self):
        """Reads one response head (any status, 1xx included). Raises PeerClosed."""
        head = self.r.read_until(b"\r\n\r\n", 1 << 20)
        start, headers, _ = parse_head(head)
        parts = start.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise IncompleteResponse("bad status line %r" % start)
        return Response(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers, b"", head)

    def read_body(self, resp, method="GET"):
        st = resp.status
        if method == "HEAD" or 100 <= st < 200 or st in (204, 304):
            return b""
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")
        if te:
            if not te.endswith("chunked"):
                return self.r.read_to_close()
            out = bytearray()
            try:
                while True:
                    line = self.r.read_until(b"\r\n", 65536)
                    size = int(line[:-2].split(b";")[0], 16)
                    if size == 0:
                        while self.r.read_until(b"\r\n", 65536) != b"\r\n":
                            pass
                        return bytes(out)
                    out += self.r.read_exact(size)
                    if self.r.read_exact(2) != b"\r\n":
                        raise IncompleteResponse("bad chunk framing", resp)
            except PeerClosed:
                resp.body = bytes(out)
                raise IncompleteResponse("connection closed inside chunked body", resp)
        if cl is not None:
            n = int(cl)
            out = bytearray()
            try:
                while len(out) < n:
                    if not self.r.buf:
                        self.r.fill(min(1 << 20, max(65536, n - len(out))))
                    take = min(n - len(out), len(self.r.buf))
                    out += self.r.buf[:take]
                    del self.r.buf[:take]
            except PeerClosed:
                resp.body = bytes(out)
                raise IncompleteResponse("connection closed after %d of %d body bytes" % (len(out), n), resp)
            return bytes(out)
        return self.r.read_to_close()

    def read_response(self, method="GET", interim=None):
        """Reads one final response (1xx are skipped and appended to `interim` if given)."""
        while True:
            resp = self.read_head()
            if 100 <= resp.status < 200 and resp.status != 101:
                if interim is not None:
                    interim.append(resp)
                continue
            break
        resp.body = self.read_body(resp, method)
        return resp

    def request(self, method="GET", target="/", host="test", headers=(), body=None, version="HTTP/1.1"):
        self.send(build_request(method, target, host, headers, body, version))
        return self.read_response(method)

    def peer_closed(self, timeout=3.0):
        """True if the peer closes (FIN or RST) within `timeout` s. Bytes that arrive
        meanwhile are kept in the buffer (self.r.buf)."""
        old = self.sock.gettimeout()
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    self.r.fill()
                except PeerClosed:
                    return True
                except (ConnectionResetError, BrokenPipeError):
                    return True
                except socket.timeout:
                    return False
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def build_request(method="GET", target="/", host="test", headers=(), body=None, version="HTTP/1.1"):
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None:
        lines.append("Host: %s" % host)
    names = [k.lower() for k, _ in headers]
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is not None:
        data += body if isinstance(body, bytes) else body.encode()
    return data


def chunked_encode(chunks):
    out = bytearray()
    for c in chunks:
        out += b"%x\r\n" % len(c) + c + b"\r\n"
    out += b"0\r\n\r\n"
    return bytes(out)


def get_once(port, target="/", host="test", headers=(), timeout=DEFAULT_TIMEOUT, addr="127.0.0.1"):
    with Client(port, addr, timeout) as c:
        return c.request("GET", target, host, headers)


def curl(args, timeout=15):
    """Runs curl; returns CompletedProcess (stdout bytes)."""
    cmd = ["curl", "-sS", "--max-time", "10", "--noproxy", "*"] + list(args)
    env = dict(os.environ)
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(k, None)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env)


# --------------------------------------------------------------------------------------
# YAML rendering (block style, plain scalars where safe)

_PLAIN = re.compile(r"^[A-Za-z0-9_./:-]+$")


def _scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    s = str(v)
    if _PLAIN.match(s) and not s.startswith(("-", ":")) and ": " not in s and s.lower() not in (
            "true", "false", "yes", "no", "null", "on", "off", "~"):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_yaml(obj, indent=0):
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                if isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v):
                    out.append("%s%s: [%s]" % (pad, k, ", ".join(_scalar(x) for x in v)))
                else:
                    out.append("%s%s:" % (pad, k))
                    out.append(to_yaml(v, indent + 2))
            else:
                out.append("%s%s: %s" % (pad, k, _scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                sub = to_yaml(item, indent + 2).split("\n")
                sub[0] = pad + "- " + sub[0].lstrip()
                out.append("\n".join(sub))
            else:
                out.append("%s- %s" % (pad, _scalar(item)))
    return "\n".join(out)


def basic_config(port, backends, workers=1, listen_host="127.0.0.1", pool_extra=None, route_extra=None,
                 **top):
    """One listener, one pool 'p' (backends: addresses or (address, weight)), one catch-all route."""
    bl = []
    for b in backends:
        if isinstance(b, tuple):
            bl.append({"address": b[0], "weight": b[1]})
        else:
            bl.append(b.address if isinstance(b, Backend) else b)
    pool = {"name": "p", "backends": bl}
    pool.update(pool_extra or {})
    route = {"path": "/", "pool": "p"}
    route.update(route_extra or {})
    la = ("[%s]:%d" if ":" in listen_host else "%s:%d") % (listen_host, port)
    cfg = {"workers": workers}
    cfg.update(top)
    cfg.update({
        "listeners": [{"name": "web", "address": la}],
        "pools": [pool],
        "vhosts": [{"hosts": ["*"], "routes": [route]}],
    })
    return cfg


# --------------------------------------------------------------------------------------
# ringlb process

def read_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def child_pids(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


class Proxy:
    """ringlb started from a config dict (rendered to YAML) or one-line args."""

    def __init__(self, config=None, args=None, ready_addr=None, nofile=None, start=True,
                 ready_timeout=8.0):
        self.tmp = tempfile.mkdtemp(prefix="ringlb-it-")
        self.log_path = os.path.join(self.tmp, "ringlb.log")
        self.config = config
        self.nofile = nofile
        self.proc = None
        if config is not None:
            self.config_path = os.path.join(self.tmp, "ringlb.yaml")
            text = config if isinstance(config, str) else to_yaml(config) + "\n"
            with open(self.config_path, "w") as f:
                f.write(text)
            self.cmd = [RINGLB, "-c", self.config_path]
            if ready_addr is None and isinstance(config, dict):
                ready_addr = config["listeners"][0]["address"]
        else:
            self.cmd = [RINGLB] + list(args)
            if ready_addr is None:
                ready_addr = args[args.index("--listen") + 1]
        self.host, self.port = split_addr(ready_addr)
        self.ready_timeout = ready_timeout
        if start:
            self.start()

    def _preexec(self):
        if self.nofile:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def start(self):
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT,
                                     preexec_fn=self._preexec if self.nofile else None)
        with _procs_lock:
            _procs.append(self.proc)
        self.wait_ready(self.ready_timeout)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError("ringlb exited with %s before accepting; log:\n%s" % (rc, self.log()))
            try:
                s = socket.create_connection((self.host, self.port), timeout=0.5)
                s.close()
                return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("ringlb did not accept on %s:%d within %.1fs; log:\n%s"
                           % (self.host, self.port, timeout, self.log()))

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-8000:]
        except OSError:
            return ""

    def rss_kib(self):
        total = read_rss_kib(self.proc.pid) or 0
        for c in child_pids(self.proc.pid):
            total += read_rss_kib(c) or 0
        return total

    def fd_count(self):
        try:
            return len(os.listdir("/proc/%d/fd" % self.proc.pid))
        except OSError:
            return -1

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout=12.0):
        """SIGTERM, wait; returns the exit code (None if it had to be SIGKILLed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def close(self):
        """Graceful stop (SIGTERM, 2 s) so sanitizers can report at exit, then SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop(timeout=2.0)
        self.kill()
        try:
            self.logf.close()
        except Exception:
            pass

    def sanitizer_report(self):
        text = self.log()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "WARNING: ThreadSanitizer", "ringlb: BUG at "):
            i = text.find(marker)
            if i >= 0:
                return text[max(0, i - 200): i + 3000]
        return None


# Shared by the tests that read ringlb's log and counters.

def full_log(p):
    try:
        with open(p.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def stats(p, timeout=3.0):
    """SIGUSR1, then the counters of the new stats line as a dict."""
    before = full_log(p).count("stats (SIGUSR1)")
    p.signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [ln for ln in full_log(p).splitlines() if "stats (SIGUSR1)" in ln]
        if len(lines) > before:
            return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", lines[-1])}
        time.sleep(0.02)
    raise AssertionError("no stats line after SIGUSR1; log:\n" + p.log())


class RssSampler:
    """Samples ringlb's resident memory in a thread while a transfer runs (peak in .peak)."""
    def __init__(self, proxy, interval=0.1):
        self.proxy, self.interval = proxy, interval
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            v = self.proxy.rss_kib()
            if v:
                self.samples.append(v)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join(2)

    @property
    def peak(self):
        return max(self.samples) if self.samples else 0


def run_ringlb(args, timeout=10):
    """Runs ringlb to completion (CLI tests). Returns CompletedProcess with text output."""
    p = subprocess.Popen([RINGLB] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    with _procs_lock:
        _procs.append(p)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return subprocess.CompletedProcess(p.args, None, out.decode("utf-8", "replace"),
                                           err.decode("utf-8", "replace"))
    return subprocess.CompletedProcess(p.args, p.returncode, out.decode("utf-8", "replace"),
                                       err.decode("utf-8", "replace"))


# --------------------------------------------------------------------------------------
# Test base class and runner

class ProxyTestCase(unittest.TestCase):
    """Tracks backends/proxies made with self.backend()/self.proxy() and stops them in
    tearDown (per test) or tearDownClass (made in setUpClass via cls.cbackend/cls.cproxy)."""

    _class_objs = None

    def setUp(self):
        self._objs = []

    def tearDown(self):
        if os.environ.get("RINGLB_IT_SHOWLOG"):
            for o in self._objs:
                if isinstance(o, Proxy):
                    log("---- ringlb log (%s) ----\n%s" % (self.id(), o.log()))
        reports = []
        for o in reversed(self._objs):
            try:
                if isinstance(o, Proxy):
                    o.close()
                    rep = o.sanitizer_report()
                    if rep:
                        reports.append(rep)
                else:
                    o.stop()
            except Exception:
                pass
        if reports:
            self.fail("ringlb reported a memory/UB error or a BUG:\n" + "\n".join(reports))

    def backend(self, *a, **kw):
        b = Backend(*a, **kw)
        self._objs.append(b)
        return b

    def proxy(self, *a, **kw):
        p = Proxy(*a, start=False, **kw)
        self._objs.append(p)
        p.start()
        return p

    @classmethod
    def cbackend(cls, *a, **kw):
        b = Backend(*a, **kw)
        cls._class_objs.append(b)
        return b

    @classmethod
    def cproxy(cls, *a, **kw):
        p = Proxy(*a, start=False, **kw)
        cls._class_objs.append(p)
        p.start()
        return p

    @classmethod
    def setUpClass(cls):
        cls._class_objs = []
        try:
            cls.setup_class()
        except BaseException:
            cls._cleanup_class()
            raise

    @classmethod
    def setup_class(cls):
        pass

    @classmethod
    def tearDownClass(cls):
        cls._cleanup_class()

    @classmethod
    def _cleanup_class(cls):
        if os.environ.get("RINGLB_IT_SHOWLOG"):
            for o in cls._class_objs or []:
                if isinstance(o, Proxy):
                    log("---- ringlb log (%s) ----\n%s" % (cls.__name__, o.log()))
        reports = []
        for o in reversed(cls._class_objs or []):
            try:
                if isinstance(o, Proxy):
                    o.close()
                    rep = o.sanitizer_report()
                    if rep:
                        reports.append(rep)
                else:
                    o.stop()
            except Exception:
                pass
        cls._class_objs = []
        if reports:
            raise AssertionError("ringlb reported a memory/UB error or a BUG:\n" + "\n".join(reports))


def binary_uses_asan():
    """True when RINGLB is built with AddressSanitizer (RSS bounds are meaningless then)."""
    try:
        with open(RINGLB, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


ASAN = binary_uses_asan()


def _watchdog(budget):
    def fire():
        log("WATCHDOG: test file exceeded %ds, killing started processes" % budget)
        _kill_all()
        os._exit(1)
    t = threading.Timer(budget, fire)
    t.daemon = True
    t.start()


def main(budget=150):
    """Runs the unittest module in __main__ verbosely; exit 0 pass, 77 all skipped, 1 fail."""
    if not os.path.isfile(RINGLB) or not os.access(RINGLB, os.X_OK):
        print("SKIP: ringlb binary not found at %s" % RINGLB)
        sys.exit(77)
    _watchdog(budget)
    prog = unittest.main(module="__main__", exit=False, verbosity=2)
    res = prog.result
    _kill_all()
    if not res.wasSuccessful():
        sys.exit(1)
    if res.testsRun > 0 and len(res.skipped) == res.testsRun:
        sys.exit(77)
    sys.exit(0)


def tcp_port_stats(port):
    """From /proc/net/tcp{,6}: (accept queue length summed over LISTEN sockets on `port`,
    number of ESTABLISHED sockets whose local port is `port`)."""
    queued = 0
    established = 0
    hexport = ":%04X" % port
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if not parts[1].endswith(hexport):
                        continue
                    st = parts[3]
                    if st == "0A":
                        queued += int(parts[4].split(":")[1], 16)
                    elif st == "01":
                        established += 1
        except OSError:
            pass
    return queued, established
