#!/usr/bin/env bash
# Runs Rampart's whole test suite on the CPU: fetches Fashion-MNIST if missing, installs
# Mesa's software Vulkan driver (lavapipe) so the wgpu tests run the GPU kernels on the CPU,
# Chromium for the service's dashboard test and the age tool for the encryption interop test,
# builds in the release profile (tests reuse the release dependencies), runs clippy with
# warnings as errors, and runs every test (unit, integration, property tests).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-data.sh

if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing mesa-vulkan-drivers (lavapipe) for the wgpu tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q mesa-vulkan-drivers libvulkan1 >/dev/null; }
  else
    echo "test: no Vulkan driver and not root: the wgpu tests will fail; install mesa-vulkan-drivers" >&2
  fi
fi

# The service's dashboard is checked in headless Chromium (tests/serve.rs).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing chromium for the dashboard test"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null; }
  else
    echo "test: chromium is missing and this is not root: the dashboard test will fail; install chromium" >&2
  fi
fi

# Encryption at rest is checked against the age reference tool (tests/sealed.rs).
if ! command -v age >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing age for the encryption interop test"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q age >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q age >/dev/null; }
  else
    echo "test: age is missing and this is not root: the encryption interop test will fail; install age" >&2
  fi
fi

# Only lavapipe runs here: minimal autotuning keeps the first conv kernels from taking minutes.
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"
# The tests that open wgpu inside the test process, with no desktop session, would print Mesa's
# device-select layer's "XDG_RUNTIME_DIR is invalid" lines: off, as the binary does itself
# (`device::quiet_headless_vulkan`; tests/wgpu.rs checks the binary without this variable).
if [ -z "${XDG_RUNTIME_DIR:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  export NODEVICE_SELECT="${NODEVICE_SELECT:-1}"
fi

cargo build --release --locked --all-targets
# Lints as errors (a cold check of the dependencies adds about 3 minutes on 2 cores).
cargo clippy --release --locked --all-targets -- -D warnings
# Library, binary and integration tests (there are no doctests). The last line totals them.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --locked --lib --bins --tests "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
