"""The node room: what one node does with its hardware and its commands. ``safety`` applies the policies to the
fans and the running job every tick, ``chassis_power`` and ``slot_power`` are the chassis roles, ``telemetry``
turns a sample into the wire's message, and ``commands`` handles every message the agent receives."""
