"""Offline activation-memory planner for the generated C engine.

Every activation tensor (and every per-layer scratch buffer) becomes a *buffer* with a size and a lifetime
``[first, last]`` in execution-step order. Tensors joined by in-place operators (RESHAPE aliasing) share one buffer
whose lifetime is the union. Buffers are placed greedily by decreasing size at the lowest offset (first fit) that
does not overlap, in address, any already placed buffer whose lifetime overlaps; the arena is the highest end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 8


def _align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass
class Buffer:
    name: str
    size: int
    first: int
    last: int
    offset: int = -1
    members: list[str] = field(default_factory=list)

    def overlaps_in_time(self, other: Buffer) -> bool:
        return not (self.last < other.first or other.last < self.first)


@dataclass
class Plan:
    buffers: list[Buffer]
    arena_bytes: int
    naive_bytes: int  # sum of all buffer sizes (no reuse)

    def to_dict(self) -> dict:
        return {
            "arena_bytes": self.arena_bytes,
            "no_reuse_bytes": self.naive_bytes,
            "alignment": ALIGN,
            "buffers": [
                {"name": b.name, "offset": b.offset, "size": b.size, "first_step": b.first, "last_step": b.last,
                 "tensors": b.members}
                for b in sorted(self.buffers, key=lambda b: b.offset)
            ],
        }


def plan(buffers: list[Buffer]) -> Plan:
    """Assign offsets (greedy by size, first-fit); returns the plan with the arena size."""
    order = sorted(buffers, key=lambda b: (-b.size, b.first, b.name))
    placed: list[Buffer] = []
    for buf in order:
        live = sorted((p for p in placed if p.overlaps_in_time(buf)), key=lambda p: p.offset)
        offset = 0
        for p in live:
            if offset + buf.size <= p.offset:
                break
            offset = max(offset, _align(p.offset + p.size))
        buf.offset = offset
        placed.append(buf)
    arena = max((_align(b.offset + b.size) for b in placed), default=0)
    return Plan(buffers=placed, arena_bytes=arena, naive_bytes=sum(_align(b.size) for b in placed))


def check_plan(p: Plan) -> list[str]:
    """Problems in a plan (overlapping live buffers, out of arena); empty when valid."""
    problems = []
    bs = p.buffers
    for i, a in enumerate(bs):
        if a.offset < 0 or a.offset + a.size > p.arena_bytes:
            problems.append(f"{a.name} outside arena")
        for b in bs[i + 1:]:
            if a.overlaps_in_time(b) and a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                problems.append(f"{a.name} overlaps {b.name}")
    return problems
