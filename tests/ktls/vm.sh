#!/usr/bin/env bash
# Boots a throw-away Debian kernel that has kTLS (CONFIG_TLS=m) under qemu, with a busybox
# initramfs, and runs one test script inside it. The host kernel may lack the tls module; this
# is how ringlb's kTLS path gets exercised for real anyway.
#
# Usage:
#   tests/ktls/vm.sh [options]
#     --load-tls 1|0        insmod the tls module at boot (default 1). 0 keeps every crypto module
#                           but leaves tls out (and on-demand module loading off), so
#                           setsockopt(TCP_ULP, "tls") fails with ENOENT: ringlb's fallback path.
#     --script FILE         busybox-sh script run inside as /test.sh (default: only boot + report)
#     --bin PATH[:DEST]     an executable to copy in (default DEST /bin/<name>), with every shared
#                           library ldd lists, at the same absolute paths (rpath keeps working);
#                           repeatable
#     --file SRC:DEST       a data file to copy in (repeatable)
#     --log OUT             serial console log (default $CACHE/console.log)
#     --timeout SEC         kill qemu after this long (default 120)
#     --smp N               virtual CPUs (default 2)
#     --append ARGS         more kernel command line (e.g. "ringlb_verbose=1")
#     --prepare-only        fetch the kernel and modules into the cache, then exit
#     --quiet               do not copy the console log to stdout at the end
#     --gzip                gzip the initramfs (default: a plain cpio, which boots faster)
#
#   Example (what tests/ktls/test_ktls_vm.py runs, by hand):
#     tests/ktls/vm.sh --load-tls 1 --script tests/ktls/vm_test.sh --bin build/ringlb \
#       --bin build/ktls-vm/echo_backend --bin build/ktls-vm/ktls_client_check --bin /usr/bin/curl \
#       --file build/ktls-vm/certs/cert.pem:/etc/ringlb/cert.pem \
#       --file build/ktls-vm/certs/key.pem:/etc/ringlb/key.pem --log /tmp/console.log
#
# Environment:
#   RINGLB_KTLS_CACHE   kernel/module cache (default $ROOT/build/ktls-vm); first run downloads
#                       the kernel package with `apt-get download` (needs a Debian mirror)
#   RINGLB_KTLS_CPU     qemu -cpu model (default: max without AVX, see below)
#   RINGLB_KTLS_ACCEL   qemu accelerator (default tcg: software emulation, works anywhere;
#                       "kvm" would be faster, but CI has no usable KVM: on the machine this was
#                       written on, /dev/kvm exists and a kvm boot hangs before any output)
#
# Inside the VM: /init mounts proc, sys, devtmpfs and /tmp, brings up lo, loads the modules,
# runs `sh /test.sh` with KTLS_LOAD=0|1 in its environment and every kernel command line
# "key=value" of the form ringlb_*=... exported too, then prints every kernel message of
# warning level or worse logged meanwhile as "KTLS-VM-KMSG <4>[time] text", and
#     KTLS-VM-DONE rc=<exit status of /test.sh>
# and powers off. Everything goes to the serial console, which qemu writes to --log.
#
# Exit status: 0 the marker said rc=0; 1 it said something else; 2 no marker (the VM died or
# the script hung); 3 could not prepare or start the VM; 124 timeout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${RINGLB_KTLS_CACHE:-$ROOT/build/ktls-vm}"
ACCEL="${RINGLB_KTLS_ACCEL:-tcg}"
# Everything TCG emulates except the AVX family: the kernel's and both TLS libraries' AES-GCM
# and ChaCha20 then take their SSE/AES-NI paths, which TCG runs about twice as fast as the AVX
# ones (measured: 4 x 1 MiB over kTLS 1.7 s instead of 3.4 s). ringlb's code paths are the same.
CPU="${RINGLB_KTLS_CPU:-max,-avx,-avx2,-vaes,-vpclmulqdq,-fma,-f16c}"

load_tls=1 script="" log="" timeout_s=120 smp=2 append="" prepare_only=0 quiet=0 gzip_initrd=0
bins=() files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --load-tls) load_tls="$2"; shift 2 ;;
    --script) script="$2"; shift 2 ;;
    --bin) bins+=("$2"); shift 2 ;;
    --file) files+=("$2"); shift 2 ;;
    --log) log="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --smp) smp="$2"; shift 2 ;;
    --append) append="$2"; shift 2 ;;
    --prepare-only) prepare_only=1; shift ;;
    --quiet) quiet=1; shift ;;
    --gzip) gzip_initrd=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "vm.sh: unknown argument $1" >&2; exit 3 ;;
  esac
