#!/usr/bin/env bash
# Builds the kernel crate's tests for aarch64 with the distribution's Rust 1.63 and runs them
# under qemu on a CPU without dotprod (Cortex-A72) and one with it (Cortex-A76).
# Also checks that Rust 1.63 compiles the crate for x86-64.
set -euo pipefail
cd "$(dirname "$0")/.."

need_install=0
for tool in /usr/bin/rustc aarch64-linux-gnu-gcc qemu-aarch64; do
    command -v "$tool" >/dev/null 2>&1 || need_install=1
done
[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] || need_install=1
if [ "$need_install" = 1 ]; then
    dpkg --add-architecture arm64
    apt-get update
    apt-get install -y rustc libstd-rust-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
fi

mkdir -p target
echo "== rustc $(/usr/bin/rustc --version): x86-64 library build"
/usr/bin/rustc --edition 2021 --crate-type lib core/kernels/src/lib.rs -o target/x86_64-kernels-163.rlib

echo "== aarch64 test build"
/usr/bin/rustc --edition 2021 --test --target aarch64-unknown-linux-gnu \
    -C linker=aarch64-linux-gnu-gcc -O core/kernels/src/lib.rs -o target/aarch64-kernel-tests

for cpu in cortex-a72 cortex-a76; do
    echo "== qemu-aarch64 QEMU_CPU=$cpu"
    QEMU_CPU=$cpu qemu-aarch64 -L /usr/aarch64-linux-gnu target/aarch64-kernel-tests --test-threads=1
done
