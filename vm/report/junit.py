"""A proof report as JUnit XML, the format CI systems (Jenkins, GitLab, GitHub test reporters) render.

One ``<testsuites>`` with one ``<testsuite>`` per report; a ``<testcase>`` per `cases.Case`, named
``cycle 2: payload`` with classname ``bootkit.vm.<test>.cycle2``, so CI groups the cycles. A failed case
has a ``<failure>`` whose message is the verdict in one line and whose text is the evidence; a case not
judged is ``<skipped>``; every case carries its evidence in ``<system-out>`` too (CI shows it for passes).
The suite's ``<properties>`` hold the setup (init, fstab line, target, which check judged the LUN).
Counts and times follow what Jenkins' JUnit schema requires (name, tests, failures, errors on a suite;
name on a case; times as plain decimals).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

from vm.report.cases import Case, Suite, suite_of


def _classname(suite_test: str, case: Case) -> str:
    group = case.group.replace(" ", "")
    return f"bootkit.vm.{suite_test}.{group}"


def _seconds(value: float | None) -> str:
    return f"{max(0.0, value or 0.0):.3f}"


def _case(test: str, case: Case) -> ET.Element:
    el = ET.Element("testcase", name=f"{case.group}: {case.name}", classname=_classname(test, case),
                    time=_seconds(case.seconds))
    text = "\n".join(case.evidence)
    if case.failed:
        f = ET.SubElement(el, "failure", message=case.summary, type="ProofFailure")
        f.text = text
    elif case.ok is None and not case.informational:
        ET.SubElement(el, "skipped", message=case.summary)
    out = ET.SubElement(el, "system-out")
    prefix = "recorded, not judged (negative control): " if case.informational else ""
    out.text = f"{prefix}{case.summary}\n{text}".rstrip() + "\n"
    return el


def to_element(report: dict, timestamp: float | None = None) -> ET.Element:
    suite: Suite = suite_of(report)
    test = report.get("test", "proof").replace("-", "_")
    failures = sum(1 for c in suite.cases if c.failed)
    skipped = sum(1 for c in suite.cases if c.ok is None and not c.informational)
    counts = {"tests": str(len(suite.cases)), "failures": str(failures), "errors": "0",
              "skipped": str(skipped), "time": _seconds(suite.seconds)}
    root = ET.Element("testsuites", name="bootkit vm", **counts)
    ts = ET.SubElement(root, "testsuite", name=suite.name, **counts,
                       timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(timestamp)))
    props = ET.SubElement(ts, "properties")
    for key, value in {**suite.properties, "verdict": "ok" if suite.ok else "not ok"}.items():
        ET.SubElement(props, "property", name=key, value=value)
    for case in suite.cases:
        ts.append(_case(test, case))
    return root


def to_xml(report: dict, timestamp: float | None = None) -> bytes:
    root = to_element(report, timestamp)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write(path: str | Path, report: dict) -> Path:
    """Write the report's JUnit XML to PATH (write then rename: a CI never reads half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(to_xml(report))
    tmp.replace(path)
    return path
