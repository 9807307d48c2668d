"""The ACD: queues, agents and routing strategies as a sans-IO engine (events in, actions out).

No sockets, no timers inside: the controller feeds it call and agent events plus the clock,
and carries out its actions (ring agents through the edge, bridge, overflow). Tests and the
`acd` benchmark drive it directly.
"""
