"""Routing strategies, one module each: given the agents that may take a call now, the order
in which to offer it (ring-all offers to all at once)."""

from __future__ import annotations

from ringmaster.acd.strategies.base import Strategy
from ringmaster.acd.strategies.fewest_calls import FewestCalls
from ringmaster.acd.strategies.least_talk_time import LeastTalkTime
from ringmaster.acd.strategies.linear import Linear
from ringmaster.acd.strategies.longest_idle import LongestIdle
from ringmaster.acd.strategies.random_order import RandomOrder
from ringmaster.acd.strategies.ring_all import RingAll
from ringmaster.acd.strategies.round_robin import RoundRobin

STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (
    RingAll, Linear, RoundRobin, LongestIdle, FewestCalls, LeastTalkTime, RandomOrder)}

__all__ = ["STRATEGIES", "Strategy"]
