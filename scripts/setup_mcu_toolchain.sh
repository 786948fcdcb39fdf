#!/usr/bin/env bash
# Microcontroller toolchain for the 'mcu' runtime (cortex-m* targets): arm-none-eabi-gcc + newlib (build the
# firmware) and qemu-system-arm (run it on an emulated Cortex-M). Called by 'make setup' on every run:
# a no-op when both tools are on PATH; as root it installs Debian's packages; otherwise one line names the command.
set -euo pipefail
PKGS="gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
have() { command -v arm-none-eabi-gcc >/dev/null 2>&1 && command -v qemu-system-arm >/dev/null 2>&1 \
  && [ -n "$(arm-none-eabi-gcc -print-file-name=rdimon.specs 2>/dev/null | grep /)" ]; }
if have; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "edgesp: installing the microcontroller toolchain ($PKGS)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq $PKGS >/dev/null
  have || { echo "error: $PKGS installed but arm-none-eabi-gcc/qemu-system-arm still missing" >&2; exit 1; }
  echo "edgesp: microcontroller toolchain ready ($(arm-none-eabi-gcc -dumpversion), $(qemu-system-arm --version | head -1))"
else
  echo "note: the microcontroller toolchain is missing (only the cortex-m* targets need it): run 'sudo apt-get install -y $PKGS'" >&2
fi
