"""The initiator's architecture, checked: each subpackage is a layer, and every import runs downwards.

`LAYERS` is the order, bottom first, and says what each room holds. A module may import from its own layer
and the layers below it, never from a layer above, and no two modules may import each other in a circle
(type-only imports count too). The sans-IO layers import nothing that does I/O or reads the clock: time,
sockets and event loops are the io layer's. Only uiscsictl (ctl) resolves names. A module over 400 lines
says at its top why it is long on purpose.

tests/initiator mirrors the tree: ``tests/initiator/<layer>/test_<module>.py`` tests ``initiator/<layer>/
<module>.py`` without peers; ``test_<module>_targets.py`` against real iSCSI targets (marked ``target``);
``test_<module>_vm.py`` in a QEMU guest (marked ``vm``). A module tested only through another module's
tests is listed in `TESTED_THROUGH`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "initiator"
TESTS = ROOT / "tests" / "initiator"

LAYERS = [  # bottom first
    ("errors", "the exceptions every layer raises (a module, not a package)"),
    ("scsi", ("SCSI as SAM/SPC/SBC define it: CDBs, the LUN field, sense, VPD, reply parsers, commands run "
              "through any session (no I/O; it knows nothing of iSCSI)")),
    ("protocol", ("RFC 7143 sans-IO: PDUs and the one framer, the connection and session state tables, the "
                  "session core, login, keys, CHAP, text, names and portals, keep-alive and recovery decisions")),
    ("io", ("asyncio: the session parameters, TCP links, the session with its public state, the recovery "
            "driver, the event-loop choice")),
    ("kernel", ("the kernel bridge: NBD wire form, ioctl and netlink attach, block backends, sysfs, stable "
                "device names")),
    ("daemon", ("uiscsid: the wire types both programs share, the control server, per-target runtime, the "
                "service and the program")),
    ("ctl", ("uiscsictl: the program, its config file, URLs, the one-shot tools, the control client; the only "
             "code that reads config files, LIBISCSI_CHAP_* or DNS")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
SANS_IO = {"scsi", "protocol"}
IO_IMPORTS = {"asyncio", "socket", "threading", "fcntl", "subprocess", "selectors", "select", "signal", "ssl",
              "multiprocessing", "concurrent", "mmap", "os", "io", "time", "uvloop", "pathlib", "shutil"}
RESOLVERS = {"getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"}
MAX_LINES = 400
TESTED_THROUGH = {  # module -> the test module that covers it
    "errors": "every layer's tests (each error type is raised and matched there)",
    "protocol/bhs": "protocol/test_pdu.py",
    "protocol/pdu_initiator": "protocol/test_pdu.py",
    "protocol/pdu_target": "protocol/test_pdu.py",
    "protocol/events": "protocol/test_session.py",
    "daemon/runtime": "daemon/test_uiscsid_targets.py",
    "ctl/client": "daemon/test_control.py",
    "ctl/daemon_commands": "daemon/test_uiscsid_targets.py",
    "ctl/output": "ctl/test_uiscsictl.py",
}


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = modules()


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # the package root belongs to no layer


def imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``path``, relative ones resolved, anywhere in the file."""
    is_package = path.name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:  # `from pkg import mod` imports a module when mod is one
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in MODULES else target, node.lineno))
    return found


def internal_graph() -> dict[str, set[str]]:
    return {m: {dep for dep, _ in imports(m, p) if dep in MODULES and dep != m} for m, p in MODULES.items()}


def test_every_room_is_a_declared_layer():
    rooms = {layer_of(m) for m in MODULES} - {None}
    assert rooms == set(RANK), f"declare new layers in LAYERS (or remove stale ones): {rooms ^ set(RANK)}"


def test_imports_run_only_downwards():
    upward = []
    for module, path in MODULES.items():
        mine = layer_of(module)
        for dep, line in imports(module, path):
            if dep.startswith("initiator") and dep in MODULES:
                theirs = layer_of(dep)
                if mine is None or theirs is None or RANK[theirs] > RANK[mine]:
                    upward.append(f"{path.relative_to(ROOT)}:{line}: {mine} imports {dep} ({theirs})")
    assert not upward, "imports that run upwards:\n" + "\n".join(upward)


def test_no_module_imports_in_a_circle():
    graph = internal_graph()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("layer", sorted(SANS_IO))
def test_sans_io_layers_do_no_io(layer):
    bad = [f"{p.relative_to(ROOT)}:{line}: imports {dep}" for m, p in MODULES.items() if layer_of(m) == layer
           for dep, line in imports(m, p) if dep.split(".")[0] in IO_IMPORTS]
    assert not bad, f"the {layer} layer is sans-IO (time comes in as `now`):\n" + "\n".join(bad)


def test_only_uiscsictl_resolves_names():
    bad = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if name in RESOLVERS and layer_of(module) != "ctl":
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not bad, "uiscsid and the layers below it do no DNS:\n" + "\n".join(bad)


def test_long_modules_say_why_at_the_top():
    long = []
    for path in MODULES.values():
        lines = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and "long on purpose" not in doc:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not long, f"over {MAX_LINES} lines without a reason at the top:\n" + "\n".join(long)


def _test_files() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def _subject(test: Path) -> tuple[str, str]:
    """(layer/module, kind) that a test file names: kind is "unit", "targets" or "vm"."""
    stem = test.stem.removeprefix("test_")
    for kind in ("targets", "vm"):
        if stem.endswith(f"_{kind}"):
            return f"{test.parent.name}/{stem.removesuffix('_' + kind)}", kind
    return f"{test.parent.name}/{stem}", "unit"


def test_tests_mirror_the_tree():
    wrong = [f"{t.relative_to(ROOT)} names {s}, which is not a module"
             for t in _test_files() for s in [_subject(t)[0]] if f"initiator.{s.replace('/', '.')}" not in MODULES]
    assert not wrong, "\n".join(wrong)


def test_every_module_has_its_test_module():
    tested = {_subject(t)[0] for t in _test_files()}
    sources = [m.removeprefix("initiator.").replace(".", "/") for m, p in MODULES.items()
               if p.name not in ("__init__.py", "__main__.py")]
    untested = [m for m in sources if m not in tested and m not in TESTED_THROUGH]
    assert not untested, f"modules without a test module (add one, or list them in TESTED_THROUGH): {untested}"
    stale = [m for m in TESTED_THROUGH if m not in sources or m in tested]
    assert not stale, f"TESTED_THROUGH entries to remove: {stale}"


def _marks(tree: ast.Module) -> set[str]:
    """The pytest marks a test module applies: its pytestmark and its decorators."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "mark":
            found.add(node.attr)
    return found


@pytest.mark.parametrize("test", _test_files(), ids=lambda p: str(p.relative_to(TESTS)))
def test_peer_tests_are_named_and_marked_as_such(test):
    tree = ast.parse(test.read_text())
    kind, marks = _subject(test)[1], _marks(tree)
    peers = {a.arg for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
             for a in node.args.args} & {"tgtd", "istgt", "vm_guest", "vm_boot_files"}
    if kind == "unit":
        assert not peers and not marks & {"target", "vm"}, f"uses {peers or marks}: name it *_targets.py or *_vm.py"
    else:
        mark = {"targets": "target", "vm": "vm"}[kind]
        assert mark in marks, f"a *_{kind}.py module must be marked {mark}"
