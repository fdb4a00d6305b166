#!/usr/bin/env bash
# Enable edgeres' ARM (aarch64) support on an x86-64 Debian/Ubuntu host. Idempotent.
#
#   1. the aarch64 cross toolchain and the qemu user-mode emulator (apt; skipped when present):
#        gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static
#   2. the aarch64 TVM runtime (libtvm_runtime.so + libtvm_ffi.so and the tvm_ffi headers),
#      taken from the apache-tvm / apache-tvm-ffi aarch64 wheels on PyPI (same versions as the
#      host's TVM), into $EDGERES_AARCH64_RUNTIME (default ~/.cache/edgeres/aarch64-runtime):
#        lib/libtvm_runtime.so  lib/libtvm_ffi.so  include/  edgeres-runtime.json
#   3. an emulated aarch64 board for the RPC tests: Debian bookworm's arm64 Python 3.11, fetched with
#      apt's own client from a private package list (the host's apt configuration is not touched),
#      unpacked into $EDGERES_AARCH64_PYTHON (default ~/.cache/edgeres/aarch64-python), plus the
#      aarch64 apache-tvm / apache-tvm-ffi wheels (runtime only: the compiler library is removed),
#      psutil and cloudpickle; root/usr/bin/python3 runs it under qemu-aarch64-static.
#
# edgeres cross-compiles with (1), builds/runs the bundle's C++ runner for aarch64 against (2)
# under qemu, and the RPC tests run TVM's RPC server on (3). This runs at set-up time only;
# edgeres never downloads anything at run time.
#
# Environment: PYTHON (the Python whose pip downloads the wheels and whose TVM version is matched;
# default: the repo's .venv, else python3), EDGERES_AARCH64_RUNTIME, EDGERES_AARCH64_PYTHON,
# EDGERES_TVM_VERSION, EDGERES_TVM_FFI_VERSION, SKIP_APT=1 (do not touch apt packages),
# SKIP_AARCH64_PYTHON=1 (no emulated Python), DEBIAN_MIRROR (default http://deb.debian.org).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

log() { printf 'setup-aarch64: %s\n' "$*" >&2; }
die() { printf 'setup-aarch64: error: %s\n' "$*" >&2; exit 1; }

# --- 1. toolchain + qemu -------------------------------------------------------------------
apt_packages=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static)
if [[ "${SKIP_APT:-0}" == 1 ]]; then
    log "SKIP_APT=1: not checking apt packages"
elif command -v aarch64-linux-gnu-gcc >/dev/null && command -v aarch64-linux-gnu-g++ >/dev/null \
        && command -v qemu-aarch64-static >/dev/null && [[ -d /usr/aarch64-linux-gnu/lib ]]; then
    log "cross toolchain and qemu-aarch64-static already installed"
else
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "need root to run: apt-get install -y ${apt_packages[*]}"
        sudo=(sudo)
    fi
    log "installing ${apt_packages[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi

# --- 2. aarch64 TVM runtime ----------------------------------------------------------------
if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x "$repo/.venv/bin/python" ]]; then
    py="$repo/.venv/bin/python"
else
    py="$(command -v python3)" || die "python3 not found; set PYTHON=/path/to/python"
fi

# Match the host's TVM (an aarch64 runtime must load libraries compiled by the host's compiler).
read -r tvm_ver ffi_ver pyver < <("$py" - <<'EOF'
import os, sys
from importlib import metadata
def ver(dist, env, default):
    if os.environ.get(env):
        return os.environ[env]
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return default
print(ver("apache-tvm", "EDGERES_TVM_VERSION", "0.27.0.post1"),
      ver("apache-tvm-ffi", "EDGERES_TVM_FFI_VERSION", "0.1.14.post1"),
      f"{sys.version_info.major}.{sys.version_info.minor}")
EOF
)

dest="${EDGERES_AARCH64_RUNTIME:-$HOME/.cache/edgeres/aarch64-runtime}"
stamp="$dest/edgeres-runtime.json"
want="{\"arch\": \"aarch64\", \"apache-tvm\": \"$tvm_ver\", \"apache-tvm-ffi\": \"$ffi_ver\"}"
if [[ -f "$stamp" && -f "$dest/lib/libtvm_runtime.so" && -f "$dest/lib/libtvm_ffi.so" ]] \
        && [[ "$(cat "$stamp")" == "$want" ]]; then
    log "aarch64 TVM runtime $tvm_ver (ffi $ffi_ver) already in $dest"
    runtime_ok=1
