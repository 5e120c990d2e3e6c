"""The C engine's operator registry: one module per operator family, each with ``OPCODES``, ``CONSTRAINTS`` (a
tuple of rules, or a dict opcode -> tuple) and ``lower(bld, op)``. A rule is ``rule(bld, op) -> (ok, detail)``
whose docstring is the user's message (Arm Vela's constraint style); rules run in order, so a rule may rely on the
ones before it, and all of them run before any operator is lowered (``firmware_export.cgen.generator``)."""

from __future__ import annotations

from firmware_export.cgen.ops import (activations, add, binary, boundary, conv, fully_connected, layout, mean,
                                      pool, softmax)

FAMILIES = (conv, fully_connected, pool, add, binary, mean, softmax, activations, layout, boundary)
REGISTRY = {opcode: family for family in FAMILIES for opcode in family.OPCODES}
SUPPORTED_OPS = tuple(REGISTRY)


def constraints(opcode: str) -> tuple:
    rules = REGISTRY[opcode].CONSTRAINTS
    return rules[opcode] if isinstance(rules, dict) else rules


def message(rule, detail: str) -> str:
    text = " ".join((rule.__doc__ or rule.__name__).split())
    return f"{text} ({detail})" if detail else text


def supported(bld, op) -> tuple[bool, str]:
    """(True, "") when the engine lowers ``op``, else (False, the first failing rule's message)."""
    if op.opcode not in REGISTRY:
        return False, "not supported"
    for rule in constraints(op.opcode):
        ok, detail = rule(bld, op)
        if not ok:
            return False, message(rule, detail)
    return True, ""


def lower(bld, op) -> None:
    REGISTRY[op.opcode].lower(bld, op)
