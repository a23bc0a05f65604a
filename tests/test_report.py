"""vm/report: a proof report's cases, its JUnit XML (checked by a schema and by junitparser, an independent
reader CI tools use), and its HTML page (self-contained, every boot on one axis). The rendering in a real
browser is tests/test_report_chromium.py."""

from __future__ import annotations

import copy
import itertools
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import junitparser
import pytest
import xmlschema

from tests.report_fixtures import power_cut_report, reboot_report, timeline
from vm.report import html, junit, svg
from vm.report.cases import suite_of
from vm.report.properties import PROPERTIES, ordering, shutdown_bound

SCHEMA = xmlschema.XMLSchema(Path(__file__).parent / "data" / "junit-bootkit.xsd")


def failed(report: dict) -> list[str]:
    return [f"{c.group}: {c.name}" for c in suite_of(report).cases if c.failed]


# ----------------------------------------------------------------------------------------- properties
def test_a_real_order_holds():
    v = ordering(timeline())
    assert v.ok, v.summary
    assert "fsck-end at 35.0 s" in v.evidence[0] and "logout-end at 53.0 s" in v.evidence[1]


@pytest.mark.parametrize("swap, words", [
    (("fsck-end", "mounted"), "fsck-end at 35.6 s came after mount-begin at 35.2 s"),
    (("mounted", "writer-start"), "mounted at 36.1 s came after writer-start"),
    (("unmounted", "logout-end"), "unmounted at 53.0 s came after logout-end at 51.9 s"),
])
def test_events_out_of_order_fail_the_ordering(swap, words):
    v = ordering(timeline(swap=swap))
    assert v.ok is False and words in v.summary


def test_a_boot_that_never_mounted_leaves_the_ordering_unjudged():
    v = ordering(timeline(drop=("mounted", "writer-start")))
    assert v.ok is None and "no mounted, writer-start" in v.summary


def test_the_busybox_shutdown_is_bounded_and_spares_the_daemon():
    c = {"timeline": timeline(), "daemon_signalled": [], "umount_exit": 0, "umount_io_errors": 0,
         "daemon_stop_exit": 0}
    assert shutdown_bound(c).ok
    assert not shutdown_bound({**c, "daemon_signalled": ["SIGTERM", "SIGKILL"]}).ok
    slow = {**c, "timeline": [e if e["name"] != "power-off" else {**e, "guest_t": 200.0} for e in c["timeline"]]}
    v = shutdown_bound(slow)
    assert not v.ok and "took 150.5 s (bound 90 s)" in v.summary


# ---------------------------------------------------------------------------------------------- cases
def test_a_clean_run_is_one_passing_case_per_cycle_and_property():
    suite = suite_of(reboot_report(3))
    assert [(c.group, c.name) for c in suite.cases] == [(f"cycle {n}", p) for n in (1, 2, 3) for p in PROPERTIES]
    assert suite.ok and not any(c.failed for c in suite.cases)


def test_the_scenarios_failure_lines_fail_the_property_they_concern():
    rep = reboot_report(3, ok=False, failures=[
        "cycle 2: the previous payload was bad",
        "cycle 3: uiscsi-logout.service stop took 95.0 s (bound 90 s)",
        "cycle 3: something no property claims",
        "final: LUN needs_recovery=True, e2fsck -fn exit 4, payload_ok=False"])
    assert failed(rep) == ["cycle 2: payload", "cycle 3: shutdown bound", "cycle 3: other", "run: final check"]
    case = next(c for c in suite_of(rep).cases if c.name == "payload" and c.group == "cycle 2")
    assert case.summary == "the previous payload was bad" and case.evidence[0] == case.summary


def test_a_cycle_whose_evidence_fails_fails_even_without_a_failure_line():
    rep = reboot_report(2)
    rep["cycles"][1]["host_after"].update(needs_recovery=True, clean=False, e2fsck_exit=0)
    assert failed(rep) == ["cycle 2: clean"]


def test_a_failed_boot_fails_clean_and_leaves_the_rest_unjudged():
    rep = reboot_report(1, ok=False, failures=["cycle 1: the boot failed: timed out"])
    rep["cycles"][0]["error"] = "timed out"
    cases = {c.name: c for c in suite_of(rep).cases}
    assert cases["clean"].ok is False and "timed out" in cases["clean"].summary
    assert [cases[p].ok for p in ("payload", "ordering", "shutdown bound")] == [None, None, None]


def test_a_negative_control_is_judged_by_whether_it_showed_the_damage():
    lines = ["cycle 1: after shutdown the LUN still needs journal recovery (not cleanly unmounted)"]
    shown = reboot_report(1, expected="damage", ok=True, failures=lines)
    shown["cycles"][0]["host_after"].update(needs_recovery=True, clean=False)
    assert failed(shown) == [] and suite_of(shown).cases[-1].name == "negative control shows the damage"
    assert all(c.informational for c in suite_of(shown).cases[:-1])
    assert failed({**shown, "ok": False}) == ["run: negative control shows the damage"]


def test_a_checks_report_is_one_case_per_check():
    suite = suite_of(power_cut_report())
    assert [(c.name, c.ok) for c in suite.cases] == [("power cut fired", True), ("dirty after cut", True),
                                                     ("fsck replayed before mount", False)]
    assert any("recovering journal" in line for line in suite.cases[0].evidence)


