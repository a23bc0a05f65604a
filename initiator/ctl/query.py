"""uiscsictl's read-only one-shot tools: discover, inquiry, capacity, luns (and it registers cp and perf).

Each logs in by itself, does its work, logs out, and prints text or --json. Nothing here needs the
daemon. --timeout bounds each tool's whole run, from the process start to the last close (see `bound`).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..io.params import SessionParams
from ..protocol.chap import algorithm_names
from ..scsi import commands as scsi
from ..scsi import vpd
from . import copy, perf
from .direct import add_session_options, bounded, initiator_name, logged_in, run_budget, tool_params
from .output import emit, table
from .progress import human_bytes
from .url import chap_from_env, parse_discovery_portal, parse_url

_FMT = argparse.RawDescriptionHelpFormatter
# argparse %-formats help strings: a literal % is written %%
URL_HELP = "iscsi://[user[%%secret]@]host[:port]/IQN/LUN (secrets may come from LIBISCSI_CHAP_*)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add discover, inquiry, capacity, luns, cp and perf to the uiscsictl parser."""
    p = sub.add_parser("discover", help="list the targets a portal offers (SendTargets)", formatter_class=_FMT,
                       description="Log in to a portal's discovery session and list its targets and portals.",
                       epilog="examples:\n  uiscsictl discover 192.0.2.10\n  uiscsictl discover --json "
                              "127.0.0.1:3261\n\nCHAP for discovery comes from LIBISCSI_CHAP_USERNAME/PASSWORD.")
    p.add_argument("portal", metavar="HOST[:PORT]", help="address of the portal (default port 3260)")
    add_session_options(p)
    p.set_defaults(func=cmd_discover)

    p = sub.add_parser("inquiry", help="identify a LUN (standard INQUIRY and VPD pages)", formatter_class=_FMT,
                       description="Show the LUN's vendor, product, serial number, identifiers, block "
                                   "limits and provisioning (VPD pages 0x00, 0x80, 0x83, 0xb0, 0xb2).",
                       epilog="example:\n  uiscsictl inquiry iscsi://192.0.2.10/iqn.2026-11.org.example:d/1")
    p.add_argument("url", metavar="URL", help=URL_HELP)
    add_session_options(p)
    p.set_defaults(func=cmd_inquiry)

    p = sub.add_parser("capacity", help="size and block size of a LUN (READ CAPACITY)", formatter_class=_FMT,
                       description="Show the LUN's block count and block size (READ CAPACITY(16), or (10)).",
                       epilog="example:\n  uiscsictl capacity --json iscsi://192.0.2.10/iqn.2026-11.org.example:d/1"
                              "\n  -> {\"block_size\": 512, \"blocks\": 131072, ...}")
    p.add_argument("url", metavar="URL", help=URL_HELP)
    add_session_options(p)
    p.set_defaults(func=cmd_capacity)

    p = sub.add_parser("luns", help="list a target's LUNs (REPORT LUNS)", formatter_class=_FMT,
                       description="List the target's LUNs with their type, product and size. The LUN part "
                                   "of the URL may be left out.",
                       epilog="example:\n  uiscsictl luns iscsi://192.0.2.10/iqn.2026-11.org.example:d")
    p.add_argument("url", metavar="URL", help="iscsi://[user[%%secret]@]host[:port]/IQN[/LUN]")
    add_session_options(p)
    p.set_defaults(func=cmd_luns)

    copy.register(sub)
    perf.register(sub)


# --------------------------------------------------------------------------------------------- discover


async def cmd_discover(args: argparse.Namespace) -> int:
    host, port = parse_discovery_portal(args.portal)
    params = SessionParams(host=host, port=port, initiator_name=initiator_name(args), target_name=None,
                           login_timeout=args.timeout, **chap_from_env())
    where = f"{host}:{port}"
    budget = run_budget(args)
    async with logged_in(params, budget, where) as session:
        targets = await bounded("SendTargets", budget, lambda: session.send_targets("All"))
    doc = {"portal": where, "targets": [
        {"name": t.name, "portals": [{"address": a, "port": p, "tpgt": g} for a, p, g in t.portals]}
        for t in targets]}
    lines = [f"{_portal_text(a, p)},{g} {t.name}" for t in targets for a, p, g in t.portals]
    lines += [f"- {t.name}" for t in targets if not t.portals]
    return emit(args, doc, "\n".join(lines) if lines else f"{where}: no targets offered")


