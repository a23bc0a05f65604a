"""A proof report as one self-contained HTML page: ``--report PATH.html``.

The page needs nothing but itself: inline CSS, inline SVG (vm/report/svg.py), no script, no font or image
from anywhere. It shows the setup (init, fstab line, target, which check judged the LUN), then one
section per boot: its timeline on the axis every boot shares, its verdicts (the cases of
vm/report/cases.py) with their evidence in ``<details>`` (which open without JavaScript), and all its
events with the guest's and the host's times. The template is templates/report.html.j2 (jinja2, with
autoescape: every string from a guest's console is escaped).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from markupsafe import Markup

from vm.report import svg
from vm.report.cases import Case, suite_of


@dataclass(frozen=True)
class Boot:
    """One boot of a report: its label, its events (dicts), its length, its cases and the key facts shown
    beside its timeline ((name, value, ok) with ok None for plain facts)."""

    label: str
    events: list[dict]
    seconds: float | None
    cases: list[Case] = field(default_factory=list)
    facts: list[tuple[str, str, bool | None]] = field(default_factory=list)

    @property
    def ok(self) -> bool | None:
        judged = [c for c in self.cases if not c.informational and c.ok is not None]
        return None if not judged else all(c.ok for c in judged)


def _short(digest: str | None) -> str:
    return f"{digest[:12]}…" if digest else "none"


def _host(h: dict | None) -> tuple[str, str]:
    """(which check, what it said) of a host or guest check dict."""
    if not h:
        return "not checked", ""
    code = h.get("exit", h.get("e2fsck_exit"))
    return (h.get("check") or "host: e2fsck -fn",
            f"exit {code}, {'needs recovery' if h.get('needs_recovery') else 'nothing to replay'}")


def cycle_facts(c: dict, before: dict | None) -> list[tuple[str, str, bool | None]]:
    """The evidence a reader wants next to a cycle's picture: the checks, recovery state, the hashes."""
    h = c.get("host_after") or {}
    check, said = _host(h)
    _, said_before = _host(before)
    fsck = ("replayed the journal" if c.get("journal_replayed") else
            "ran, nothing replayed" if c.get("fsck_ran", c.get("fsck_exit") == 0) else
            "none due (passno 0), nothing replayed" if c.get("fsck_expected") is False else
            f"exit {c.get('fsck_exit')}")
    bounds = c.get("stop_bounds") or []
    longest = max(bounds, key=lambda b: b["seconds"] / b["bound"], default=None)
    out: list[tuple[str, str, bool | None]] = [
        ("LUN check", check, None),
        ("before the boot", said_before or "not checked", (before or {}).get("clean")),
        ("fsck at boot", fsck, not c.get("journal_replayed") or bool(c.get("inherited"))),
        ("previous payload", c.get("previous_payload", "unknown"), c.get("payload_ok")),
        ("after the shutdown", said, h.get("clean")),
        ("payload written", _short(c.get("wrote_sha256")), None),
        ("payload on the LUN", _short(h.get("payload_sha256")), h.get("payload_ok")),
    ]
    if longest:
        out.append(("slowest stop step", f"{longest['step']} {longest['seconds']} s of {longest['bound']:g} s",
                    longest["ok"]))
    return out


def boots_of(report: dict, cases: list[Case]) -> list[Boot]:
    """The boots a report holds, each with the cases about it (reboot: its cycle's)."""
    if "cycles" in report:
        out, before = [], report.get("initial")
        for c in report["cycles"]:
            out.append(Boot(f"cycle {c['cycle']}", c.get("timeline") or [], c.get("seconds"),
                            [k for k in cases if k.group == f"cycle {c['cycle']}"], cycle_facts(c, before)))
            before = c.get("host_after")
        return out
    out = []
    if report.get("cut", {}).get("timeline") is not None:
        out.append(Boot("boot 1: the power cut", report["cut"]["timeline"], report["cut"].get("seconds")))
    if report.get("recovery", {}).get("timeline") is not None:
        out.append(Boot("boot 2: the recovery", report["recovery"]["timeline"], report["recovery"].get("seconds")))
    if report.get("timeline") is not None:
        out.append(Boot("the boot with the target down", report["timeline"], report.get("seconds_boot")))
    return out


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("vm.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["secs"] = lambda v: "-" if v is None else f"{v:.2f}"
    return env


def render(report: dict, generated: float | None = None) -> str:
    suite = suite_of(report)
    boots = boots_of(report, suite.cases)
    axis = svg.Axis.over([b.events for b in boots] or [[]])
    pictures = [Markup(svg.to_string(svg.timeline_svg(b.events, axis, f"{b.label}: timeline")))
                for b in boots]
    in_boots = {id(k) for b in boots for k in b.cases}
    return _env().get_template("report.html.j2").render(
        report=report, suite=suite, boots=list(zip(boots, pictures, strict=True)), axis=axis,
        run_cases=[c for c in suite.cases if id(c) not in in_boots], phases=svg.PHASES,
        generated=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(generated)))


def write(path: str | Path, report: dict) -> Path:
    """Write the page to PATH (write then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(report), encoding="utf-8")
    tmp.replace(path)
    return path
