#!/usr/bin/env bash
# Prove the Raspberry Pi path without a Pi: the edge extra installs on 64-bit ARM Debian Bookworm with
# Python 3.11 from the aarch64 wheels, and the torch-free runtime's predictions there agree with x86.
#
#   sudo deploy/pi/emulated_check.sh [BUNDLE]          # BUNDLE defaults to export/demo-int8
#
# What it does, each stage timed:
#   1. host tools: debootstrap, qemu-user-static, binfmt-support (apt-get, if missing); registers
#      qemu-aarch64 with binfmt_misc (mounting /proc/sys/fs/binfmt_misc if needed), so arm64 programs
#      run transparently inside a chroot;
#   2. an arm64 Debian bookworm root (debootstrap --arch arm64 --variant=minbase, python3.11 and
#      python3.11-venv from Debian), reused when it already exists ($PI_ROOT);
#   3. wheels: the project built as a (pure Python) wheel from a copy of the source, and the edge
#      extra's aarch64 cp311 wheels downloaded on the host with `pip download --platform ...`, which
#      fails here if any of them has no aarch64 wheel;
#   4. in the root, under qemu: a venv and `pip install --no-index 'crossl_edge-*.whl[edge]'` from those
#      wheels (exactly the resolve a Pi does, without emulating the network); torch must not be there;
#   5. on the host: deploy/pi/agreement.py reference -- real held-out windows of the bundle's test
#      subjects, run through the runtime (litert, 1 thread), saved with their logits;
#   6. in the root, under qemu, once per emulated core (QEMU_CPU cortex-a72 = Pi 4, cortex-a76 = Pi 5,
#      since XNNPACK picks different int8 kernels by CPU feature): agreement.py check -- same windows,
#      argmax must agree on every one and logits within a few int8 steps (see agreement.py).
#   Prints PASS (exit 0) or FAIL (exit 1).
#
# What it proves: the arm64 wheels exist and install with Python 3.11 on bookworm, the bundle loads and
# runs with numpy + ai-edge-litert only, and its predictions on real data match x86. What it does not:
# speed. Emulated timings mean nothing and are not measured or reported (the stage times printed are
# only how long this script takes). qemu emulates the instruction set with the named core's features,
# not its timing or memory system: only a real Pi says anything about speed.
#
# Requirements: Linux x86_64 host, root (apt-get, binfmt_misc, debootstrap, chroot, mount namespaces),
# Debian/Ubuntu apt, reach to the Debian archive and PyPI, ~0.5 GB disk, the data set for the reference
# ($CROSSL_EDGE_DATA), a host python with the edge extra (default: .venv/bin/python).
# Time on 2 x86 cores: about 6 minutes the first time (4.5 of them debootstrap, whose second stage runs
# under qemu; plus the apt-get of the host tools if they are missing), about 40 s with an existing root.
#
# Environment:
#   PI_ROOT      the arm64 root (default /var/tmp/crossl-edge-arm64-bookworm); kept and reused
#   PI_MIRROR    Debian mirror for debootstrap (default: the host's first apt source for bookworm)
#   PI_CPUS      emulated cores to check on (default "cortex-a72 cortex-a76")
#   PI_N         windows (default 64)
#   PI_WORK      scratch folder (default: a fresh mktemp -d, removed at the end)
#   PYTHON       host python with the edge extra (default .venv/bin/python, else python3)
#   CROSSL_EDGE_DATA  data sets root for the reference windows
set -Eeuo pipefail
trap 'echo "FAIL: $0 line $LINENO: $BASH_COMMAND" >&2' ERR

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUNDLE="$(realpath "${1:-$REPO/export/demo-int8}")"
PI_ROOT="${PI_ROOT:-/var/tmp/crossl-edge-arm64-bookworm}"
PI_CPUS="${PI_CPUS:-cortex-a72 cortex-a76}"
PI_N="${PI_N:-64}"
SUITE=bookworm
VENV=/opt/crossl-venv
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
if [[ -n "${PI_WORK:-}" ]]; then mkdir -p "$PI_WORK"; WORK="$PI_WORK"; else WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT; fi