fi
if [[ "${runtime_ok:-0}" != 1 ]]; then

mkdir -p "$(dirname "$dest")"
tmp="$(mktemp -d "$(dirname "$dest")/.aarch64-runtime.XXXXXX")"
cache="$(mktemp -d "$(dirname "$dest")/.aarch64-wheels.XXXXXX")"  # ~100 MB, removed afterwards
trap 'rm -rf "$tmp" "$cache"' EXIT
log "downloading aarch64 wheels apache-tvm==$tvm_ver apache-tvm-ffi==$ffi_ver"
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_28_aarch64 --python-version "$pyver" --dest "$cache" \
    "apache-tvm==$tvm_ver" "apache-tvm-ffi==$ffi_ver"

"$py" - "$cache" "$tmp" "$tvm_ver" "$ffi_ver" <<'EOF'
"""Extract the two runtime libraries and the tvm_ffi headers from the aarch64 wheels."""
import glob, os, shutil, sys, zipfile
cache, out, tvm_ver, ffi_ver = sys.argv[1:]

def wheel(dist, ver):
    hits = sorted(glob.glob(os.path.join(cache, f"{dist}-{ver}-*aarch64*.whl")))
    if not hits:
        sys.exit(f"no aarch64 wheel for {dist}=={ver} in {cache}")
    return zipfile.ZipFile(hits[-1])

def copy(zf, member, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with zf.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)

tvm = wheel("apache_tvm", tvm_ver)
ffi = wheel("apache_tvm_ffi", ffi_ver)
names = set(tvm.namelist())
if "tvm/lib/libtvm_runtime.so" not in names:
    sys.exit("the apache-tvm aarch64 wheel has no tvm/lib/libtvm_runtime.so")
copy(tvm, "tvm/lib/libtvm_runtime.so", os.path.join(out, "lib", "libtvm_runtime.so"))
copy(ffi, "tvm_ffi/lib/libtvm_ffi.so", os.path.join(out, "lib", "libtvm_ffi.so"))
n = 0
for member in ffi.namelist():
    if member.startswith("tvm_ffi/include/") and not member.endswith("/"):
        copy(ffi, member, os.path.join(out, "include", member[len("tvm_ffi/include/"):]))
        n += 1
if not os.path.exists(os.path.join(out, "include", "tvm", "ffi", "function.h")):
    sys.exit("the apache-tvm-ffi wheel has no tvm_ffi/include/tvm/ffi/function.h")
print(f"extracted 2 libraries and {n} headers", file=sys.stderr)
EOF
printf '%s' "$want" > "$tmp/edgeres-runtime.json"
chmod 755 "$tmp"
rm -rf "$dest.old"
[[ -e "$dest" ]] && mv "$dest" "$dest.old"
mv "$tmp" "$dest"
rm -rf "$dest.old" "$cache"
trap - EXIT
if file "$dest/lib/libtvm_runtime.so" 2>/dev/null | grep -q aarch64 || ! command -v file >/dev/null; then
    log "aarch64 TVM runtime $tvm_ver (ffi $ffi_ver) installed in $dest"
else
    die "$dest/lib/libtvm_runtime.so is not an aarch64 library"
fi
fi

# --- 3. emulated aarch64 board: Debian's arm64 Python + the aarch64 TVM wheel, under qemu ------
if [[ "${SKIP_AARCH64_PYTHON:-0}" == 1 ]]; then
    log "SKIP_AARCH64_PYTHON=1: no emulated aarch64 Python (the RPC tests on it will skip)"
    exit 0