def _portal_text(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# ---------------------------------------------------------------------------------------------- inquiry


async def cmd_inquiry(args: argparse.Namespace) -> int:
    url = parse_url(args.url)
    params = tool_params(url.session, args)
    t, budget = args.timeout, run_budget(args)
    async with logged_in(params, budget, url.portal) as s:
        inq = await bounded("INQUIRY", budget, lambda: scsi.inquiry(s, url.lun, t))
        pages: list[int] = []
        info: dict[str, Any] = {}
        try:
            pages = vpd.parse_supported_pages(await bounded("INQUIRY VPD 0x00", budget, lambda: scsi.vpd_page(
                s, url.lun, vpd.SUPPORTED_PAGES, t)))
        except scsi.SCSIError:
            pages = []  # VPD is optional before SPC-3; the standard page alone still identifies it
        info["session"] = session_doc(s)
        for code, parser, key in ((vpd.UNIT_SERIAL, vpd.parse_unit_serial, "serial"),
                                  (vpd.DEVICE_ID, vpd.parse_device_id, "designators"),
                                  (vpd.BLOCK_LIMITS, vpd.parse_block_limits, "block_limits"),
                                  (vpd.LB_PROVISIONING, vpd.parse_provisioning, "provisioning")):
            if code in pages:
                raw = await bounded(f"INQUIRY VPD 0x{code:02x}", budget,
                                    lambda c=code: scsi.vpd_page(s, url.lun, c, t))
                info[key] = parser(raw)
    doc = {"target": url.session.target_name, "lun": url.lun, "vendor": inq.vendor, "product": inq.product,
           "revision": inq.revision, "device_type": inq.device_type, "device_type_name": inq.device_type_name,
           "qualifier": inq.qualifier, "version": inq.version, "removable": inq.removable,
           "cmdque": inq.cmdque, "vpd_pages": pages, "serial": info.get("serial"),
           "designators": [d.as_dict() for d in info.get("designators", [])],
           "block_limits": vars(info["block_limits"]) if "block_limits" in info else None,
           "provisioning": _provisioning_doc(info.get("provisioning")), "session": info["session"]}
    return emit(args, doc, _inquiry_text(doc))


def session_doc(session) -> dict[str, Any]:
    """What login settled on, for the user to see (digests, burst sizes, connections)."""
    n = getattr(session, "negotiated", None)
    if n is None:
        return {}
    return {"header_digest": n.header_digest, "data_digest": n.data_digest,
            "connections": getattr(session, "connections", 1), "max_connections": n.max_connections,
            "connections_asked": session.params.max_connections,
            "connections_granted": session.connections_granted, "chap_algorithm": _chap_name(session),
            "immediate_data": n.immediate_data, "initial_r2t": n.initial_r2t, "first_burst": n.first_burst,
            "max_burst": n.max_burst, "max_recv_dsl": n.max_recv_dsl, "max_xmit_dsl": n.max_xmit_dsl,
            "target_alias": n.target_alias, "tpgt": n.tpgt}


def _chap_name(session) -> str | None:
    alg = session.chap_algorithm
    return algorithm_names((alg,))[0] if alg is not None else None


def _provisioning_doc(p: vpd.Provisioning | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"unmap": p.lbpu, "write_same_unmap": p.lbpws, "lbprz": p.lbprz, "type": p.provisioning_name}


def _inquiry_text(doc: dict[str, Any]) -> str:
    rows = [("vendor", doc["vendor"]), ("product", doc["product"]), ("revision", doc["revision"]),
            ("type", f"{doc['device_type_name']} (peripheral qualifier {doc['qualifier']})"),
            ("serial", doc["serial"] or "-"),
            ("vpd pages", " ".join(f"0x{c:02x}" for c in doc["vpd_pages"]) or "-")]
    for i, d in enumerate(doc["designators"]):
        rows.append(("identifiers" if i == 0 else "", f"{d['type']}: {d['value']} ({d['association']})"))
    lim = doc["block_limits"]
    if lim:
        rows.append(("max transfer", f"{lim['max_transfer_length']} blocks" if lim["max_transfer_length"]
                     else "not reported"))
        rows.append(("max unmap", f"{lim['max_unmap_lba_count']} blocks, {lim['max_unmap_descriptors']} "
                     "descriptors" if lim["max_unmap_lba_count"] else "not reported"))
    prov = doc["provisioning"]
    if prov:
        rows.append(("provisioning", f"{prov['type']}, UNMAP {'yes' if prov['unmap'] else 'no'}"))
    sess = doc["session"]
    if sess:
        digests = "+".join(n for n, on in (("header", sess["header_digest"]), ("data", sess["data_digest"])) if on)
        yes = {True: "yes", False: "no"}
        text = (f"digests {digests or 'none'}, ImmediateData {yes[sess['immediate_data']]}, "
                f"InitialR2T {yes[sess['initial_r2t']]}, bursts {sess['first_burst']}/{sess['max_burst']}")
        rows.append(("session", text))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


# --------------------------------------------------------------------------------------------- capacity


async def cmd_capacity(args: argparse.Namespace) -> int:
    url = parse_url(args.url)
    params = tool_params(url.session, args)
    budget = run_budget(args)
    async with logged_in(params, budget, url.portal) as s:
        cap = await bounded("READ CAPACITY", budget, lambda: scsi.read_capacity(s, url.lun, args.timeout))
    doc = {"block_size": cap.block_size, "blocks": cap.blocks, "size": cap.size, "lbpme": cap.lbpme,
           "lbprz": cap.lbprz}
    text = (f"blocks      {cap.blocks}\nblock_size  {cap.block_size}\n"
            f"size        {cap.size} bytes ({human_bytes(cap.size)})\n"
            f"thin        {'yes (LBPME)' if cap.lbpme else 'no'}")
    return emit(args, doc, text)


# ------------------------------------------------------------------------------------------------- luns


async def cmd_luns(args: argparse.Namespace) -> int:
    url = parse_url(args.url, lun_required=False)
    params = tool_params(url.session, args)
    t, budget = args.timeout, run_budget(args)
    entries: list[dict[str, Any]] = []
    async with logged_in(params, budget, url.portal) as s:
        luns = await bounded("REPORT LUNS", budget, lambda: scsi.report_luns(s, url.lun, t))
        for lun in luns:
            entry: dict[str, Any] = {"lun": lun, "type": None, "vendor": None, "product": None,
                                     "block_size": None, "blocks": None, "size": None}
            try:
                inq = await bounded(f"INQUIRY of LUN {lun}", budget, lambda n=lun: scsi.inquiry(s, n, t))
                entry.update(type=inq.device_type_name, vendor=inq.vendor, product=inq.product)
                if inq.device_type in (0x00, 0x0E) and inq.connected:
                    cap = await bounded(f"READ CAPACITY of LUN {lun}", budget,
                                        lambda n=lun: scsi.read_capacity(s, n, t))
                    entry.update(block_size=cap.block_size, blocks=cap.blocks, size=cap.size)
            except scsi.SCSIError as e:
                entry["error"] = str(e)
            entries.append(entry)
    rows = [[str(e["lun"]), e["type"] or "?", e["vendor"] or "", e["product"] or "",
             human_bytes(e["size"]) if e["size"] is not None else "-"] for e in entries]
    doc = {"target": url.session.target_name, "portal": url.portal, "luns": entries}
    return emit(args, doc, table(rows, ["LUN", "TYPE", "VENDOR", "PRODUCT", "SIZE"]))

