"""The proof (issues 8 and 12): reboot cycles and their negative controls, a power cut and a target down at
boot, with the busybox rc or on a Debian image with systemd.

- plan.py: what a proof runs against, as parameters (target, fstab line, init, attach, shim, busy).
- lun.py: the LUN backing file on the host (create, format, seed) and the host-side checks.
- timeline.py: every boot as timeline events (name, guest uptime, host time, detail), one vocabulary.
- inits.py: the init systems (--init); init_systemd.py: the systemd guest (files, shutdown, console).
- busybox: guest.py (the rendered rc, rc.shutdown, fstab and uiscsi.conf; log parsing), facts.py (booting
  a proof guest, reading back what it did), reboot.py and target_down.py (the scenarios).
- image_proof.py: the scenarios on a Debian image, for any init of inits.py.
- cli.py: `bootkit vm reboot-test|power-cut-test|target-down-test`.
The guest-side scripts and units are package data in vm/guest_proof/.
"""
