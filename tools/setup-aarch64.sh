#!/usr/bin/env bash
# Enable edgeres' ARM (aarch64) support on an x86-64 Debian/Ubuntu host. Idempotent.
#
#   1. the aarch64 cross toolchain and the qemu user-mode emulator (apt; skipped when present):
#        gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static
#   2. the aarch64 TVM runtime (libtvm_runtime.so + libtvm_ffi.so and the tvm_ffi headers),
#      taken from the apache-tvm / apache-tvm-ffi aarch64 wheels on PyPI (same versions as the
#      host's TVM), into $EDGERES_AARCH64_RUNTIME (default ~/.cache/edgeres/aarch64-runtime):
#        lib/libtvm_runtime.so  lib/libtvm_ffi.so  include/  edgeres-runtime.json
#
# edgeres cross-compiles with (1), and builds/runs the bundle's C++ runner for aarch64 against (2)
# under qemu. This runs at set-up time only; edgeres never downloads anything at run time.
#
# Environment: PYTHON (the Python whose pip downloads the wheels and whose TVM version is matched;
# default: the repo's .venv, else python3), EDGERES_AARCH64_RUNTIME, EDGERES_TVM_VERSION,
# EDGERES_TVM_FFI_VERSION, SKIP_APT=1 (do not touch apt packages).
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
    exit 0
fi

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
