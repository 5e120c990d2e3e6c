"""`toolchain export` (TFLM C/C++ sources or the standalone C engine) and `toolchain targets` (board profiles)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from toolchain.cli.app import app, console, print_table
from toolchain.errors import UsageError

FORMATS = ("tflm", "c")


@app.command("export")
def export_cmd(
    model: Path = typer.Argument(..., help="The .tflite model to export (int8 expected; float works with a warning "
                                           "for tflm; a .keras needs `toolchain quantise` first)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (created; replaced only with --force)."),
    name: Optional[str] = typer.Option(None, "--name", help="C name prefix (default: the file stem, sanitised)."),
    section: Optional[str] = typer.Option(None, "--section",
                                          help="Linker section for the model array, e.g. .rodata.model (GCC/Clang)."),
    arena_margin: float = typer.Option(10.0, "--arena-margin", min=0.0,
                                       help="Headroom added to the measured tensor arena, in percent."),
    target: Optional[str] = typer.Option(None, "--target", help="Board profile for a fit report (see `toolchain targets`)."),
    fmt: str = typer.Option("tflm", "--format", help="tflm: C array + TFLM sources; c: standalone C engine."),
    on_target: Optional[bool] = typer.Option(None, "--on-target/--host-only",
                                             help="Also measure the arena on the emulated Cortex-M4F (TFLM built "
                                                  "from --tflm-dir, QEMU) and recommend from it. Default: when "
                                                  "arm-none-eabi-gcc, qemu-system-arm and a TFLM tree are there."),
    tflm_dir: Optional[Path] = typer.Option(None, "--tflm-dir",
                                            help="TFLM source tree (default: $TOOLCHAIN_TFLM_DIR)."),
    kernels: str = typer.Option("cmsis-nn", "--kernels",
                                help="TFLM kernels for the on-target measurement: cmsis-nn | reference."),
    max_bytes: Optional[int] = typer.Option(None, "--max-bytes", min=1,
                                            help="--format c: per-tensor byte limit of the model validation "
                                                 "(default 64 MiB for constant, 16 MiB for activation tensors)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Export a .tflite model as C/C++ sources for a microcontroller.

    --format tflm (default) writes NAME_model_data.c/.h (the model as a
    16-byte aligned const array, byte for byte), NAME_model_config.h
    (shapes, types, scale/zero-point, labels, recommended arena,
    preprocessing), NAME_op_resolver.h (a MicroMutableOpResolver with
    exactly the model's operators), NAME_main.cc (example) and
    manifest.json. A NAME with the word "model" in it drops the "_model"
    infix: model_int8_data.c, model_int8_config.h.

    The tensor arena is measured with the tflite-micro runtime (recorded
    total and smallest arena that allocates), the margin is added, and the
    result is proven by allocating and running the model in exactly that
    size. The 64-bit host figure is an upper bound for a 32-bit MCU.

    --format c writes the standalone C inference engine instead.

    Examples:

      toolchain export runs/demo/model_int8.tflite --output firmware/demo

      toolchain export kws.tflite -o fw/kws --name kws --target stm32l4r5zi

      toolchain export kws.tflite -o fw/kws --section .rodata.model --force

      toolchain export model.tflite --output fw/c --format c --force
    """
    if fmt not in FORMATS:
        raise UsageError("--format must be tflm or c", received=f"--format={fmt}")
    if fmt != "c" and max_bytes is not None:
        raise UsageError("--max-bytes applies to --format c only", received=f"--format={fmt} --max-bytes={max_bytes}")
    if fmt == "c":
        tflm_only = [opt for opt, given in (("--section", section is not None), ("--target", target is not None),
                                            ("--arena-margin", arena_margin != 10.0),
                                            ("--on-target/--host-only", on_target is not None),
                                            ("--tflm-dir", tflm_dir is not None),
                                            ("--kernels", kernels != "cmsis-nn")) if given]
        if tflm_only:
            raise UsageError(f"{', '.join(tflm_only)} {'applies' if len(tflm_only) == 1 else 'apply'} to "
                             f"--format tflm only",
                             received="--format=c " + " ".join(tflm_only))
        from firmware_export.cgen import generate_c_engine
        from firmware_export.model_input import load_export_model

        load_export_model(model)  # missing / directory / corrupt / Keras input: the same one-line errors as tflm

        result = generate_c_engine(model, output, name=name, force=force,
                                   **({"max_bytes": max_bytes} if max_bytes is not None else {}))
        if as_json:
            console.print(json.dumps(result, indent=2, default=str), markup=False)
        else:
            console.print(f"C engine written to {output}", markup=False)
            for f in result.get("files", []):
                label = f.get("name") if isinstance(f, dict) else str(f)
                console.print(f"  {label}", markup=False)
            facts = [f"{label} {result[key]:,}" for key, label in
                     (("weight_bytes", "weight bytes"), ("arena_bytes", "arena bytes"), ("macs", "MACs"))
                     if isinstance(result.get(key), int)]
            if facts:
                console.print(", ".join(facts), markup=False)
        return

    from firmware_export import export_tflm
    from toolchain.cli.app import progress_printer

    manifest = export_tflm(model, output, name=name, section=section, arena_margin=arena_margin, target=target,
                           force=force, on_target=on_target, tflm_dir=tflm_dir, target_kernels=kernels,
                           progress=progress_printer())
    if as_json:
        console.print(json.dumps(manifest, indent=2), markup=False)
        return
    for line in render_export_summary(manifest, output, host_only=on_target is False):
        console.print(line, markup=False)


