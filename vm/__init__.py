"""The QEMU harness: boot a Linux guest that runs this project, for every kernel-side test.

Modules, one concern each: ``kernel`` (fetch and cache Debian's kernel), ``cpio`` and ``initramfs`` (the
busybox initramfs, cached), ``guest/`` (its /init and stage2, package data), ``qemu`` (the command line),
``console`` (console lines and marker events), ``harness`` (``run_guest``: the API tests use; read its
docstring), ``cli`` (``bootkit vm``) and ``pytest_plugin`` (the ``vm_guest`` fixture).
"""
