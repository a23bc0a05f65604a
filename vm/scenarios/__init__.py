"""The proof (issue 8): reboot cycles, the no-shim negative control, a power cut and a target down at boot.

- lun.py: the LUN backing file on the host (create, format, seed) and the host-side checks.
- guest.py: the guest's rc, rc.shutdown, fstab and uiscsi.conf rendered into one rc dir; log parsing.
- facts.py: booting a proof guest and reading back what it did.
- reboot.py, target_down.py: the scenarios; cli.py: `bootkit vm reboot-test|power-cut-test|target-down-test`.
The guest-side scripts are package data in vm/guest_proof/.
"""
