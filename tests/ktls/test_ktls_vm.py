#!/usr/bin/env python3
"""ringlb's kTLS, proven on a kernel that has it.

The machines this suite runs on may lack the kernel's `tls` module, and then ringlb can only
ever take its userspace fallback. So this test boots a Debian cloud kernel (CONFIG_TLS=m) under
qemu with software emulation (tests/ktls/vm.sh) and runs tests/ktls/vm_test.sh inside it, twice:

  1. tls module loaded:     every transfer byte-exact, every connection's records in the kernel
                            (ktls_tx, ktls_rx > 0, no fallbacks), for TLS 1.2 and 1.3 with
                            AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305;
  2. tls module not loaded: the same transfers still byte-exact, ringlb falls back to userspace
                            TLS (ktls_fallbacks > 0, ktls_tx = 0). The plain-HTTP baseline is
                            skipped in this boot: it does not depend on the module.

If the host kernel itself has kTLS, vm_test.sh runs natively instead (no VM), once expecting the
kernel path and once with `ktls: false` in the configuration; the refused-by-the-kernel fallback
cannot be produced natively and is reported as not run.

Exit status: 0 passed, 1 failed, 77 skipped (only when qemu is missing or cannot boot anything;
the reason is printed). Environment: RINGLB (the binary under
test, default build/ringlb), RINGLB_SOURCE_ROOT, RINGLB_KTLS_CACHE (kernel, helpers and
certificates; default build/ktls-vm), RINGLB_KTLS_TIMEOUT (seconds per boot, default 150),
RINGLB_KTLS_FORCE_VM=1 (use the VM even when the host has kTLS).

Python 3.11 standard library only.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("RINGLB_SOURCE_ROOT") or os.path.abspath(os.path.join(HERE, "..", ".."))
RINGLB = os.path.abspath(os.environ.get("RINGLB") or os.path.join(ROOT, "build", "ringlb"))
CACHE = os.environ.get("RINGLB_KTLS_CACHE") or os.path.join(ROOT, "build", "ktls-vm")
BOOT_TIMEOUT = int(os.environ.get("RINGLB_KTLS_TIMEOUT", "150"))
VM_SH = os.path.join(HERE, "vm.sh")
VM_TEST = os.path.join(HERE, "vm_test.sh")

SKIP = 77

TAGS = ["tls12-aes128gcm", "tls12-aes256gcm", "tls12-chacha20",
        "tls13-aes128gcm", "tls13-aes256gcm", "tls13-chacha20"]
# In a kernel message logged while the test ran, any of these is a failure whatever the checks
# said: ringlb drove the kernel's TLS code into a path it complains about.
KERNEL_TROUBLE = ("WARNING:", "BUG:", "Oops", "general protection", "Call Trace", "refcount_t",
                  "soft lockup", "blocked for more than", "rcu_sched detected", "rcu: INFO")
PLAIN_CHECKS = ["plain-get-1k", "plain-get-1m", "plain-post-1m", "plain-keepalive", "plain-splice"]


def expected_checks(plain):
    names = ["kernel-ktls", "backend-direct"]
    if plain:
        names += PLAIN_CHECKS
    names.append("tls-start")
    for tag in TAGS:
        names += ["%s-%s" % (tag, c) for c in ("get-1k", "get-1m", "post-1m", "keepalive", "ktls")]
    names += ["tls-stats", "tls-splice", "tls-exit"]
    return names


def say(*args):
    print(*args, flush=True)


def skip(reason):
    say("SKIP: " + reason)
    sys.exit(SKIP)


def run_group(argv, timeout, env=None):
    """Runs argv in its own process group; on timeout kills that group (only what we started).
    Returns (returncode or None on timeout, combined output)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         errors="replace", env=env, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        # TERM first: vm.sh and vm_test.sh then stop qemu / ringlb / the backend themselves.
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                out, _ = p.communicate(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        out, _ = p.communicate()
        return None, out


def build_helpers():
    """The backend and the kernel probe are not meson targets: compiled here, into the cache."""
    os.makedirs(CACHE, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    paths = {}
    for name in ("echo_backend", "ktls_client_check"):
        src = os.path.join(HERE, name + ".c")
        out = os.path.join(CACHE, name)
        r = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", out, src],
                           capture_output=True, text=True)
        if r.returncode != 0:
            say("FAIL: cannot compile %s:\n%s" % (src, r.stderr))
            sys.exit(1)
        paths[name] = out
    return paths


def certificates():
    """A self-signed ECDSA P-256 certificate for localhost / 127.0.0.1, made once per cache."""
    d = os.path.join(CACHE, "certs")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    if os.path.exists(cert) and os.path.exists(key):
        return d
    if not shutil.which("openssl"):
        skip("the openssl command is needed to make the test certificate")
    os.makedirs(d, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=d)
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", os.path.join(tmp, "key.pem"), "-out", os.path.join(tmp, "cert.pem"),
                        "-days", "3650", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        say("FAIL: openssl req: " + r.stderr)
        sys.exit(1)
    # Renamed into place, key last: a run that finds both files finds a finished pair.
    os.replace(os.path.join(tmp, "cert.pem"), cert)
    os.replace(os.path.join(tmp, "key.pem"), key)
    os.rmdir(tmp)
    return d


def host_has_ktls(probe):
    if not os.path.isdir("/sys/module/tls"):
        if not shutil.which("modprobe"):
            return False
        if subprocess.run(["modprobe", "tls"], capture_output=True).returncode != 0:
            return False
    # The module can be present and still refuse (e.g. in a container); ask the kernel.
    r = subprocess.run([probe, "--ulp-only"], capture_output=True, text=True)
    return r.returncode == 0 and "ULP-OK" in r.stdout


def parse_checks(text):
    """CHECK lines -> {name: (status, detail)}; later duplicates win (there should be none)."""
    checks = {}
    for line in text.splitlines():
        line = line.replace("\r", "")
        i = line.find("CHECK ")
        if i < 0:
            continue
        parts = line[i:].split(" ", 3)
        if len(parts) >= 3 and parts[2] in ("PASS", "FAIL"):
            checks[parts[1]] = (parts[2], parts[3] if len(parts) > 3 else "")
    return checks


def judge(label, text, plain):
    """Prints the verdict of one run; returns a list of problems (empty: it passed)."""
    checks = parse_checks(text)
    problems = []
    for name in expected_checks(plain):
        if name not in checks:
            problems.append("%s: missing" % name)
        elif checks[name][0] != "PASS":
            problems.append("%s: %s" % (name, checks[name][1]))
    n_pass = sum(1 for s, _ in checks.values() if s == "PASS")
    say("%s: %d checks passed, %d problems" % (label, n_pass, len(problems)))
    for p in problems:
        say("  FAIL " + p)
    return problems


def tail(text, n):
    lines = [ln.replace("\r", "") for ln in text.splitlines()]
    return "\n".join("  | " + ln for ln in lines[-n:])


# ------------------------------------------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_native(helpers, certs):
    curl = shutil.which("curl")
    if not curl:
        skip("curl is needed")
    failed = False
    for label, expect, plain in (("native, kTLS", "kernel", True), ("native, ktls: false", "off", False)):
        work = tempfile.mkdtemp(prefix="ringlb-ktls-")
        env = dict(os.environ, KTLS_LOAD="1", KTLS_EXPECT=expect, RINGLB_BIN=RINGLB,
                   ECHO_BACKEND=helpers["echo_backend"], KTLS_CHECK=helpers["ktls_client_check"],
                   CURL=curl, CERT_DIR=certs, WORK=os.path.join(work, "w"),
                   PORT_BACKEND=str(free_port()), PORT_PLAIN=str(free_port()), PORT_TLS=str(free_port()),
                   ringlb_plain="1" if plain else "0")
        t0 = time.monotonic()
        rc, out = run_group(["sh", VM_TEST], BOOT_TIMEOUT, env)
        say("%s: %.1fs" % (label, time.monotonic() - t0))
        problems = judge(label, out, plain)
        if rc is None:
            problems.append("timeout after %ds" % BOOT_TIMEOUT)
            say("  FAIL timeout after %ds" % BOOT_TIMEOUT)
        if problems:
            failed = True
            say(tail(out, 80))
        shutil.rmtree(work, ignore_errors=True)
    say("not run: the kernel-refuses-kTLS fallback (the host kernel has the tls module; "
        "set RINGLB_KTLS_FORCE_VM=1 to run both halves in the VM)")
    return 1 if failed else 0


def run_vm(helpers, certs):
    if not shutil.which("qemu-system-x86_64"):
        skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    # tests/setup.sh installs these and the Debian mirror it uses serves the kernel: their absence
    # is a broken set-up, not a reason to pass without testing.
    for tool in ("busybox", "cpio", "curl", "apt-get", "dpkg-deb", "depmod", "timeout"):
        if not shutil.which(tool):
            say("FAIL: %s is not installed; the kTLS VM needs it (tests/setup.sh installs it)" % tool)
            return 1

    # The kernel package: downloaded once.
    rc, out = run_group(["bash", VM_SH, "--prepare-only"], 600)
    if rc != 0:
        say("FAIL: cannot fetch the kTLS kernel: %s" % " ".join(out.strip().splitlines()[-2:]))
        return 1

    common = ["--script", VM_TEST, "--timeout", str(BOOT_TIMEOUT), "--quiet",
              "--bin", RINGLB + ":/bin/ringlb",
              "--bin", helpers["echo_backend"], "--bin", helpers["ktls_client_check"],
              "--bin", shutil.which("curl"),
              "--file", os.path.join(certs, "cert.pem") + ":/etc/ringlb/cert.pem",
              "--file", os.path.join(certs, "key.pem") + ":/etc/ringlb/key.pem"]
    failed = False
    total = 0.0
    for label, load, plain in (("VM, tls module loaded", "1", True),
                               ("VM, tls module absent", "0", False)):
        log = os.path.join(CACHE, "console-ktls%s.log" % load)
        argv = ["bash", VM_SH, "--load-tls", load, "--log", log] + common
        if not plain:
            argv += ["--append", "ringlb_plain=0"]
        t0 = time.monotonic()
        rc, out = run_group(argv, BOOT_TIMEOUT + 120)
        took = time.monotonic() - t0
        total += took
        try:
            with open(log, errors="replace") as f:
                console = f.read()
        except OSError:
            console = ""
        marks = [ln.replace("\r", "") for ln in console.splitlines() if ln.startswith("KTLS-VM-")]
        timeline = [m.split(" kernel=")[0] for m in marks
                    if m.split(" ")[0] in ("KTLS-VM-BOOT", "KTLS-VM-READY", "KTLS-VM-DONE")]
        say("%s: %.1fs  %s" % (label, took, " / ".join(timeline)))
        for m in marks:
            if m.startswith("KTLS-VM-MODULE"):
                say("  " + m)
        if "KTLS-VM-BOOT" not in console and load == "1":
            # The kernel never reached /init on the first boot: nothing ringlb did; this machine
            # cannot run the VM. (Had the first boot worked, a second one failing is a failure.)
            skip("the VM did not boot (vm.sh exit %s):\n%s\n%s" % (rc, out.strip(), tail(console, 30)))
        problems = judge(label, console, plain)
        kmsg = [ln.replace("\r", "") for ln in console.splitlines() if ln.startswith("KTLS-VM-KMSG ")]
        for ln in kmsg:
            say("  kernel: " + ln[len("KTLS-VM-KMSG "):])
        bad = [ln for ln in kmsg if any(m in ln for m in KERNEL_TROUBLE)]
        if bad:
            problems.append("kernel trouble during the test")
            say("  FAIL the kernel logged trouble while the test ran (see above)")
        if rc is None or rc == 124:
            problems.append("timeout")
            say("  FAIL the VM ran out of time (%ds)" % BOOT_TIMEOUT)
        elif "KTLS-VM-DONE" not in console:
            problems.append("no KTLS-VM-DONE")
            say("  FAIL the VM stopped without KTLS-VM-DONE (vm.sh exit %s): %s" % (rc, out.strip()))
        if problems:
            failed = True
            say("  console tail (%s):" % log)
            say(tail(console, 80))
    say("both boots: %.1fs" % total)
    return 1 if failed else 0


def main():
    if not os.access(RINGLB, os.X_OK):
        say("FAIL: %s is not an executable (build ringlb first)" % RINGLB)
        return 1
    if not sys.platform.startswith("linux"):
        skip("Linux only")
    helpers = build_helpers()
    certs = certificates()
    if os.environ.get("RINGLB_KTLS_FORCE_VM") != "1" and host_has_ktls(helpers["ktls_client_check"]):
        say("the host kernel has kTLS: running natively, no VM")
        return run_native(helpers, certs)
    say("the host kernel has no kTLS (setsockopt TCP_ULP \"tls\" fails): using the VM")
    return run_vm(helpers, certs)


if __name__ == "__main__":
    sys.exit(main())
