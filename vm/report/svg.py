"""A boot's timeline as an SVG: phases as bars, events as marks, every boot of a report on one time axis.

`Axis` maps guest seconds to x; one Axis serves every boot of a report (its end is the latest event of
any of them), so a slow boot or shutdown shows as a longer row. Each boot is one ``<svg>``: a time scale,
the phase bars of `PHASES` (from the first event that starts one to the first that ends it), a mark per
event with a ``<title>`` (name, guest and host time, detail) that any browser shows on hover, and labels
for the events of `LABELLED`, stacked in lanes so none overlaps another. Every mark carries
``data-event`` and ``data-guest-t``, and its x is exactly ``Axis.x(guest_t)``, so a test can compare what
a browser laid out with what was meant. No script, no external resource.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

LEFT, RIGHT = 16.0, 24.0  # margins inside each svg
WIDTH = 860.0
TRACK_Y, TRACK_H = 30.0, 22.0
LANE_H = 15.0
CHAR_W = 6.2  # label width per character at the label font size (11 px sans), with some slack

# (label, start events, end events, css class): a bar from the first start to the first end after it
PHASES = (
    ("kernel + init", ("boot",), ("daemon-start", "daemon-ready"), "ph-boot"),
    ("storage up", ("daemon-start", "daemon-ready"), ("reload-done", "reload-failed"), "ph-storage"),
    ("fsck", ("fsck-begin",), ("fsck-end",), "ph-fsck"),
    ("mount", ("mount-begin",), ("mounted", "mount-failed"), "ph-mount"),
    ("services", ("writer-start", "services"), ("shutdown-begin",), "ph-services"),
    ("shutdown", ("shutdown-begin",), ("power-off", "cut"), "ph-shutdown"),
    ("unmount", ("unmount-begin",), ("unmounted", "unmount-failed"), "ph-unmount"),
    ("logout", ("logout-begin",), ("logout-end",), "ph-logout"),
    ("final kill + unmount", ("final-term",), ("final-done", "power-off"), "ph-final"),
)
# The events named under the track (all others are marks with a tooltip only).
LABELLED = ("boot", "daemon-ready", "reload-done", "reload-failed", "device-found", "fsck-end", "fsck-replay",
            "mounted", "mount-failed", "writer-start", "shutdown-begin", "unmounted", "unmount-failed",
            "logout-end", "final-done", "power-off", "cut", "io-error", "fs-error", "nbd-dropped")
BAD = ("reload-failed", "device-timeout", "mount-failed", "unmount-failed", "io-error", "fs-error",
       "nbd-dropped", "fsck-replay", "cut")


def _nice(seconds: float) -> float:
    """A tick step for an axis SECONDS long: about 10 ticks of 1, 2 or 5 times a power of ten."""
    raw = max(seconds, 1.0) / 10
    p = 10 ** math.floor(math.log10(raw))
    return next(m * p for m in (1, 2, 5, 10) if m * p >= raw)


@dataclass(frozen=True)
class Axis:
    """Guest seconds 0..end onto x LEFT..WIDTH-RIGHT."""

    end: float

    @classmethod
    def over(cls, timelines: Sequence[Sequence[dict]]) -> Axis:
        last = max((e["guest_t"] for tl in timelines for e in tl if e.get("guest_t") is not None), default=1.0)
        step = _nice(last)
        return cls(math.ceil(last / step) * step or step)

    @property
    def step(self) -> float:
        return _nice(self.end)

    def x(self, t: float) -> float:
        return round(LEFT + (WIDTH - LEFT - RIGHT) * max(0.0, min(t, self.end)) / self.end, 2)


def _first(events: Sequence[dict], names: Sequence[str], after: float = -1.0) -> dict | None:
    return next((e for e in events if e["name"] in names and e.get("guest_t") is not None
                 and e["guest_t"] >= after), None)


def phases(events: Sequence[dict]) -> list[tuple[str, float, float, str]]:
    """(label, start, end, class) for each phase the timeline has."""
    out = []
    for label, starts, ends, cls in PHASES:
        a = _first(events, starts)
        if a is None:
            continue
        b = _first(events, ends, a["guest_t"])
        if b is not None:
            out.append((label, a["guest_t"], b["guest_t"], cls))
    return out


def _place(x: float, text: str) -> tuple[float, float]:
    """The span a label at mark X takes: to its right, or to its left where it would leave the picture."""
    width = len(text) * CHAR_W
    return (x - 2 - width, x - 2) if x + 2 + width > WIDTH else (x + 2, x + 2 + width)


def _lanes(items: list[tuple[float, str]]) -> list[int]:
    """Greedy lanes for labels in time order: the first lane whose last label ends before this one starts."""
    ends: list[float] = []
    out = []
    for x, text in items:
        start, end = _place(x, text)
        lane = next((i for i, e in enumerate(ends) if e + 4 <= start), len(ends))
        if lane == len(ends):
            ends.append(end)
        else:
            ends[lane] = end
        out.append(lane)
    return out


def _fmt(t: float | None) -> str:
    return "-" if t is None else f"{t:.2f} s"


def timeline_svg(events: Sequence[dict], axis: Axis, title: str) -> ET.Element:
    """One boot's timeline (see the module docstring); EVENTS are the report's event dicts."""
    timed = sorted((e for e in events if e.get("guest_t") is not None), key=lambda e: e["guest_t"])
    labels = [(axis.x(e["guest_t"]), f"{e['name']} {e['guest_t']:.1f}") for e in timed if e["name"] in LABELLED]
    lanes = _lanes(labels)
    height = TRACK_Y + TRACK_H + 14 + LANE_H * (max(lanes, default=0) + 1) + 6
    svg = ET.Element("svg", xmlns="http://www.w3.org/2000/svg", width=f"{WIDTH:g}", height=f"{height:g}",
                     viewBox=f"0 0 {WIDTH:g} {height:g}", role="img", **{"class": "timeline",
                                                                         "aria-label": title})
    ET.SubElement(svg, "title").text = title
    scale = ET.SubElement(svg, "g", {"class": "scale"})
    t = 0.0
    while t <= axis.end + 1e-9:
        x = axis.x(t)
        ET.SubElement(scale, "line", x1=f"{x}", x2=f"{x}", y1="16", y2=f"{TRACK_Y + TRACK_H}")
        ET.SubElement(scale, "text", x=f"{x}", y="12", **{"text-anchor": "middle"}).text = f"{t:g} s"
        t += axis.step
    ET.SubElement(svg, "rect", x=f"{LEFT}", y=f"{TRACK_Y}", width=f"{WIDTH - LEFT - RIGHT:g}",
                  height=f"{TRACK_H}", **{"class": "track"})
    bars = ET.SubElement(svg, "g", {"class": "phases"})
    for i, (label, a, b, cls) in enumerate(phases(timed)):
        x0, x1 = axis.x(a), axis.x(b)
        inner = i % 2 * TRACK_H / 2 if cls in ("ph-unmount", "ph-logout", "ph-final") else 0.0
        r = ET.SubElement(bars, "rect", x=f"{x0}", y=f"{TRACK_Y + inner}", width=f"{max(x1 - x0, 1.5):.2f}",
                          height=f"{TRACK_H - inner}", **{"class": f"phase {cls}", "data-phase": label})
        ET.SubElement(r, "title").text = f"{label}: {a:.2f} s to {b:.2f} s ({b - a:.2f} s)"
    marks = ET.SubElement(svg, "g", {"class": "events"})
    for e in timed:
        x = axis.x(e["guest_t"])
        cls = "ev bad" if e["name"] in BAD else "ev"
        m = ET.SubElement(marks, "rect", x=f"{x - 1:.2f}", y=f"{TRACK_Y - 4}", width="2", height=f"{TRACK_H + 8}",
                          **{"class": cls, "data-event": e["name"], "data-guest-t": f"{e['guest_t']:.3f}",
                             "data-x": f"{x}"})
        ET.SubElement(m, "title").text = (f"{e['name']}: guest {_fmt(e['guest_t'])}, host {_fmt(e.get('host_t'))}"
                                          + (f"\n{e['detail']}" if e.get("detail") else ""))
    texts = ET.SubElement(svg, "g", {"class": "labels"})
    for (x, text), lane in zip(labels, lanes, strict=True):
        y = TRACK_Y + TRACK_H + 14 + lane * LANE_H
        ET.SubElement(texts, "line", x1=f"{x}", x2=f"{x}", y1=f"{TRACK_Y + TRACK_H + 4}", y2=f"{y - 9}")
        start, _end = _place(x, text)
        ET.SubElement(texts, "text", x=f"{start:.2f}", y=f"{y}").text = text
    return svg


def to_string(el: ET.Element) -> str:
    return ET.tostring(el, encoding="unicode", short_empty_elements=True)