done
case "$load_tls" in 0|1) ;; *) echo "vm.sh: --load-tls takes 0 or 1" >&2; exit 3 ;; esac

say() { echo "vm.sh: $*" >&2; }
die() { say "$*"; exit 3; }

# Modules the kernel's TLS record layer needs. tls itself; gcm(aes) = gcm + ctr + ghash over the
# built-in aes; rfc7539(chacha20,poly1305) = chacha20poly1305 + chacha20 + poly1305. The generic
# implementations are required; the x86 ones are faster but only load when the (emulated) CPU
# has the instructions, so their failure is reported, not fatal.
REQUIRED_MODULES="tls ctr ghash_generic gcm chacha_generic poly1305_generic chacha20poly1305"
OPTIONAL_MODULES="aesni_intel ghash_clmulni_intel chacha_x86_64 poly1305_x86_64"

KDIR="$CACHE/kernel"   # vmlinuz, config, modules/*.ko, modules/load.list, VERSION

# ---------------------------------------------------------------------------------------------
# Kernel and modules, once per cache.

prepare_kernel() {
  [ -f "$KDIR/VERSION" ] && [ -f "$KDIR/vmlinuz" ] && [ -f "$KDIR/modules/load.list" ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found: cannot fetch the kernel package"
  # The metapackage only depends on the versioned image; that is the package with the files.
  local pkg
  pkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
         awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
  [ -n "$pkg" ] || die "apt-cache depends linux-image-cloud-amd64 names no kernel package (apt-get update?)"
  say "fetching $pkg into $KDIR (first run only)"
  local work
  work="$(mktemp -d "$CACHE/fetch.XXXXXX")"
  # The _apt sandbox user may not write to the cache; downloading as the caller is fine here.
  # A stale package index names a version the mirror no longer has: refresh it once (as root).
  if ! (cd "$work" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$pkg" >/dev/null); then
    if [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1; then
      pkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
             awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
      (cd "$work" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$pkg" >/dev/null) ||
        { rm -rf "$work"; die "apt-get download $pkg failed"; }
    else
      rm -rf "$work"; die "apt-get download $pkg failed"
    fi
  fi
  dpkg-deb -x "$work"/*.deb "$work/x" || { rm -rf "$work"; die "dpkg-deb -x failed"; }

  local kver mroot
  kver="$(find "$work/x/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -n1)"
  mroot="$work/x/lib/modules/$kver"
  # Debian builds modules.dep in postinst, not in the package: build it the same way.
  [ -f "$mroot/modules.dep" ] || depmod -b "$work/x" "$kver" ||
    { rm -rf "$work"; die "depmod failed"; }

  mkdir -p "$work/out/modules"
  cp "$work/x/boot/vmlinuz-$kver" "$work/out/vmlinuz"
  cp "$work/x/boot/config-$kver" "$work/out/config"
  if ! python3 - "$mroot" "$work/out/modules" "$REQUIRED_MODULES" "$OPTIONAL_MODULES" <<'EOF'
# Resolves the wanted modules and their dependencies from modules.dep into a load order
# (dependencies first), copies them out decompressed (busybox insmod takes plain .ko), and writes
# load.list: "<module> <required|optional>" per line, in load order.
import lzma, gzip, os, shutil, sys
mroot, out, required, optional = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
norm = lambda p: os.path.basename(p).split(".ko")[0].replace("-", "_")
deps, path = {}, {}
for line in open(os.path.join(mroot, "modules.dep")):
    mod, _, rest = line.partition(":")
    deps[norm(mod)] = [norm(d) for d in rest.split()]
    path[norm(mod)] = mod
builtin = {norm(l.strip()) for l in open(os.path.join(mroot, "modules.builtin")) if l.strip()}
order, kind = [], {}
def visit(m, k):
    if m in kind:
        if k == "required": kind[m] = "required"
        return
    kind[m] = k
    for d in deps[m]:
        visit(d, k)
    order.append(m)
for k, names in (("required", required), ("optional", optional)):
    for m in names:
        if m in builtin:
            print("vm.sh: %s is built in" % m, file=sys.stderr)
        elif m not in deps:
            print("vm.sh: %s: no such module in this kernel" % m, file=sys.stderr)
            if k == "required":
                sys.exit(1)
        else:
            visit(m, k)
with open(os.path.join(out, "load.list"), "w") as f:
    for m in order:
        src = os.path.join(mroot, path[m])
        opener = lzma.open if src.endswith(".xz") else gzip.open if src.endswith(".gz") else open
        if src.endswith(".zst"):
            sys.exit("vm.sh: %s: zstd-compressed modules are not handled" % src)
        with opener(src, "rb") as i, open(os.path.join(out, m + ".ko"), "wb") as o:
            shutil.copyfileobj(i, o)
        f.write("%s %s\n" % (m, kind[m]))
EOF
  then rm -rf "$work"; die "could not resolve the kTLS modules"; fi
  echo "$kver" > "$work/out/VERSION"
  rm -rf "$KDIR"
  mv "$work/out" "$KDIR"
  rm -rf "$work"
  say "kernel $kver cached; modules: $(awk '{printf "%s(%s) ", $1, substr($2,1,3)}' "$KDIR/modules/load.list")"
}

mkdir -p "$CACHE"
# Two test runs sharing a cache must not both download; the second waits for the first.
exec 9>"$CACHE/.lock"
flock 9
prepare_kernel
flock -u 9
[ "$prepare_only" = 1 ] && { echo "$KDIR"; exit 0; }

command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found"
command -v busybox >/dev/null || die "busybox not found"

# ---------------------------------------------------------------------------------------------
# The initramfs, rebuilt every run: the binaries under test change between runs, and it takes
# about a second.

t_stage=$(date +%s.%N)
stage="$(mktemp -d "$CACHE/stage.XXXXXX")"
initrd="$stage.cpio"
trap 'rm -rf "$stage" "$initrd"' EXIT
mkdir -p "$stage"/{bin,sbin,etc,proc,sys,dev,tmp,root,modules,usr/bin}

# A usr-merged host has /lib -> usr/lib; mirror that, or a library copied to /lib/... and one
# copied to /usr/lib/... would end up in two different places while ld.so looks in one.
for d in lib lib32 lib64 libx32; do
  if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$stage/$d"; fi
done

# Copies a host file to the same absolute path inside, resolving symlinks so the file itself
# lands where ld.so and rpath will look.
copy_abs() {
  local src="$1" dest="$2" rdir
  rdir="$(cd "$(dirname "$dest")" 2>/dev/null && pwd -P)" || rdir="$(dirname "$dest")"
  [ -e "$stage$rdir/$(basename "$dest")" ] && return 0
  mkdir -p "$stage$rdir"
  cp -L "$src" "$stage$rdir/$(basename "$dest")"
}

copy_bin() {
  local src="${1%%:*}" dest lib
  dest="/bin/$(basename "$src")"
  [ "$src" != "$1" ] && dest="${1#*:}"
  [ -x "$src" ] || die "--bin $src: not an executable"
  mkdir -p "$stage$(dirname "$dest")"
  cp -L "$src" "$stage$dest"
  # ldd prints "name => /path (addr)" and "/lib64/ld-linux... (addr)"; take every absolute path.
  for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ ]*' || true); do
    if [ -e "$lib" ]; then copy_abs "$lib" "$lib"; fi
  done
}

# The applet links are made by /init (busybox --install): ~270 ln processes here would cost
# more than the whole initramfs build otherwise. Only sh is needed before that.
cp "$(command -v busybox)" "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"
for b in ${bins[@]+"${bins[@]}"}; do copy_bin "$b"; done
for f in ${files[@]+"${files[@]}"}; do
  src="${f%%:*}" dest="${f#*:}"
  if [ ! -f "$src" ] || [ "$src" = "$f" ]; then die "--file $f: expected SRC:DEST with an existing SRC"; fi
  mkdir -p "$stage$(dirname "$dest")"
  cp -L "$src" "$stage$dest"
done
if [ -n "$script" ]; then
  cp "$script" "$stage/test.sh"
else
  printf '#!/bin/sh\necho "no --script given: booted fine"\n' > "$stage/test.sh"
fi
cp "$KDIR"/modules/*.ko "$KDIR/modules/load.list" "$stage/modules/"
printf '127.0.0.1 localhost\n' > "$stage/etc/hosts"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$stage/etc/passwd"
printf 'root:x:0:\n' > "$stage/etc/group"

cat > "$stage/init" <<'EOF'
#!/bin/sh
# PID 1 of the kTLS test VM. The cpio has no /dev/console (making device nodes needs root on
# the host), so the kernel starts us without stdio; devtmpfs provides the console instead.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs -o mode=1777 tmp /tmp
echo "KTLS-VM-BOOT uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r) cpus=$(nproc)"

# Nothing may be loaded behind the test's back: with ktls_load=0 the tls module must stay
# absent even though setsockopt(TCP_ULP) asks for "tcp-ulp-tls". An empty modprobe path makes
# request_module() fail at once.
echo > /proc/sys/kernel/modprobe

ip link set lo up
ip addr add 127.0.0.1/8 dev lo 2>/dev/null

KTLS_LOAD=0
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ktls_load=*) KTLS_LOAD="${arg#ktls_load=}" ;;
    ringlb_*=*) export "$arg" ;;
  esac
done
export KTLS_LOAD

loaded="" failed=""
while read -r mod kind; do
  if [ "$mod" = tls ] && [ "$KTLS_LOAD" != 1 ]; then continue; fi
  if out="$(insmod "/modules/$mod.ko" 2>&1)"; then
    loaded="$loaded $mod"
  else
    failed="$failed $mod"
    echo "KTLS-VM-MODULE $mod FAILED ($kind): $out"
  fi
done < /modules/load.list
echo "KTLS-VM-MODULES ktls_load=$KTLS_LOAD loaded:${loaded:- none} failed:${failed:- none}"
echo "KTLS-VM-READY uptime=$(cut -d' ' -f1 /proc/uptime)"

cd /tmp
# quiet keeps warnings off the console, and a WARN or oops from the tls code while the test runs
# is exactly what must not go unnoticed: print what the kernel logged at warning or worse since.
kmsg_before=$(dmesg -r | wc -l)
sh /test.sh
rc=$?
dmesg -r | awk -v from="$kmsg_before" 'NR > from { p = substr($0, 2, index($0, ">") - 2) + 0
  if (p % 8 <= 4) print "KTLS-VM-KMSG " $0 }'
echo "KTLS-VM-DONE rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
EOF
chmod 755 "$stage/init" "$stage/test.sh"

# Uncompressed by default: measured on a 2-core host, gzip -1 of the ~28 MiB tree costs ~1 s
# here and the emulated kernel needs 1-2 s more to inflate it than to copy a plain cpio.
if [ "$gzip_initrd" = 1 ]; then
  (cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$initrd"
else
  (cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) > "$initrd"
fi
say "initramfs: $(($(stat -c %s "$initrd") / 1048576)) MiB$([ "$gzip_initrd" = 1 ] && echo " gzipped"), built in $(awk -v s="$t_stage" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')s"

# ---------------------------------------------------------------------------------------------
# Boot.

log="${log:-$CACHE/console.log}"
mkdir -p "$(dirname "$log")"
: > "$log"
qemu_err="$log.qemu"
# No display, no monitor: the serial port is the only channel and it goes to the log file.
# -no-reboot turns both poweroff and a panic (panic=-1 reboots at once) into a qemu exit.
# cryptomgr.notests: the kernel's crypto self-tests cost ~0.3 s of emulated boot; the records
# the kernel encrypts are checked anyway, by the test's client (OpenSSL, userspace) decrypting them.
# timeout --foreground stays in our process group, so whoever stops this script by its group
# stops qemu too; the trap covers a plain TERM/INT to this script alone.
start=$(date +%s.%N)
set +e
timeout --foreground -k 5 "$timeout_s" qemu-system-x86_64 \
  -M q35 -accel "$ACCEL" -cpu "$CPU" -m 1024 -smp "$smp" \
  -display none -monitor none -serial "file:$log" -no-reboot \
  -nic none \
  -kernel "$KDIR/vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 quiet panic=-1 cryptomgr.notests=1 ktls_load=$load_tls $append" \
  </dev/null >"$qemu_err" 2>&1 &
qpid=$!
trap 'kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null; rm -rf "$stage" "$initrd"; exit 143' TERM INT HUP
wait "$qpid"
qrc=$?
trap - TERM INT HUP
set -e
secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')

[ "$quiet" = 1 ] || cat "$log"
if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then
  say "timeout after ${timeout_s}s (ktls_load=$load_tls)"
  exit 124
fi
marker="$(grep -a -o 'KTLS-VM-DONE rc=[0-9]*' "$log" | tail -n1 || true)"
if [ -z "$marker" ]; then
  if [ $qrc -ne 0 ]; then
    say "qemu failed (exit $qrc) after ${secs}s: $(tail -n5 "$qemu_err" | tr '\n' ' ')"
    exit 3
  fi
  say "the VM stopped after ${secs}s without KTLS-VM-DONE"
  exit 2
fi
say "VM ran ${secs}s (ktls_load=$load_tls): $marker"
[ "$marker" = "KTLS-VM-DONE rc=0" ] && exit 0
exit 1