T0=$SECONDS
STAGE_T=$SECONDS
TIMES=()
RESULTS=()
stage() { echo; echo "=== $* ==="; STAGE_T=$SECONDS; STAGE_NAME="$*"; }
done_stage() { local d=$((SECONDS - STAGE_T)); TIMES+=("$(printf '%4ds  %s' "$d" "$STAGE_NAME")"); echo "--- ${d}s"; }
fail() { echo; echo "FAIL: $*" >&2; summary; exit 1; }
summary() { echo; echo "stage times (wall clock of this script, not of the model):"; printf '  %s\n' "${TIMES[@]}"; echo "  total $((SECONDS - T0))s"; }
in_root() { # run a command inside the arm64 root, /proc and /dev mounted in a private mount namespace
  # Not the host's /sys, nor its /proc/cpuinfo: cpuinfo (XNNPACK's CPU detection) would read an x86 CPU
  # there and crash. The root holds a small /sys/devices/system/cpu of its own (stage 2) and, with
  # QEMU_CPU set, /opt/cpuinfo.$QEMU_CPU is mounted over /proc/cpuinfo, as the kernel of that core shows it.
  unshare --mount --propagation private sh -c '
    r="$1"; shift
    mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" || exit 97
    if [ -n "$QEMU_CPU" ] && [ -f "$r/opt/cpuinfo.$QEMU_CPU" ]; then mount --bind "$r/opt/cpuinfo.$QEMU_CPU" "$r/proc/cpuinfo" || exit 97; fi
    exec chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH='"$VENV"'/bin:/usr/bin:/bin ${QEMU_CPU:+QEMU_CPU=$QEMU_CPU} "$@"
  ' sh "$PI_ROOT" "$@"
}
fake_cpuinfo() { # /proc/cpuinfo of a 4-core Pi: features, implementer/part/variant/revision
  local i; for i in 0 1 2 3; do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
      "$i" "$1" "$2" "$3" "$4"
  done
}

case "$(realpath -m "$PI_ROOT")" in /|/usr|/var|/tmp|/home|"$REPO"*) echo "error: PI_ROOT=$PI_ROOT: choose a folder of its own" >&2; exit 2;; esac
[[ $(id -u) == 0 ]] || { echo "error: run as root (apt-get, binfmt_misc, debootstrap, chroot)" >&2; exit 2; }
[[ -f "$BUNDLE/manifest.json" && -f "$BUNDLE/model.tflite" ]] || { echo "error: $BUNDLE is no bundle with a litert program (manifest.json, model.tflite)" >&2; exit 2; }
[[ $(uname -m) == x86_64 ]] || echo "note: host is $(uname -m), not x86_64; the reference is then from this host"

# ---------------------------------------------------------------------------------------------------
stage "1. host tools and binfmt_misc"
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[[ -x /usr/bin/qemu-aarch64-static ]] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || fail "cannot mount binfmt_misc (a container without CAP_SYS_ADMIN?)"
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  update-binfmts --enable qemu-aarch64 || update-binfmts --import qemu-aarch64 || true
fi
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || fail "qemu-aarch64 is not registered with binfmt_misc"
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || fail "qemu-aarch64 is registered without the F (fix-binary) flag, so it cannot run inside a chroot"
echo "qemu: $(qemu-aarch64-static --version | head -1); binfmt: $(sed -n 's/^interpreter //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)"
done_stage

# ---------------------------------------------------------------------------------------------------
stage "2. arm64 Debian $SUITE root at $PI_ROOT"
if [[ -f "$PI_ROOT/.crossl-edge-root-ok" ]]; then
  echo "reusing it (remove $PI_ROOT to rebuild)"
else
  if [[ -z "${PI_MIRROR:-}" ]]; then
    PI_MIRROR="$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources; grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print "URIs: "$2}'; } \
      | awk '{print $2}' | grep -v -e security -e nodesource -e google | grep '/debian/\?$' | head -1 || true)"
  fi
  [[ -n "$PI_MIRROR" ]] || fail "no Debian mirror found in the host's apt sources: set PI_MIRROR"
  rm -rf "$PI_ROOT"
  debootstrap --arch arm64 --variant=minbase --include=python3.11,python3.11-venv,python3-distutils \
    "$SUITE" "$PI_ROOT" "$PI_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap --arch arm64 failed"; }
  [[ ! -d "$PI_ROOT/debootstrap" ]] || fail "debootstrap left $PI_ROOT unfinished (see $WORK/debootstrap.log)"
  touch "$PI_ROOT/.crossl-edge-root-ok"
fi
mkdir -p "$PI_ROOT/sys/devices/system/cpu"
echo 0-3 >"$PI_ROOT/sys/devices/system/cpu/possible"
echo 0-3 >"$PI_ROOT/sys/devices/system/cpu/present"
fake_cpuinfo "fp asimd evtstrm crc32 cpuid" 0x0 0xd08 3 >"$PI_ROOT/opt/cpuinfo.cortex-a72"  # Pi 4 (BCM2711)
fake_cpuinfo "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" \
  0x4 0xd0b 1 >"$PI_ROOT/opt/cpuinfo.cortex-a76"  # Pi 5 (BCM2712)