def render_export_summary(manifest: dict, output: Path, host_only: bool = False) -> list[str]:
    a = manifest["arena"]
    lines = [f"exported {manifest['source']['file']} ({manifest['model_bytes']:,} bytes, sha256 "
             f"{manifest['source']['sha256'][:16]}...) as '{manifest['name']}' to {output}"]
    for f in manifest["files"]:
        lines.append(f"  {f['name']:<48} {f['bytes']:>10,} B")
    lines.append(f"operators ({manifest['op_resolver']['count']}): {', '.join(manifest['operators'])}")
    if manifest.get("params") is not None:
        lines.append(f"params {manifest['params']:,}, MACs {manifest['macs']:,}, peak activations "
                     f"{manifest['peak_activation_bytes']:,} B (computed from the model, as `toolchain inspect`)")
    host_rec = a.get("host_recommended_bytes", a["recommended_bytes"])
    lines.append(f"tensor arena (host): recorded {a['recorded_bytes']:,} B, smallest that allocates "
                 f"{a['smallest_allocating_bytes']:,} B, +{a['margin_pct']:g} % -> {host_rec:,} B "
                 f"({'proven: allocates and runs' if a['proven'] else 'NOT proven'})")
    lines.append(f"  {a['note']} [{a['host']}, {a['runtime']}]")
    t = a.get("target")
    if t:
        lines.append(f"tensor arena (target): arena_used_bytes {t['used_bytes']:,} B, smallest that allocates and "
                     f"runs {t['smallest_allocating_bytes']:,} B on the {t['cpu']} "
                     f"({'TFLM + CMSIS-NN' if t['kernels'] == 'cmsis-nn' else 'TFLM reference kernels'}, QEMU "
                     f"{t['machine']}), +{a['margin_pct']:g} % -> recommended {a['recommended_bytes']:,} B")
    elif host_only:
        lines.append(f"recommended arena: {a['recommended_bytes']:,} B (host figure, --host-only)")
    else:
        lines.append(f"recommended arena: {a['recommended_bytes']:,} B (host figure; not measured on a 32-bit "
                     "target: give --tflm-dir with the Arm toolchain and QEMU installed)")
    if manifest.get("target"):
        from firmware_export.targets import FitReport

        lines.extend(FitReport(**manifest["target"]).lines())
    return lines


@app.command("targets")
def targets_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print the board profiles as JSON."),
) -> None:
    """List the target boards known to `toolchain export --target`.

    Datasheet figures; flash and RAM are whole-chip budgets in KB (1024
    bytes). The runtime footprint in fit reports is an estimate (TFLM core
    + per-operator kernels), labelled as such.

    Examples:

      toolchain targets

      toolchain targets --json

      toolchain export model.tflite --output fw --target rp2040
    """
    from firmware_export.targets import load_targets, runtime_estimates

    boards = load_targets()
    if as_json:
        console.print(json.dumps({"boards": [t.to_dict() for t in boards.values()],
                                  "runtime_estimates": {k: vars(v) for k, v in runtime_estimates().items()}},
                                 indent=2), markup=False)
        return
    header = ("board", "core", "MHz", "flash KB", "RAM KB", "runtime", "description")
    body = [(t.key, t.core, f"{t.clock_mhz:g}", f"{t.flash_kb:,}", f"{t.ram_kb:,}", t.runtime, t.display)
            for t in boards.values()]
    print_table(header, body, right={2, 3, 4})
    for key, est in runtime_estimates().items():
        console.print(f"runtime estimate '{key}': {est.core_kb:g} KB + {est.per_op_kb:g} KB per operator "
                      f"({est.source})", markup=False)
