"""Shared pytest setup: load the plugins that exist (real targets, the QEMU guest harness), and a
hypothesis profile with no per-example deadline: the suite shares 2 cores with QEMU guests and targets,
so an example's wall time says nothing about the code (performance is the benchmarks' business)."""

import importlib.util

from hypothesis import settings

pytest_plugins = [m for m in ("tests.targets", "vm.pytest_plugin", "tests.lio_fixture")
                  if importlib.util.find_spec(m)]

settings.register_profile("bootkit", deadline=None)
settings.load_profile("bootkit")


def pytest_collection_modifyitems(config, items):
    """`make test` runs two pytest-xdist workers (`--dist loadgroup`), one per core, so two TCG guests boot
    side by side. A file's tests stay on one worker (module fixtures boot one guest or start one target for
    the file), the LIO files share one worker (one LIO guest for all of them), and the files that boot guests
    go first, so the long work does not end up alone at the end. Order within a file is kept."""
    import pytest

    guest_files = {item.path for item in items if item.get_closest_marker("vm")}
    for item in items:
        group = "lio" if item.path.name.startswith("test_lio_") else str(item.path)
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: item.path not in guest_files)