fi
pydest="${EDGERES_AARCH64_PYTHON:-$HOME/.cache/edgeres/aarch64-python}"
pystamp="$pydest/edgeres-python.json"
pywant="{\"arch\": \"aarch64\", \"python\": \"3.11\", \"apache-tvm\": \"$tvm_ver\", \"apache-tvm-ffi\": \"$ffi_ver\"}"
if [[ -f "$pystamp" && -x "$pydest/root/usr/bin/python3" ]] && [[ "$(cat "$pystamp")" == "$pywant" ]]; then
    log "emulated aarch64 Python with TVM $tvm_ver already in $pydest"
    exit 0
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f "$keyring" ]] || die "$keyring is missing: apt-get install debian-archive-keyring (or SKIP_AARCH64_PYTHON=1)"
qemu="$(command -v qemu-aarch64-static)" || die "qemu-aarch64-static is missing (step 1)"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org}"
mkdir -p "$(dirname "$pydest")"
pytmp="$(mktemp -d "$(dirname "$pydest")/.aarch64-python.XXXXXX")"
[[ -n "$pytmp" && -d "$pytmp" ]] || die "cannot create a temporary folder next to $pydest"
trap 'rm -rf "$pytmp"' EXIT
aptd="$pytmp/apt"
mkdir -p "$aptd/lists/partial" "$aptd/archives/partial" "$aptd/debs" "$pytmp/root"
touch "$aptd/status"
printf 'deb [arch=arm64 signed-by=%s] %s/debian bookworm main\ndeb [arch=arm64 signed-by=%s] %s/debian-security bookworm-security main\n' \
    "$keyring" "$mirror" "$keyring" "$mirror" > "$aptd/sources.list"
apt_opts=(-o "Dir::State=$aptd" -o "Dir::State::Lists=$aptd/lists" -o "Dir::State::status=$aptd/status"
          -o "Dir::Cache=$aptd" -o "Dir::Cache::archives=$aptd/archives"
          -o "Dir::Etc::SourceList=$aptd/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "APT::Architecture=arm64" -o "APT::Architectures::=arm64" -o "Debug::NoLocking=1"
          -o "APT::Sandbox::User=$(id -un)")
log "fetching Debian bookworm's arm64 python3.11 (apt, with a private package list in $aptd)"
apt-get -qq "${apt_opts[@]}" update
(cd "$aptd/debs" && apt-get -qq "${apt_opts[@]}" download python3.11-minimal libpython3.11-minimal \
    libpython3.11-stdlib libc6 libgcc-s1 libstdc++6 libexpat1 zlib1g libssl3 libbz2-1.0 libcrypt1 libffi8 \
    liblzma5 libuuid1)
for deb in "$aptd"/debs/*.deb; do dpkg-deb -x "$deb" "$pytmp/root"; done
[[ -x "$pytmp/root/usr/bin/python3.11" ]] || die "the arm64 python3.11 package did not unpack"
log "installing the aarch64 wheels apache-tvm==$tvm_ver apache-tvm-ffi==$ffi_ver (+ numpy, psutil, cloudpickle)"
"$py" -m pip install --quiet --disable-pip-version-check --only-binary=:all: --platform manylinux_2_28_aarch64 \
    --python-version 3.11 --implementation cp --target "$pytmp/root/site" \
    "apache-tvm==$tvm_ver" "apache-tvm-ffi==$ffi_ver" psutil cloudpickle
rm -f "$pytmp/root/site/tvm/lib/libtvm_compiler.so"  # runtime only: 260 MB less, and a faster import under qemu
# The wrapper passes itself as argv[0] (qemu -0): Python reports it as sys.executable, so a process it
# starts with sys.executable (TVM's server workers) runs under qemu too, without binfmt_misc.
{
    echo '#!/bin/sh'
    echo 'root="$(cd "$(dirname "$0")/../.." && pwd)"'
    echo "PYTHONPATH=\"\$root/site\${PYTHONPATH:+:\$PYTHONPATH}\" exec \"$qemu\" -L \"\$root\" -0 \"\$0\" \"\$root/usr/bin/python3.11\" \"\$@\""
} > "$pytmp/root/usr/bin/python3"
chmod 755 "$pytmp/root/usr/bin/python3" "$pytmp"
rm -rf "$aptd"
printf '%s' "$pywant" > "$pytmp/edgeres-python.json"
got="$("$pytmp/root/usr/bin/python3" -c 'import platform, tvm; print(platform.machine(), tvm.__version__)')" \
    || die "the emulated aarch64 Python does not start (see above)"
[[ "$got" == "aarch64 $tvm_ver" ]] || die "the emulated Python says '$got', expected 'aarch64 $tvm_ver'"
rm -rf "$pydest.old"
if [[ -e "$pydest" ]]; then mv "$pydest" "$pydest.old"; fi
mv "$pytmp" "$pydest"
rm -rf "$pydest.old"
trap - EXIT
log "emulated aarch64 Python ($got) installed in $pydest"