# ---------------------------------------------------------------------------------------------- JUnit
def test_junit_is_valid_and_junitparser_reads_the_same_verdicts(tmp_path):
    rep = reboot_report(3, ok=False, failures=["cycle 2: the previous payload was bad"])
    rep["cycles"][0]["error"] = "guest timed out"
    path = junit.write(tmp_path / "r.xml", rep)
    SCHEMA.validate(str(path))
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("12", "2", "3")
    xml = junitparser.JUnitXml.fromfile(str(path))
    cases = [c for s in xml for c in s]
    assert len(cases) == 12
    outcome = {c.name: type(c.result[0]).__name__ if c.result else "passed" for c in cases}
    assert outcome["cycle 1: clean"] == "Failure" and outcome["cycle 2: payload"] == "Failure"
    assert outcome["cycle 1: payload"] == "Skipped" and outcome["cycle 3: ordering"] == "passed"
    fail = next(c for c in cases if c.name == "cycle 2: payload").result[0]
    assert fail.message == "the previous payload was bad" and "payload.sha256" in fail.text
    assert next(c for c in cases if c.name == "cycle 3: clean").classname == "bootkit.vm.reboot.cycle3"


def test_junit_of_every_report_kind_validates(tmp_path):
    control = reboot_report(1, expected="damage", ok=True, failures=["cycle 1: after shutdown e2fsck -fn exit 4"])
    for i, rep in enumerate((reboot_report(1), power_cut_report(), control)):
        SCHEMA.validate(str(junit.write(tmp_path / f"{i}.xml", rep)))
    xml = junitparser.JUnitXml.fromfile(str(tmp_path / "2.xml"))
    assert [c.name for s in xml for c in s if c.result] == []  # the control held: nothing fails


def test_console_text_with_markup_is_escaped_in_junit_and_html(tmp_path):
    rep = reboot_report(1, ok=False, failures=["cycle 1: the previous payload was <b>bad</b> & \"odd\""])
    SCHEMA.validate(str(junit.write(tmp_path / "r.xml", rep)))
    page = html.render(rep)
    assert "<b>bad</b>" not in page and "&lt;b&gt;bad&lt;/b&gt; &amp;" in page
    assert "systemd[1]: boot &lt;&amp;&gt;" in page


# ---------------------------------------------------------------------------------------------- HTML
class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parsed(page: str) -> list[tuple[str, dict]]:
    p = Collect()
    p.feed(page)
    return p.tags


def test_the_page_is_self_contained():
    page = html.render(reboot_report(3, slow=2))
    tags = parsed(page)
    assert not [t for t, _ in tags if t in ("script", "link", "img", "iframe", "object", "embed")]
    # nothing to fetch (the SVG namespace name is an identifier, never fetched), no event handler
    assert not [(k, v) for _, a in tags for k, v in a.items()
                if k in ("src", "href", "xlink:href") or (k != "xmlns" and "http" in (v or ""))]
    assert not [k for _, a in tags for k in a if k.startswith("on")]
    assert "url(" not in page and "@import" not in page


def test_every_boot_is_drawn_on_one_axis_with_its_events_where_they_happened():
    rep = reboot_report(3, slow=2)
    tags = parsed(html.render(rep))
    svgs = [a for t, a in tags if t == "svg" and a.get("class") == "timeline"]
    assert len(svgs) == 3 and len({a["width"] for a in svgs}) == 1
    axis = svg.Axis.over([c["timeline"] for c in rep["cycles"]])
    assert axis.end == 120.0  # the slow cycle's 111.6 s decides it, for every row
    marks = [a for t, a in tags if t == "rect" and "data-event" in a]
    assert len(marks) == sum(len(c["timeline"]) for c in rep["cycles"])
    for a in marks:
        assert float(a["data-x"]) == axis.x(float(a["data-guest-t"]))
        assert float(a["x"]) == pytest.approx(float(a["data-x"]) - 1)
    power_off = [float(a["data-x"]) for a in marks if a["data-event"] == "power-off"]
    assert power_off[1] > power_off[0] * 1.8 and power_off[0] == power_off[2]


def test_labels_never_overlap_and_stay_inside_the_picture():
    el = svg.timeline_svg(timeline(), svg.Axis(60.0), "t")
    group = next(g for g in el.iter("g") if g.get("class") == "labels")
    rows: dict[str, list[tuple[float, float]]] = {}
    for t in group.iter("text"):
        x = float(t.get("x"))
        rows.setdefault(t.get("y"), []).append((x, x + len(t.text) * svg.CHAR_W))
    assert sum(map(len, rows.values())) == len([e for e in timeline() if e["name"] in svg.LABELLED]) > 10
    assert len(rows) > 1
    for row in rows.values():
        row.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(row)), row
        assert all(0 <= a and b <= svg.WIDTH for a, b in row)


def test_the_page_names_the_check_and_shows_the_hashes():
    page = html.render(reboot_report(1))
    assert "host: e2fsck -fn" in page and "aaaaaaaaaaaa…" in page and "exit 0, nothing to replay" in page


def test_a_saved_json_report_renders_the_same(tmp_path):
    rep = reboot_report(2)
    again = json.loads(json.dumps(rep))
    assert html.render(rep, generated=0) == html.render(copy.deepcopy(again), generated=0)


def test_a_line_with_passno_0_needs_no_fsck_in_the_order():
    """An admin's xfs or btrfs line often has passno 0: no fsck at boot, and none is required; an fsck
    that is due (passno 2) and missing still leaves the order unjudged."""
    events = timeline(drop=("fsck-begin", "fsck-end"))
    assert ordering(events, fsck=False).ok is True
    assert ordering(events).ok is None
