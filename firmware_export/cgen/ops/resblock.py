"""Residual blocks streamed by rows (``ce_resblock_s8``): CONV_2D -> CONV_2D -> ADD(shortcut, .), the shortcut being
the block input or a CONV_2D of it, lowered as one step so that neither the first convolution's output nor the
second's is ever stored whole: the first is kept in a ring of the second's kernel-height rows, the second one row
at a time. ResNet-style stages then need the block input and output (often one buffer) plus a few rows.

Not an operator family of the registry: every operator of a block has passed its own family's rules before the
generator asks ``match`` whether the block can run fused; lowering reuses those families' parameter emitters."""

from __future__ import annotations

from dataclasses import dataclass

from firmware_export.cgen.builder import resolve
from firmware_export.cgen.ops import add, conv


@dataclass
class Block:
    c1: object  # x -> y
    c2: object  # y -> z
    cs: object | None  # x -> shortcut, or None: the shortcut is x
    add: object
    shortcut_first: bool  # the ADD's first operand is the shortcut

    @property
    def ops(self) -> list:
        return [o for o in (self.c1, self.c2, self.cs) if o is not None]


def _conv_ok(bld, op) -> bool:
    return (op is not None and op.opcode == "CONV_2D" and bld.t(op.inputs[1]).dtype == "int8"
            and int(bld.t(op.inputs[0]).shape[0]) == 1)


def match(bld, op, producers: dict[int, object], consumers: dict[int, list]) -> Block | None:
    """The residual block whose ADD is ``op``, when it can run as one streamed step; else None.
    ``producers``: tensor -> operator writing it; ``consumers``: alias root -> operators reading it."""
    if op.opcode != "ADD":
        return None

    def root(t: int) -> int:
        return resolve(bld._static_root, t)

    def only_reader(t: int, reader) -> bool:
        rs = consumers.get(root(t), [])
        return len(rs) == 1 and rs[0] is reader and root(t) not in bld.protected and t == root(t)

    for zi, si in ((1, 0), (0, 1)):
        z, sc = op.inputs[zi], op.inputs[si]
        c2 = producers.get(z)
        if not _conv_ok(bld, c2) or not only_reader(z, op):
            continue
        c1 = producers.get(c2.inputs[0])
        if not _conv_ok(bld, c1) or not only_reader(c2.inputs[0], c2):
            continue
        x = c1.inputs[0]
        o2 = c2.options
        if int(o2.get("dilation_h_factor", 1)) != 1 or int(bld.t(c2.inputs[0]).shape[3]) % 4:
            continue
        if root(sc) == root(x):
            cs = None
        else:
            cs = producers.get(sc)
            if not _conv_ok(bld, cs) or root(cs.inputs[0]) != root(x) or not only_reader(sc, op):
                continue
        return Block(c1, c2, cs, op, shortcut_first=si == 0)
    return None


def _in_place(bld, blk: Block) -> bool:
    """With the identity shortcut the output may overwrite the block input when no y row computed after output
    row r reads an input row <= r."""
    x, y = blk.c1.inputs[0], blk.add.outputs[0]
    shortcut = blk.add.inputs[0 if blk.shortcut_first else 1]
    if blk.cs is not None or shortcut != x:  # a RESHAPE of x: output rows are not x's rows
        return False
    if not bld.can_overwrite(blk.add, x) or tuple(bld.t(x).shape) != tuple(bld.t(y).shape):
        return False
    geo = []
    for c in (blk.c1, blk.c2):
        tx, tw, ty = bld.t(c.inputs[0]), bld.t(c.inputs[1]), bld.t(c.outputs[0])
        kh, sh = int(tw.shape[1]), int(c.options.get("stride_h", 1))
        dh = int(c.options.get("dilation_h_factor", 1))
        pad = bld.padding(c.options.get("padding", "VALID"), int(tx.shape[1]), int(ty.shape[1]), kh, sh, dh)
        geo.append((kh, sh, dh, pad, int(ty.shape[1])))
    (_, s1, _, p1, h1), (kh2, s2, _, p2, h2) = geo
    for r in range(h2):
        last = min(h1 - 1, r * s2 - p2 + kh2 - 1)
        if last < h1 - 1 and (last + 1) * s1 - p1 <= r:
            return False
    return True


def lower(bld, blk: Block) -> None:
    x, y = blk.c1.inputs[0], blk.add.outputs[0]
    convs = {}
    for tag, c in (("c1", blk.c1), ("c2", blk.c2), ("cs", blk.cs)):
        if c is not None:
            with bld.part(tag):
                convs[tag] = conv.emit(bld, c)
    with bld.part("add"):
        apn = add.params(bld, blk.add)
    ty1, ty2 = bld.t(blk.c1.outputs[0]), bld.t(blk.c2.outputs[0])
    kh2 = int(bld.t(blk.c2.inputs[1]).shape[1])
    words = [add.TABLE_BYTES // 4,
             kh2 * int(ty1.shape[2]) * int(ty1.shape[3]) // 4,  # y ring (channels a multiple of 4)
             (int(ty2.shape[2]) * int(ty2.shape[3]) + 3) // 4]  # z row
    words.append(words[-1] if blk.cs is not None else 0)  # shortcut row
    for tag in ("c1", "c2", "cs"):
        words.append((convs[tag][1] + 7) // 8 * 2 if tag in convs else 0)
    at = [sum(words[:i]) for i in range(len(words))]
    pn = bld.params("ce_resblock_params", c1=f"&{convs['c1'][0]}", c2=f"&{convs['c2'][0]}",
                    cs=f"&{convs['cs'][0]}" if "cs" in convs else "NULL", add=f"&{apn}",
                    shortcut_first=int(blk.shortcut_first), ring_at=at[1], z_at=at[2], s_at=at[3], c1_at=at[4],
                    c2_at=at[5], cs_at=at[6])
    if _in_place(bld, blk):
        bld.alias[y] = x
    bld.add_step(blk.add, f"ce_resblock_s8(&{pn}, {bld.ptr(x)}, {bld.ptr(y)}, @S32@);", [x], [y], 4 * sum(words),
                 sum(v[2] for v in convs.values()), sum(v[3] for v in convs.values()), label="RESBLOCK")
