"""Firmware export: a TFLite model -> C/C++ sources for TensorFlow Lite for Microcontrollers (TFLM).

``export_tflm(model_path, out_dir, ...)`` writes, from the templates in ``firmware_export/templates/``:

* ``NAME_model_data.h`` / ``NAME_model_data.c`` -- the model bytes as a 16-byte aligned ``const unsigned char``
  array (C99, also valid C++), optionally in a named linker section;
* ``NAME_model_config.h`` -- input/output shapes, types, quantisation constants, labels, recommended arena size,
  the preprocessing recorded with the model (``firmware_export.preprocessing``);
* ``NAME_op_resolver.h`` -- a ``tflite::MicroMutableOpResolver<N>`` registering exactly the model's operators;
* ``NAME_main.cc`` -- a minimal TFLM inference example;
* ``manifest.json`` -- file sizes and digests, source digest, arena figures, target fit.

When NAME already has ``model`` as an ``_``-separated word (``model_int8``) the ``_model`` infix is dropped:
``model_int8_data.c``, ``model_int8_config.h`` (symbols keep ``NAME_model_data``); the rule lives in
``firmware_export.naming.tflm_file_names``, the only place that names these files.

The C-engine export (``--format c``) lives in ``firmware_export.cgen``. Nothing heavy is imported here.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from firmware_export.preprocessing import c_float as _c_float
from firmware_export.preprocessing import preprocessing_block
from firmware_export.preprocessing import render as _render
from toolchain.errors import ExportError, ToolchainError

__all__ = ["export_tflm", "render_sources", "MANIFEST_FORMAT"]

log = logging.getLogger("firmware_export")

MANIFEST_FORMAT = "toolchain-tflm-export/1"
_SECTION_RE = re.compile(r"^[A-Za-z0-9_.$,]{1,64}$")

# numpy dtype name -> (C type, TFLM TfLiteType enumerator, qmin literal, qmax literal)
_DTYPES: dict[str, tuple[str, str, str, str]] = {
    "int8": ("int8_t", "kTfLiteInt8", "-128", "127"),
    "uint8": ("uint8_t", "kTfLiteUInt8", "0", "255"),
    "int16": ("int16_t", "kTfLiteInt16", "-32768", "32767"),
    "uint16": ("uint16_t", "kTfLiteUInt16", "0", "65535"),
    "int32": ("int32_t", "kTfLiteInt32", "-2147483647 - 1", "2147483647"),
    "uint32": ("uint32_t", "kTfLiteUInt32", "0", "4294967295u"),
    "int64": ("int64_t", "kTfLiteInt64", "0", "0"),
    "float32": ("float", "kTfLiteFloat32", "0", "0"),
    "float16": ("uint16_t", "kTfLiteFloat16", "0", "0"),
    "bool": ("uint8_t", "kTfLiteBool", "0", "1"),
}


def _check_section(section: str | None) -> str | None:
    if section is None:
        return None
    if not _SECTION_RE.match(section):
        raise ExportError("the linker section name may only contain letters, digits, '.', '_', '$' and ',' "
                          "(at most 64 characters)", received=f"--section={section!r}")
    return section


def _tensor_info(t, kind: str, index: int) -> dict[str, Any]:
    if t.dtype not in _DTYPES:
        raise ExportError(f"unsupported {kind.lower()} tensor type for a TFLM export", received=f"{t.name}: {t.dtype}")
    ctype, tfl_type, qmin, qmax = _DTYPES[t.dtype]
    quantized = bool(t.is_quantized) and t.dtype != "float32"
    scale = float(t.scale.reshape(-1)[0]) if quantized else 1.0
    zero_point = int(t.zero_point.reshape(-1)[0]) if quantized and t.zero_point is not None else 0
    shape = tuple(int(s) for s in t.shape) or (1,)
    elements = 1
    for s in shape:
        elements *= s
    return {
        "kind": kind, "index": index, "name": t.name, "dtype": t.dtype, "shape": list(shape), "elements": elements,
        "bytes": int(t.nbytes) if t.shape else int(t.itemsize), "ctype": ctype, "tflite_type": tfl_type,
        "quantized": quantized, "scale": scale, "zero_point": zero_point,
        "qmin": qmin if quantized else "0", "qmax": qmax if quantized else "0",
    }


def _labels(meta: dict[str, Any] | None, num_classes: int, warnings: list[str]) -> tuple[list[str], str]:
    """Labels from the model's metadata (a sidecar is already checked against the model's sha256)."""
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if isinstance(labels, list) and labels and all(isinstance(x, (str, int)) for x in labels):
        if len(labels) == num_classes:
            return [str(x) for x in labels], "from the model metadata"
        warnings.append(f"metadata has {len(labels)} labels but output 0 has {num_classes} classes; "
                        "labels are class numbers")
    return [str(i) for i in range(num_classes)], "class numbers (no labels in the model metadata)"


def render_sources(model, name: str, *, source_name: str, sha256: str, section: str | None,
                   arena: dict[str, Any], labels: list[str], labels_source: str, version: str,
                   meta: dict[str, Any] | None = None) -> dict[str, str]:
    """The generated file texts, by file name (pure: no I/O besides reading the templates)."""
    from firmware_export.carray import c_array_body, c_comment, c_string
    from firmware_export.naming import tflm_file_names
    from firmware_export.op_resolver import model_operator_names, resolver_methods

    upper = name.upper()
    fnames = tflm_file_names(name)
    common = {"name": name, "UPPER": upper, "version": version, "source_name": c_comment(source_name),
              "sha256": sha256, "model_bytes": len(model.data), **fnames.template_values()}
    files: dict[str, str] = {}

    files[fnames.data_h] = _render("model_data.h.tmpl", **common)
    if section is None:
        section_block = _render("section_none.tmpl", **common)
    else:
        section_block = _render("section_named.tmpl", **common, section=c_comment(section),
                                section_literal=c_string(section))
    files[fnames.data_c] = _render("model_data.c.tmpl", **common, section_block=section_block.rstrip("\n"),
                                     array_body=c_array_body(model.data))

    blocks = []
    ios = [("Input", "input", i, model.tensor(t)) for i, t in enumerate(model.inputs)] + \
          [("Output", "output", i, model.tensor(t)) for i, t in enumerate(model.outputs)]
    infos = {}
    for kind, base, i, t in ios:
        info = _tensor_info(t, kind, i)
        infos[(base, i)] = info
        prefix = base if i == 0 else f"{base}{i}"
        quant_text = (f", scale {info['scale']:.9g}, zero point {info['zero_point']}" if info["quantized"]
                      else ", not quantised")
        blocks.append(_render(
            "tensor_block.tmpl", **common, kind=kind, index=i, tensor_name=c_comment(t.name), dtype=info["dtype"],
            shape_text=str(info["shape"]), quant_text=quant_text, PREFIX=prefix.upper(), prefix=prefix,
            dims=len(info["shape"]), shape_list=", ".join(str(s) for s in info["shape"]), elements=info["elements"],
            nbytes=info["bytes"], tflite_type=info["tflite_type"], quantized=int(info["quantized"]),
            scale=_c_float(info["scale"]), zero_point=info["zero_point"], qmin=info["qmin"], qmax=info["qmax"],
            ctype=info["ctype"]))
    files[fnames.config_h] = _render(
        "model_config.h.tmpl", **common, num_inputs=len(model.inputs), num_outputs=len(model.outputs),
        arena_formula=c_comment(arena["formula"]), arena_recorded=arena["recorded_bytes"],
        arena_smallest=arena["smallest_allocating_bytes"], arena_recommended=arena["recommended_bytes"],
        arena_host_proven=arena.get("host_recommended_bytes", arena["recommended_bytes"]),
        arena_note=c_comment(arena["note"]), arena_target_text=c_comment(arena.get("target_text") or
                                                                        "Not measured on a 32-bit target"),
        tensor_blocks="".join(blocks) + preprocessing_block(meta, upper),
        labels_source=c_comment(labels_source),
        num_classes=len(labels), labels_body="\n".join(f"  {c_string(x)}," for x in labels))

    methods = resolver_methods(model_operator_names(model))
    add_calls = "".join(_render("op_add_call.tmpl", method=m, op=op) for op, m in methods).rstrip("\n")
    files[fnames.op_resolver_h] = _render("op_resolver.h.tmpl", **common, op_count=len(methods),
                                          op_list=", ".join(op for op, _ in methods), add_calls=add_calls)
    files[fnames.main_cc] = _render("main.cc.tmpl", **common)
    return files


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_library(on_target: bool | None, tflm_dir, kernels: str, progress):
    """The TFLM library for the on-target arena measurement, or None when it is off or (auto) unavailable.

    An explicit ``tflm_dir`` makes the measurement required; with only ``$TOOLCHAIN_TFLM_DIR`` it is automatic."""
    from firmware_export.m4.tflm_lib import TFLM_DIR_ENV, tflm_library
    from firmware_export.m4.tools import tools_available
    from toolchain.errors import UsageError

    engine = {"reference": "tflm", "cmsis-nn": "cmsis-nn"}.get(kernels)
    if engine is None:
        raise UsageError("the target kernels must be reference or cmsis-nn", received=f"--kernels {kernels}")
    if on_target is False:
        return None
    if on_target is None and tflm_dir is None and not (tools_available() and os.environ.get(TFLM_DIR_ENV)):
        return None
    return tflm_library(tflm_dir, engine, progress)


def _measure_on_target(export_dir: Path, name: str, model, host_arena: int, lib, margin: float,
                       progress) -> dict[str, Any]:
    import tempfile

    from firmware_export.arena import round_up
    from firmware_export.m4.tflm_firmware import measure_target_arena
    from firmware_export.m4.tools import QEMU_MACHINE

    if progress:
        progress(f"measuring the arena on the emulated Cortex-M4F (TFLM {lib.flavour} kernels)")
    with tempfile.TemporaryDirectory(prefix="tflm_arena_") as work:
        run = measure_target_arena(export_dir, name, model, host_arena, lib, work)
    used, smallest = run.arena_used_bytes, run.smallest_arena_bytes
    base = max(used, smallest)
    recommended = max(round_up(base * (1.0 + margin / 100.0)), round_up(base))
    kernels = "TFLM + CMSIS-NN" if lib.flavour == "cmsis-nn" else "TFLM reference kernels"
    return {"used_bytes": used, "smallest_allocating_bytes": smallest, "recommended_bytes": recommended,
            "kernels": lib.flavour, "machine": QEMU_MACHINE, "cpu": "Cortex-M4F", "pointer_bits": 32,
            "instructions_per_inference_zero_input": run.instructions_per_inference,
            "formula": f"ceil16(max(arena_used_bytes {used}, smallest that allocates and runs {smallest}) on the "
                       f"Cortex-M4F ({kernels}) x (1 + {margin:g} %)) = {recommended} bytes",
            "text": f"On the 32-bit target (Cortex-M4F, {kernels}, QEMU {QEMU_MACHINE}): arena_used_bytes() = "
                    f"{used}, smallest arena that allocates and runs (bisected on the target) = {smallest}; host "
                    f"recommendation {host_arena} bytes"}


def export_tflm(model_path: str | os.PathLike, out_dir: str | os.PathLike, name: str | None = None,
                section: str | None = None, arena_margin: float = 10.0, target: str | None = None,
                force: bool = False, on_target: bool | None = None, tflm_dir: str | os.PathLike | None = None,
                target_kernels: str = "cmsis-nn", progress=None) -> dict[str, Any]:
    """Export ``model_path`` for TFLM into ``out_dir`` (atomically); returns the manifest dict.

    ``on_target``: also build the export against a TFLM tree (``tflm_dir`` / ``$TOOLCHAIN_TFLM_DIR``) with
    ``target_kernels`` (``reference`` or ``cmsis-nn``) for the Cortex-M4F, run it on QEMU and recommend the arena
    from ``arena_used_bytes()`` on that 32-bit target. ``None`` (default): when the Arm toolchain, QEMU and a tree
    are available; ``True``: required (RuntimeUnavailableError / UsageError otherwise); ``False``: host figure only.

    Raises ModelError (unreadable/corrupt model, or a sidecar ``NAME.json`` whose ``tflite_sha256`` is not this
    model's), ExportError (bad name/section, unsupported operator, model TFLM
    cannot allocate), UsageError (bad margin, unknown target, unwritable folder), OutputExistsError.
    """
    import toolchain
    from firmware_export.arena import DEFAULT_MARGIN_PCT, check_margin, measure_arena
    from firmware_export.model_input import is_float_model, load_export_model, quantise_hint
    from firmware_export.naming import export_name
    from firmware_export.op_resolver import model_operator_names, resolver_methods
    from firmware_export.targets import fit_report, get_target
    from toolchain.fsutil import check_output_dir, output_dir, sha256_bytes
    from toolchain.metadata import load_tflite_metadata

    # ---- validate everything before any work
    src = Path(model_path)
    model = load_export_model(src)
    cname = export_name(name, src.stem)
    section = _check_section(section)
    margin = check_margin(DEFAULT_MARGIN_PCT if arena_margin is None else arena_margin)
    board = get_target(target) if target else None
    check_output_dir(out_dir, force)
    if on_target is False and tflm_dir is not None:
        from toolchain.errors import UsageError

        raise UsageError("--tflm-dir is for the on-target measurement, which --host-only turns off",
                          received=f"--host-only --tflm-dir {tflm_dir}")
    meta = load_tflite_metadata(src)  # a sidecar that does not belong to this model is refused here, before work
    methods = resolver_methods(model_operator_names(model))
    if not model.inputs or not model.outputs:
        raise ExportError("the model has no inputs or no outputs", received=str(src))
    out0 = model.tensor(model.outputs[0])
    num_classes = int(out0.shape[-1]) if out0.shape else 1
    for kind, ids in (("Input", model.inputs), ("Output", model.outputs)):
        for i, t in enumerate(ids):
            _tensor_info(model.tensor(t), kind, i)

    warnings: list[str] = []
    if is_float_model(model):
        warnings.append("the model is not int8-quantised (float tensors): the export is valid for TFLM's float "
                        f"kernels but is about 4x larger and much slower on an MCU; {quantise_hint()}")

    from firmware_export.tflm_rules import int4_fully_connected_per_tensor, int4_scratch_bytes

    ok, reason = int4_fully_connected_per_tensor(model)
    if not ok:
        raise ExportError(reason, received=str(src))
    scratch, where = int4_scratch_bytes(model)
    if scratch:
        warnings.append(f"TFLM unpacks int4 weights into an arena scratch buffer of one byte per weight (largest "
                        f"{scratch:,} B, {where}): the arena below includes it; int4 halves the flash, not the RAM, "
                        "on TFLM (the C engine, --format c, keeps the weights packed)")

    # ---- measure
    m = measure_arena(src, margin)
    if not m.proven:
        raise ExportError("the recommended tensor arena did not allocate and run the model in tflite-micro",
                          received=f"{m.recommended_bytes} bytes")
    arena = m.to_dict()
    arena["host_recommended_bytes"] = m.recommended_bytes
    arena["formula"] = (f"ceil16(max(recorded {m.recorded_bytes}, smallest allocating {m.smallest_allocating_bytes})"
                        f" x (1 + {margin:g} %)) = {m.recommended_bytes} bytes")
    host_recommended = m.recommended_bytes
    labels, labels_source = _labels(meta, num_classes, warnings)
    sha = sha256_bytes(model.data)
    from toolchain.model_inspect import inspect_tflite

    totals = inspect_tflite(model).totals  # the same figures `toolchain inspect` prints
    texts = render_sources(model, cname, source_name=src.name, sha256=sha, section=section, arena=arena,
                           labels=labels, labels_source=labels_source, version=toolchain.__version__,
                           meta=meta)

    io_bytes = 0
    io = []
    for kind, ids in (("input", model.inputs), ("output", model.outputs)):
        for i, t in enumerate(ids):
            info = _tensor_info(model.tensor(t), kind, i)
            io_bytes += info["bytes"]
            io.append({k: info[k] for k in ("kind", "index", "name", "dtype", "shape", "bytes", "quantized",
                                             "scale", "zero_point")})

    required = on_target is True or tflm_dir is not None
    target_lib = _target_library(on_target, tflm_dir, target_kernels, progress)

    # ---- write atomically (the on-target measurement builds from the files in the temporary folder)
    files = []
    from toolchain.results import ExportManifest

    manifest: dict[str, Any] = {}
    with output_dir(out_dir, force) as tmp:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a source folder is as readable as any
        for fname, text in texts.items():
            (tmp / fname).write_text(text, encoding="utf-8")
        target_arena = None
        if target_lib is not None:
            try:
                target_arena = _measure_on_target(tmp, cname, model, host_recommended, target_lib, margin, progress)
            except ToolchainError as exc:
                if required:
                    raise
                warnings.append(f"the arena was not measured on the target (automatic, $TOOLCHAIN_TFLM_DIR): {exc}")
        if target_arena is not None:
            arena.update(recommended_bytes=target_arena["recommended_bytes"], formula=target_arena["formula"],
                         target_text=target_arena["text"])
            texts = render_sources(model, cname, source_name=src.name, sha256=sha, section=section, arena=arena,
                                   labels=labels, labels_source=labels_source, version=toolchain.__version__,
                                   meta=meta)
        fit = None
        if board is not None:  # from the target's arena when it was measured
            fit = fit_report(board, len(model.data), arena["recommended_bytes"], io_bytes, len(methods)).to_dict()
            if not fit["fits"]:
                warnings.append(f"the model does not fit {board.key}: flash {fit['flash_pct']:.1f} %, "
                                f"RAM {fit['ram_pct']:.1f} %")
        for w in warnings:
            log.warning(w)
        for fname, text in texts.items():
            data = text.encode("utf-8")
            (tmp / fname).write_bytes(data)
            files.append({"name": fname, "bytes": len(data), "sha256": sha256_bytes(data)})
        manifest = ExportManifest(
            format=MANIFEST_FORMAT,
            export="tflm",
            name=cname,
            source={"path": str(src), "file": src.name, "bytes": len(model.data), "sha256": sha},
            model_bytes=len(model.data),
            params=totals.params,
            macs=totals.macs,
            peak_activation_bytes=totals.peak_activation_bytes,
            section=section,
            alignment=16,
            operators=[op for op, _ in methods],
            op_resolver={"count": len(methods), "methods": [mm for _, mm in methods]},
            io=io,
            num_classes=num_classes,
            labels=labels,
            arena={
                "recorded_bytes": m.recorded_bytes,
                "smallest_allocating_bytes": m.smallest_allocating_bytes,
                "margin_pct": margin,
                "recommended_bytes": arena["recommended_bytes"],
                "recommended_from": "target" if target_arena else "host",
                "host_recommended_bytes": host_recommended,
                "target": target_arena,
                "proven": m.proven,
                "formula": arena["formula"],
                "head_bytes": m.head_bytes,
                "tail_bytes": m.tail_bytes,
                "host": m.host,
                "pointer_bits": m.pointer_bits,
                "runtime": f"tflite-micro {m.runtime_version}",
                "note": m.note,
            },
            target=fit,
            warnings=warnings,
            files=files,
            toolchain_version=toolchain.__version__
        ).to_json()
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
