"""The QEMU harness: boot a Linux guest that runs this project, for every kernel-side test."""
