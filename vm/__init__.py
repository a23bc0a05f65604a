"""The QEMU harness: boot a Linux guest that runs this project, for every kernel-side test.

Modules, one concern each: ``kernel`` (fetch and cache Debian's kernel), ``cpio`` and ``initramfs`` (the
busybox initramfs, cached), ``guest/`` (its /init and stage2, package data), ``qemu`` (the command line),
``console`` (console lines and marker events), ``harness`` (``run_guest``: the API tests use; read its
docstring), ``cli`` (``bootkit vm``) and ``pytest_plugin`` (the ``vm_guest`` fixture).

Debian guests (a real Debian 12 root with its own init and the project installed from its .deb):
``deb`` (the checkout's package), ``image`` (mmdebstrap roots, cached), ``guest_image`` (``make_image``:
one guest's root disk), ``image_boot`` (``run_image``: boot it, same GuestResult) and ``image_cli``
(``bootkit vm image|boot``).
"""