in_root uname -m | grep -qx aarch64 || fail "the root does not run arm64 code: $(in_root uname -m 2>&1)"
echo "root: $(in_root uname -m), $(in_root /usr/bin/python3.11 --version), Debian $(cat "$PI_ROOT/etc/debian_version")"
done_stage

# ---------------------------------------------------------------------------------------------------
stage "3. project wheel and aarch64 cp311 wheels of the edge extra (host)"
rm -rf "$WORK/src" "$PI_ROOT/opt/wheelhouse" && mkdir -p "$WORK/src" "$PI_ROOT/opt/wheelhouse"
# build from a copy, so setuptools' build/ and egg-info never land in the working tree
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/crossl_edge" "$REPO/firmware_bridge" "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation "$WORK/src" -w "$PI_ROOT/opt/wheelhouse" >"$WORK/wheel.log" 2>&1 \
  || "$PYTHON" -m pip wheel -q --no-deps "$WORK/src" -w "$PI_ROOT/opt/wheelhouse" >>"$WORK/wheel.log" 2>&1 \
  || { cat "$WORK/wheel.log" >&2; fail "building the project wheel failed"; }
WHEEL="$(cd "$PI_ROOT/opt/wheelhouse" && ls crossl_edge-*.whl | head -1)"
plat=()
for t in manylinux2014 manylinux_2_17 manylinux_2_27 manylinux_2_28 manylinux_2_31 manylinux_2_34 manylinux_2_35 manylinux_2_36; do
  plat+=(--platform "${t}_aarch64")  # glibc of bookworm is 2.36: every manylinux tag up to it
done
"$PYTHON" -m pip download -q "${plat[@]}" --python-version 3.11 --implementation cp --abi cp311 --only-binary=:all: \
  -d "$PI_ROOT/opt/wheelhouse" "$PI_ROOT/opt/wheelhouse/$WHEEL[edge]" 2> >(grep -v '^WARNING: Location' >&2) \
  || fail "some dependency of the edge extra has no aarch64 cp311 wheel"
ls "$PI_ROOT/opt/wheelhouse" | sed 's/^/  /'
done_stage

# ---------------------------------------------------------------------------------------------------
stage "4. venv and pip install '$WHEEL[edge]' in the arm64 root (under qemu)"
[[ -x "$PI_ROOT$VENV/bin/python" ]] || in_root /usr/bin/python3.11 -m venv "$VENV" || fail "python3.11 -m venv failed in the root"
in_root python -m pip install -q --disable-pip-version-check --no-index --find-links /opt/wheelhouse "/opt/wheelhouse/$WHEEL[edge]" \
  || fail "pip install of the edge extra failed in the arm64 root"
in_root python -m pip install -q --disable-pip-version-check --no-index --no-deps --force-reinstall "/opt/wheelhouse/$WHEEL" \
  || fail "reinstalling the project wheel failed"
in_root python -m pip list --disable-pip-version-check --format=freeze | sed 's/^/  /'
if in_root python -c 'import torch' 2>/dev/null; then fail "torch is importable in the arm64 venv: the edge install must not need it"; fi
echo "torch: not installed (as intended)"
done_stage

# ---------------------------------------------------------------------------------------------------
stage "5. reference predictions on x86 ($PYTHON)"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$REPO/deploy/pi/agreement.py" reference \
  --bundle "$BUNDLE" --out "$WORK/ref.npz" --n "$PI_N" || fail "agreement.py reference failed"
rm -rf "$PI_ROOT/opt/check" && mkdir -p "$PI_ROOT/opt/check"
cp -r "$BUNDLE" "$PI_ROOT/opt/check/bundle"
cp "$WORK/ref.npz" "$REPO/deploy/pi/agreement.py" "$PI_ROOT/opt/check/"
done_stage

# ---------------------------------------------------------------------------------------------------
status=0
for cpu in $PI_CPUS; do
  stage "6. agreement.py check in the arm64 root, QEMU_CPU=$cpu"
  if QEMU_CPU="$cpu" in_root python /opt/check/agreement.py check --bundle /opt/check/bundle --reference /opt/check/ref.npz; then
    RESULTS+=("$cpu: agree")
  else
    status=1; RESULTS+=("$cpu: DISAGREE or error")
  fi
  done_stage
done

summary
printf '  %s\n' "${RESULTS[@]}"
if ((status == 0)); then echo "PASS: the edge extra installs on arm64 bookworm (python 3.11) and agrees with x86"; else echo "FAIL"; fi
exit "$status"
