#!/usr/bin/env bash
# Makes Fashion-MNIST available to Rampart. Order of preference:
#   1. already there ($RAMPART_DATA, datasets/fashion-mnist, /usr/share/datasets/fashion-mnist);
#   2. as root: apt-get install -y dataset-fashion-mnist (Debian's package);
#   3. otherwise: apt-get download the .deb and unpack its files into datasets/fashion-mnist.
set -euo pipefail
cd "$(dirname "$0")/.."

files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
complete() {
  local d=$1
  [ -d "$d" ] || return 1
  for f in "${files[@]}"; do
    [ -s "$d/$f.gz" ] || [ -s "$d/$f" ] || return 1
  done
}

for d in "${RAMPART_DATA:-}" datasets/fashion-mnist /usr/share/datasets/fashion-mnist; do
  if [ -n "$d" ] && complete "$d"; then
    echo "fetch-data: Fashion-MNIST found in $d"
    exit 0
  fi
done

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "fetch-data: installing Debian package dataset-fashion-mnist"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  if complete /usr/share/datasets/fashion-mnist; then
    echo "fetch-data: Fashion-MNIST installed in /usr/share/datasets/fashion-mnist"
    exit 0
  fi
fi

if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
  echo "fetch-data: unpacking dataset-fashion-mnist into datasets/fashion-mnist"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download dataset-fashion-mnist >/dev/null)
  dpkg-deb -x "$tmp"/dataset-fashion-mnist_*.deb "$tmp/root"
  mkdir -p datasets/fashion-mnist
  cp "$tmp"/root/usr/share/datasets/fashion-mnist/* datasets/fashion-mnist/
  if complete datasets/fashion-mnist; then
    echo "fetch-data: Fashion-MNIST unpacked into datasets/fashion-mnist"
    exit 0
  fi
fi

echo "fetch-data: could not get Fashion-MNIST. Put the four IDX files (gzipped or not) in" >&2
echo "  datasets/fashion-mnist or point RAMPART_DATA at them." >&2
exit 1
