"""IVR flows: node types (one module each under nodes/), parsing with positions and graph
checks, and the sans-IO interpreter that turns call events into call-control actions."""

from ringmaster.flows.dialplan import DialPlan, check_flows

__all__ = ["DialPlan", "check_flows"]
