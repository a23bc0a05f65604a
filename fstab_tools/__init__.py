"""fstab parsing with OpenBSD's `net` option and Linux `_netdev`: -N selection for fsck, mount and umount.

Modules, pure first:
- `fstab`: `Fstab.load(path)` / `Fstab.parse(text)`, `.entries`, `.errors`, `.update()`, `.render()`
  (byte-exact round trip), `Entry` (decoded fields; `has_option`, `bsd_type`, `tag`, `is_duid`).
- `netfs`: `is_network(entry)`, `select(entries, net)`, `NETWORK_FSTYPES`, `mount_options(entry)`.
- `mountinfo`: `load_mountinfo()`, `parse_mountinfo()`, `unmount_order()`.
- `verify`: `verify(fstab) -> [Finding]`.
- `devices`: tag resolution, `wait_for(entries, timeout)`, `whole_disk(device)`.
- `fsck`, `mount`: plans (`plan`, `plan_mount`, `plan_umount`) and runners; `cli.main(argv)`.
"""
