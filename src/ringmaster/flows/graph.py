"""`ringmaster graph`: a flow as a diagram, Mermaid text (and Graphviz DOT for SVG).

Steps are boxes labelled with their id and what they do; a plain arrow is "then the next
step", a labelled arrow is a jump (menu option, branch case, schedule open/closed, ...).
Jumps into other flows end at a rounded box naming that flow.
"""

from __future__ import annotations

import re

from ringmaster.flows.dialplan import DialPlan, Flow, _resolve


def _nid(flow: str, node_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{flow}__{node_id}")


def _label(path: tuple[object, ...]) -> str:
    parts = [str(p) for p in path if p not in ("then", "options", "to")]
    return " ".join(parts) or "go"


def edges(plan: DialPlan, flow: Flow) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(boxes: id, label), (arrows: from, to, label); other flows appear as their own boxes."""
    boxes: list[tuple[str, str]] = []
    arrows: list[tuple[str, str, str]] = []
    others: set[str] = set()
    for i, node in enumerate(flow.nodes):
        me = _nid(flow.name, node.id)
        boxes.append((me, f"{node.id}: {node.describe()}"))
        if node.falls_through():
            if i + 1 < len(flow.nodes):
                arrows.append((me, _nid(flow.name, flow.nodes[i + 1].id), ""))
            else:
                arrows.append((me, "END", "end"))
        for opt_path, target in node.targets():
            r = _resolve(plan.flows, flow, target)
            if r is None:
                arrows.append((me, "END", _label(opt_path)))
            elif isinstance(r, str):
                arrows.append((me, "BROKEN", _label(opt_path)))
            elif r[0] is flow:
                arrows.append((me, _nid(flow.name, flow.nodes[r[1]].id), _label(opt_path)))
            else:
                other = f"FLOW__{r[0].name}"
                others.add(r[0].name)
                arrows.append((me, other, _label(opt_path)))
    for name in sorted(others):
        boxes.append((f"FLOW__{name}", f"flow {name}"))
    if any(a[1] == "END" for a in arrows):
        boxes.append(("END", "hang up"))
    return boxes, arrows


def mermaid(plan: DialPlan, flow_name: str) -> str:
    flow = plan.flows[flow_name]
    boxes, arrows = edges(plan, flow)
    lines = ["flowchart TD", f"    %% flow {flow_name}"]
    for bid, label in boxes:
        text = label.replace('"', "'")
        if bid.startswith("FLOW__") or bid == "END":
            lines.append(f'    {bid}(["{text}"])')
        else:
            lines.append(f'    {bid}["{text}"]')
    for a, b, label in arrows:
        lines.append(f"    {a} -->|{label}| {b}" if label else f"    {a} --> {b}")
    return "\n".join(lines) + "\n"


def dot(plan: DialPlan, flow_name: str) -> str:
    flow = plan.flows[flow_name]
    boxes, arrows = edges(plan, flow)
    lines = [f'digraph "{flow_name}" {{', "    rankdir=TB;", '    node [shape=box, fontname="sans-serif"];']
    for bid, label in boxes:
        shape = ", shape=ellipse" if bid.startswith("FLOW__") or bid == "END" else ""
        text = label.replace('"', "'")
        lines.append(f'    {bid} [label="{text}"{shape}];')
    for a, b, label in arrows:
        text = label.replace('"', "'")
        lines.append(f'    {a} -> {b}' + (f' [label="{text}"];' if label else ";"))
    lines.append("}")
    return "\n".join(lines) + "\n"
