"""The HTML report in a real browser: headless Chromium lays it out and draws it.

What this proves, and what not: (1) Chromium renders the page with its network cut and no script of
the page's own; (2) in Chromium's own layout (read back by a probe script the test adds to a copy of
the page, after the page's layout is done; the report itself has none), every event mark sits at the x
the report meant for its guest time, so the marks of each boot are in time order left to right, and
every boot's timeline starts at the same x with the same width: one axis; (3) the screenshot of the
unmodified page shows those marks and the phase bars in their colours at those places. It does not
prove that a person reads the page well: the README's screenshot is for that.
"""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from tests import chromium
from tests.report_fixtures import reboot_report
from vm.report import html

# Reads what Chromium laid out: each mark's and phase bar's box, relative to its timeline, and the page size.
PROBE = """
<script>
const out = {marks: [], phases: [], svgs: [], page: [document.documentElement.scrollWidth,
                                                      document.documentElement.scrollHeight]};
for (const s of document.querySelectorAll('svg.timeline')) {
  const b = s.getBoundingClientRect();
  const boot = s.closest('section').dataset.boot;
  out.svgs.push({boot, left: b.left + scrollX, top: b.top + scrollY, width: b.width});
  for (const m of s.querySelectorAll('rect[data-event]')) {
    const r = m.getBoundingClientRect();
    out.marks.push({boot, event: m.dataset.event, t: +m.dataset.guestT, x: +m.dataset.x,
                    cx: r.left + r.width / 2 - b.left, px: r.left + r.width / 2 + scrollX,
                    py: r.top + r.height / 2 + scrollY, w: r.width, h: r.height,
                    fill: getComputedStyle(m).fill});
  }
  for (const p of s.querySelectorAll('rect[data-phase]')) {
    const r = p.getBoundingClientRect();
    out.phases.push({boot, phase: p.dataset.phase, left: r.left + scrollX, right: r.right + scrollX,
                     py: r.top + r.height * 0.75 + scrollY, w: r.width, fill: getComputedStyle(p).fill});
  }
}
const pre = document.createElement('pre');
pre.id = 'layout'; pre.style.display = 'none'; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>
"""


def rgb(css: str) -> tuple[int, int, int]:
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])  # type: ignore[return-value]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The report of a three-cycle run whose second cycle is twice as slow, its layout and its screenshot."""
    d = tmp_path_factory.mktemp("chromium")
    page = html.write(d / "report.html", reboot_report(3, slow=2))
    probe = d / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium.dump_dom(probe, width=1400)
    m = re.search(r'<pre id="layout"[^>]*>(.*?)</pre>', dom, re.DOTALL)
    assert m, dom[-2000:]
    layout = json.loads(m[1].replace("&quot;", '"').replace("&amp;", "&"))
    _width, height = layout["page"]
    shot = chromium.screenshot(page, d / "report.png", 1400, height)
    return layout, Image.open(shot).convert("RGB")


def test_every_event_is_laid_out_where_its_time_puts_it(rendered):
    layout, _ = rendered
    marks = layout["marks"]
    assert len(marks) == 3 * 23 and all(m["w"] > 0 and m["h"] > 0 for m in marks)
    for m in marks:
        assert m["cx"] == pytest.approx(m["x"], abs=0.5), m


def test_the_events_of_each_boot_are_in_time_order_left_to_right(rendered):
    layout, _ = rendered
    for boot in ("cycle 1", "cycle 2", "cycle 3"):
        xs = [m["cx"] for m in sorted((m for m in layout["marks"] if m["boot"] == boot), key=lambda m: m["t"])]
        assert xs == sorted(xs) and xs[-1] - xs[0] > 300, boot


def test_every_boot_is_drawn_on_the_same_axis_so_the_slow_one_stands_out(rendered):
    layout, _ = rendered
    svgs = layout["svgs"]
    assert len({(s["left"], s["width"]) for s in svgs}) == 1 and [s["top"] for s in svgs] == sorted(
        s["top"] for s in svgs)
    off = {m["boot"]: m["cx"] for m in layout["marks"] if m["event"] == "power-off"}
    assert off["cycle 1"] == pytest.approx(off["cycle 3"], abs=0.5) and off["cycle 2"] > 1.8 * off["cycle 1"]


def test_the_screenshot_shows_the_marks_and_the_phases(rendered):
    layout, picture = rendered
    seen = 0
    for m in layout["marks"]:
        x, y = round(m["px"] - 0.5), round(m["py"])
        if m["w"] >= 1.5 and y < picture.height:
            got = picture.getpixel((x, y))
            assert max(abs(a - b) for a, b in zip(got, rgb(m["fill"]), strict=True)) <= 40, (m, got)
            seen += 1
    assert seen == len(layout["marks"])
    # each phase bar where nothing drawn after it (a later bar, a mark) covers it
    phases = layout["phases"]
    checked = set()
    for i, p in enumerate(phases):
        later = [(q["left"], q["right"]) for q in phases[i + 1:] if q["boot"] == p["boot"]]
        later += [(m["px"] - 3, m["px"] + 3) for m in layout["marks"] if m["boot"] == p["boot"]]
        free = [x for x in range(int(p["left"]) + 2, int(p["right"]) - 1)
                if not any(a <= x <= b for a, b in later)]
        if not free:
            continue
        x = free[len(free) // 2]
        got = picture.getpixel((x, round(p["py"])))
        assert max(abs(a - b) for a, b in zip(got, rgb(p["fill"]), strict=True)) <= 40, (p, x, got)
        checked.add(p["phase"])
    assert checked >= {"kernel + init", "storage up", "fsck", "services", "shutdown", "unmount"}
