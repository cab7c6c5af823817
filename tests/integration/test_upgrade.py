#!/usr/bin/env python3
"""Connection upgrade (WebSocket) through the proxy."""

import base64
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def ws_request(target, key):
    return H.build_request("GET", target, headers=[
        ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"), ("Origin", "http://test")])


class UpgradeTest(H.ProxyTestCase):
    @classmethod
    def setup_class(cls):
        cls.ws = cls.cbackend("websocket", name="ws")
        cls.echo = cls.cbackend("echo", name="echo")
        cls.port = H.free_port()
        cfg = H.basic_config(cls.port, [cls.echo])
        cfg["pools"].append({"name": "ws", "backends": [cls.ws.address]})
        cfg["vhosts"][0]["routes"].append({"path": "/ws", "pool": "ws"})
        cls.p = cls.cproxy(cfg)

    def test_websocket_echo(self):
        key = base64.b64encode(os.urandom(16)).decode()
        with H.Client(self.port) as c:
            c.send(ws_request("/ws/chat", key))
            r = c.read_head()
            self.assertEqual(r.status, 101, r.raw_head)
            self.assertEqual((r.header("upgrade") or "").lower(), "websocket")
            self.assertIn("upgrade", [t.strip().lower() for t in (r.header("connection") or "").split(",")])
            self.assertEqual(r.header("sec-websocket-accept"), H.ws_accept(key))
            seen = self.ws.requests[-1]["headers"]
            self.assertEqual(H.hget(seen, "sec-websocket-key"), key)
            for i in range(5):
                msg = ("hello websocket %d " % i).encode() * (i * 20 + 1)
                c.send(H.ws_frame(0x1, msg, mask=True))
                op, payload, masked = H.ws_read_frame(c.r)
                self.assertEqual((op, payload), (0x1, msg))
                self.assertFalse(masked)
            c.send(H.ws_frame(0x8, b"\x03\xe8", mask=True))
            op, payload, _ = H.ws_read_frame(c.r)
            self.assertEqual(op, 0x8)
        frames = [f for f in self.ws.ws_frames if f[0] == 0x1]
        self.assertEqual(len(frames), 5)
        self.assertTrue(all(f[2] for f in frames), "client frames arrived unmasked at the backend")

    def test_upgrade_refused_keeps_keepalive(self):
        key = base64.b64encode(os.urandom(16)).decode()
        with H.Client(self.port) as c:
            c.send(ws_request("/plain", key))
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["target"], "/plain")
            for i in range(3):
                r2 = c.request("GET", "/plain-after%d" % i)
                self.assertEqual(r2.status, 200)
                self.assertEqual(r2.json()["target"], "/plain-after%d" % i)


if __name__ == "__main__":
    H.main()
