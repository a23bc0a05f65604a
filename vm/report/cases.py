"""Any proof report as test cases: the form JUnit XML and the HTML page share.

A reboot report gives one case per cycle and property (`properties.PROPERTIES`); a report with ``checks``
(power-cut, target-down) one case per check. The scenario's own verdict stays the authority: each line of
its ``failures`` is filed under the property it concerns (`FILED_UNDER`), which then fails even if its own
evidence looked fine, and a line no property claims becomes a case of its own. So a report whose ``ok``
is false never turns into an all-green set of cases, and the other way round.

A negative control (``expected`` "damage" or "failure") is judged as a whole: its cases record what
happened without failing, and one more case says whether the damage the control exists to show was shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vm.report.properties import Verdict, cycle_verdicts, host_check_lines

# A scenario's failure line -> the property it belongs to (first match wins; see the module docstring).
FILED_UNDER = (
    (re.compile(r"payload"), "payload"),
    (re.compile(r"order"), "ordering"),
    (re.compile(r"shutdown-kill|umount -a|stopping uiscsid|took .* s \(bound|read-only|hold the filesystem"),
     "shutdown bound"),
    (re.compile(r"boot failed|not clean|not mounted|mounted from|never saw the device|needs (journal )?recovery|"
                r"after shutdown .* exit"), "clean"),
)
_CYCLE = re.compile(r"^cycle (\d+): (.*)$")


@dataclass(frozen=True)
class Case:
    """One test case. ``ok`` None: not judged (JUnit "skipped"); ``informational``: recorded, not judged
    (a negative control's per-cycle facts)."""

    group: str
    name: str
    ok: bool | None
    summary: str
    evidence: list[str] = field(default_factory=list)
    seconds: float | None = None
    informational: bool = False

    @property
    def failed(self) -> bool:
        return self.ok is False and not self.informational


@dataclass(frozen=True)
class Suite:
    """A report's cases with its name, setup (``properties``) and overall verdict."""

    name: str
    ok: bool
    cases: list[Case]
    properties: dict[str, str]
    seconds: float
    control: bool


def is_control(report: dict) -> bool:
    return report.get("expected") in ("damage", "failure")


def filed(failures: list[str], prop: str) -> list[str]:
    """The failure lines whose first matching rule names PROP."""
    out = []
    for text in failures:
        owner = next((p for pat, p in FILED_UNDER if pat.search(text)), None)
        if owner == prop:
            out.append(text)
    return out


def _merge(v: Verdict, lines: list[str]) -> Verdict:
    """The verdict with the scenario's failure lines for it: they fail it, and say why first."""
    if not lines:
        return v
    return Verdict(v.name, False, "; ".join(lines), [*lines, *v.evidence])


def reboot_cases(report: dict) -> list[Case]:
    control = is_control(report)
    per_cycle: dict[int, list[str]] = {}
    other: list[str] = []
    for text in report.get("failures", []):
        m = _CYCLE.match(text)
        if m:
            per_cycle.setdefault(int(m[1]), []).append(m[2])
        else:
            other.append(text)
    cases = []
    before = report.get("initial")
    for c in report.get("cycles", []):
        mine = per_cycle.get(c["cycle"], [])
        claimed: set[str] = set()
        for v in cycle_verdicts(c, before):
            lines = filed(mine, v.name)
            claimed.update(lines)
            v = _merge(v, lines)
            cases.append(Case(f"cycle {c['cycle']}", v.name, v.ok, v.summary, v.evidence, c.get("seconds"),
                              informational=control))
        if rest := [t for t in mine if t not in claimed]:
            cases.append(Case(f"cycle {c['cycle']}", "other", False, "; ".join(rest), rest,
                              informational=control))
        before = c.get("host_after")
    if other:
        cases.append(Case("run", "final check", False, "; ".join(other), other, informational=control))
    if control:
        cases.append(control_case(report))
    return cases


def control_case(report: dict) -> Case:
    shown = bool(report.get("ok"))
    summary = ("the damage was shown: " + "; ".join(report.get("failures", [])[:3]) if shown
               else "the control did not show the damage it exists to show (or did not run): it proves nothing")
    return Case("run", "negative control shows the damage", shown, summary, list(report.get("failures", [])))


def check_cases(report: dict) -> list[Case]:
    """One case per entry of ``checks`` (power-cut, target-down), with the report's key facts as evidence."""
    facts = evidence_of(report)
    return [Case(report["test"], name.replace("_", " "), bool(ok),
                 "holds" if ok else "does NOT hold", facts) for name, ok in report["checks"].items()]


def evidence_of(report: dict) -> list[str]:
    """The facts of a checks-style report a reader needs beside its verdicts."""
    out = []
    cut = report.get("cut")
    if cut:
        out.append(f"power cut fired: {cut.get('fired')}")
        out += _host(cut.get("host"), "host, after the cut")
    rec = report.get("recovery")
    if rec:
        order = rec.get("order") or {}
        out.append("recovery boot: " + ", ".join(f"{k} {v}" for k, v in order.items() if v is not None))
        out += [f"fsck: {ln}" for ln in (rec.get("fsck_output") or [])[:6]]
        out.append(f"synced payload: {rec.get('previous_payload')}")
    boot = report.get("boot")
    if boot:
        out.append("boot with the target down: " + ", ".join(f"{k} {v}" for k, v in boot.items()
                                                             if not isinstance(v, list)))
        out += [f"message: {m}" for m in boot.get("message", [])[-2:]]
    late = report.get("after_target_returns")
    if late:
        out.append("once the target was back: " + ", ".join(f"{k} {v}" for k, v in late.items()))
    out += _host(report.get("host_after"), "after the last shutdown")
    return out


def _host(h: dict | None, when: str) -> list[str]:
    return host_check_lines(h, when) if h else []


def suite_of(report: dict) -> Suite:
    """The report as a `Suite` (see the module docstring)."""
    test = report.get("test", "proof")
    cases = reboot_cases(report) if "cycles" in report else check_cases(report) if "checks" in report else []
    control = is_control(report)
    name = f"{test}-test --init {report.get('init', 'busybox')}" + (" (negative control)" if control else "")
    props = {k: str(report[k]) for k in ("init", "fstab_line", "target", "attach", "shim", "busy", "shutdown",
                                         "lun_file", "check", "workdir") if k in report}
    return Suite(name, bool(report.get("ok")), cases, props, float(report.get("seconds", 0.0)), control)
