"""What a proof run hands to people and to CI, from its JSON report (the dict `--json` prints).

- `properties`: the per-cycle verdicts a report is judged by (clean, payload, ordering, shutdown bound),
  each with its evidence in words; pure functions of the report's cycle dicts and timelines.
- `cases`: a report as test cases (one per cycle and property, or per check), for any scenario.
- `junit`: those cases as JUnit XML (``--junit PATH``).
- `svg` and `html`: one self-contained HTML page (``--report PATH.html``) with an SVG timeline per boot,
  every boot on the same axis, and the verdicts and evidence beside each.
- `progress`: cycle N/M, the current step and an ETA on a terminal.

Nothing here boots or checks anything: it reads reports, so a saved ``--json`` output renders the same.
"""
