"""`toolchain convert` (float32 / float16 / dynamic-range TFLite) and `toolchain quantise` (full int8; alias
`quantize`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from toolchain.cli.app import app, console
from toolchain.errors import UsageError


def _dtypes_line(tensors: dict[str, Any]) -> str:
    ins = ", ".join(f"{t['dtype']}{list(t['shape'])}" for t in tensors["inputs"])
    outs = ", ".join(f"{t['dtype']}{list(t['shape'])}" for t in tensors["outputs"])
    counts = ", ".join(f"{k} x{v}" for k, v in tensors["tensor_dtypes"].items())
    return f"input {ins} -> output {outs}; tensors: {counts}"


def _weights_line(tensors: dict[str, Any]) -> str:
    w = ", ".join(f"{k} x{v}" for k, v in tensors["weight_dtypes"].items()) or "none constant"
    b = ", ".join(f"{k} x{v}" for k, v in tensors["bias_dtypes"].items()) or "none constant"
    return f"weights: {w}; biases: {b}"


@app.command("convert")
def convert_cmd(
    model: Path = typer.Argument(..., help="Keras model (.keras file or training run folder)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output .tflite (a sidecar .json is written next to it)."),
    precision: str = typer.Option("float32", "--precision", "-p", help="float32 | float16 | dynamic"),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite existing outputs."),
) -> None:
    """Convert a Keras model to TFLite without calibration data (fixed batch of 1).

    float32 is the reference conversion; float16 stores float16 weights; dynamic stores int8 weights with float
    activations (dynamic-range quantisation). For microcontrollers use `toolchain quantise` (full int8).

    Examples:

      toolchain convert runs/s1/model.keras --output out/s1_float.tflite

      toolchain convert runs/s1 --precision float16 --output out/s1_f16.tflite

      toolchain convert runs/s1/model.keras --precision dynamic --output out/s1_dyn.tflite --force
    """
    from toolchain.quantise import convert

    meta = convert(model, output, precision=precision, force=force)
    console.print(f"wrote {output} ({meta['size_bytes']:,} bytes, {meta['quantization']['scheme']}) "
                  f"and {Path(output).with_suffix('.json')}")
    console.print(_dtypes_line(meta["tensors"]))
    console.print(_weights_line(meta["tensors"]))


def _label(q: dict) -> str:
    """What the quantised model is called in the accuracy line."""
    return "int16x8" if q.get("activations") == "int16" else "int4-weight" if q.get("int4") else "int8"


def _quantise_impl(model: Path, output: Path, dataset: Optional[str], input_scale: Optional[float],
                   calibration_samples: int, per_tensor: bool, io: str, qat: bool, qat_epochs: int,
                   qat_learning_rate: float, allow_float_fallback: bool, seed: int, evaluate: bool,
                   force: bool, weights: str = "int8", int4_layers: Optional[str] = None,
                   keep_int8_layers: Optional[str] = None, activations: str = "int8") -> None:
    from toolchain.quantise import RANDOM_DATASET, QuantConfig, quantise
    from toolchain.specs import DatasetSpec

    if input_scale is not None:
        if dataset is None or dataset == RANDOM_DATASET:
            raise UsageError("--input-scale declares the normalisation of a --dataset source; pass --dataset SPEC",
                             received=f"--input-scale {input_scale:g}")
        dataset = DatasetSpec.parse(dataset, input_scale)

    config = QuantConfig(per_channel=not per_tensor, io_dtype=io, calibration_samples=calibration_samples, qat=qat,
                         qat_epochs=qat_epochs, allow_float_fallback=allow_float_fallback, seed=seed,
                         qat_learning_rate=qat_learning_rate, weights=weights, int4_layers=int4_layers,
                         keep_int8_layers=keep_int8_layers, activations=activations)
    meta = quantise(model, output, dataset=dataset, config=config, force=force, evaluate=evaluate)
    q = meta["quantization"]
    qat = f", QAT {q['qat_epochs']} epoch{'' if q['qat_epochs'] == 1 else 's'}" if q["qat"] else ""
    console.print(f"wrote {output} ({meta['size_bytes']:,} bytes, {q['scheme']}, "
                  f"{'per-channel' if q['per_channel'] else 'per-tensor'}, io {q['io_dtype']}{qat}) "
                  f"and {Path(output).with_suffix('.json')}")
    console.print(f"calibration: {q['calibration_samples']} samples from the {q['calibration_split']} split of "
                  f"{meta['dataset']}" + (f"; normalisation raw x {meta['normalisation']['scale']:.6g} "
                                          f"({meta['normalisation']['provenance']}: {meta['normalisation']['detail']})"
                                          if meta.get("normalisation") else ""))
    console.print(_dtypes_line(meta["tensors"]))
    console.print(_weights_line(meta["tensors"]))
    if q["float_ops"]:
        kept = ", ".join(f"{f['op']} (op {f['index']}{', layer ' + f['layer'] if f.get('layer') else ''})"
                         for f in q["float_ops"])
        console.print(f"float ops kept ({len(q['float_ops'])}): {kept}")
    if q.get("int4"):
        i4 = q["int4"]
        four = [e["layer"] for e in i4["layers"] if e["bits"] == 4]
        eight = [e["layer"] for e in i4["layers"] if e["bits"] != 4]
        console.print(f"int4 weights ({len(four)} layers, {i4['int4_weight_count']:,} weights, packed 2 per byte): "
                      + ", ".join(four) + (f"; int8 kept: {', '.join(eight)}" if eight else ""))
    if qat and q.get("qat_details", {}).get("not_annotated_layers"):
        console.print("QAT: not annotated: " + ", ".join(q["qat_details"]["not_annotated_layers"]))
    ev = meta.get("evaluation")
    if ev and "float_accuracy" in ev:
        console.print(f"test accuracy ({ev['samples']} samples): float {ev['float_accuracy'] * 100:.2f} % -> "
                      f"{_label(q)} {ev['tflite_accuracy'] * 100:.2f} % "
                      f"(drop {ev['accuracy_drop_pp']:+.2f} pp)")
    elif ev and "float_mse" in ev:
        console.print(f"test reconstruction MSE ({ev['samples']} samples): float {ev['float_mse']:.6g} -> "
                      f"{_label(q)} {ev['tflite_mse']:.6g}")
    elif evaluate:
        console.print("no test split available: accuracy not measured")


def _auto_impl(model, output, dataset, calibration_samples, per_tensor, io, seed, force, max_accuracy_drop, target,
               allow_qat, weights, int4_layers, keep_int8_layers, activations, qat) -> None:
    from toolchain.quant_auto import AutoOptions, auto_quantise
    from toolchain.quantise import QuantConfig

    if weights != "int8" or activations != "int8" or qat or int4_layers or keep_int8_layers:
        raise UsageError("--auto chooses the weights and activations itself; drop --weights, --activations, "
                         "--int4-layers, --keep-int8-layers and --qat (--allow-qat lets it try QAT)",
                         received="--auto with a fixed scheme")
    config = QuantConfig(per_channel=not per_tensor, io_dtype=io, calibration_samples=calibration_samples, seed=seed)
    meta = auto_quantise(model, output, dataset, config,
                         AutoOptions(max_accuracy_drop=1.0 if max_accuracy_drop is None else max_accuracy_drop, target=target, allow_qat=allow_qat),
                         force=force)
    a = meta["auto"]
    console.print(f"--auto: float {100 * a['float_val_accuracy']:.2f} % on the {a['samples']} validation samples; "
                  f"budget {a['max_accuracy_drop_pp']:g} pp" + (f"; board {a['target']}" if a["target"] else ""))
    w = max(len(c["name"]) for c in a["candidates"])
    console.print(f"  {'candidate':<{w}}  {'bytes':>10}  {'val acc':>8}  {'drop pp':>8}  {'C arena':>8}  "
                  f"{'TFLM arena':>10}  fit", markup=False)
    for c in a["candidates"]:
        fit = "–" if a["target"] is None else ("yes" if c["fits"] else "no")
        ca, ta = c.get("c_engine_arena_bytes"), c.get("tflm_arena_bytes")
        console.print(f"{'*' if c.get('chosen') else ' '} {c['name']:<{w}}  {c['bytes']:>10,}  "
                      f"{100 * c['val_accuracy']:>7.2f}%  {c['drop_pp']:>+8.2f}  "
                      f"{'–' if ca is None else f'{ca:,}':>8}  {'–' if ta is None else f'{ta:,}':>10}  {fit}",
                      markup=False)
    q = meta["quantization"]
    console.print(f"wrote {output} ({meta['size_bytes']:,} bytes, {q['scheme']}) and {Path(output).with_suffix('.json')}"
                  " (the table above is its 'auto' section)", markup=False)


_QUANTISE_DOC = """Quantise a Keras model to full-integer int8 TFLite for microcontrollers (fixed batch of 1).

    Calibration samples are drawn deterministically from the TRAINING split (stratified by class) with the
    preprocessing recorded at training time; the dataset defaults to the one in the run's metadata.json.
    `--dataset random` calibrates with uniform [0,1) samples (architecture checks only, no accuracy).
    Labels, preprocessing, source digest and the quantisation config go to OUT.json and into the .tflite
    metadata ("toolchain"). Same model + data + seed give byte-identical output. Accuracy of the float and the
    int8 model on the test split is printed (LiteRT).

    Examples:

      toolchain quantise runs/s1/model.keras --output out/s1_int8.tflite

      toolchain quantise runs/s1 --dataset digits --calibration-samples 500 --io float32 --output out/s1.tflite

      toolchain quantise runs/resnet8 --qat --qat-epochs 3 --output out/resnet8_qat.tflite

      toolchain quantise runs/s1 --per-tensor --io uint8 --output out/s1_pt.tflite --force

      toolchain quantise my.keras --dataset npz:data.npz --allow-float-fallback --output out/mixed.tflite

      toolchain quantise runs/s1 --weights int4 --keep-int8-layers 'conv1|predictions' --output out/s1_int4.tflite

      toolchain quantise runs/s1 --auto --max-accuracy-drop 0.5 --target nrf52840 --output out/s1_auto.tflite
    """


def _make_quantise_command(name: str, hidden: bool) -> None:
    def command(
        model: Path = typer.Argument(..., help="Keras model (.keras file or training run folder)."),
        output: Path = typer.Option(..., "--output", "-o", help="Output .tflite (sidecar .json next to it)."),
        dataset: Optional[str] = typer.Option(None, "--dataset", "-d",
                                              help="Calibration/evaluation data (default: the run's dataset): "
                                                   "digits | npz:PATH | idx:DIR | folder:DIR | keras:NAME | random"),
        input_scale: Optional[float] = typer.Option(None, "--input-scale",
                                                    help="Declare the data's normalisation: raw x SCALE = [0, 1] "
                                                         "value (default: the source's own or inferred)."),
        calibration_samples: int = typer.Option(300, "--calibration-samples", "-n",
                                                help="Calibration samples from the training split."),
        per_tensor: bool = typer.Option(False, "--per-tensor",
                                        help="Per-tensor weight scales (default: per-channel)."),
        io: str = typer.Option("int8", "--io", help="Input/output tensor type: int8 | uint8 | float32 (int16 "
                                                    "with --activations int16)."),
        qat: bool = typer.Option(False, "--qat", help="Quantisation-aware training before conversion."),
        qat_epochs: int = typer.Option(2, "--qat-epochs", help="QAT epochs on the training split."),
        qat_learning_rate: float = typer.Option(1e-4, "--qat-learning-rate", help="QAT Adam learning rate."),
        allow_float_fallback: bool = typer.Option(False, "--allow-float-fallback",
                                                  help="Keep ops without int8 kernels in float (mixed model)."),
        seed: int = typer.Option(0, "--seed", help="Seed for calibration sampling and QAT."),
        evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Measure float vs int8 test accuracy."),
        weights: str = typer.Option("int8", "--weights",
                                    help="Weight bits: int8 | int4 (packed two per byte, per-channel, int8 "
                                         "activations; CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED)."),
        int4_layers: Optional[str] = typer.Option(None, "--int4-layers",
                                                  help="With --weights int4: regex of the Keras layer names to "
                                                       "make int4 (default: every eligible layer)."),
        keep_int8_layers: Optional[str] = typer.Option(None, "--keep-int8-layers",
                                                       help="With --weights int4: regex of layer names that keep "
                                                            "int8 weights."),
        auto: bool = typer.Option(False, "--auto",
                                  help="Choose the scheme: the smallest of int8 / int4 (all or per layer, by "
                                       "measured sensitivity) / int16x8 within --max-accuracy-drop on the "
                                       "validation split (and fitting --target); every candidate is printed."),
        max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop",
                                                          help="With --auto: budget vs the float model, percentage "
                                                               "points (default 1.0)."),
        target: Optional[str] = typer.Option(None, "--target",
                                             help="With --auto: the chosen model must fit this board "
                                                  "(`toolchain targets`)."),
        allow_qat: bool = typer.Option(False, "--allow-qat", help="With --auto: also try QAT when int8 misses "
                                                                  "the budget."),
        activations: str = typer.Option("int8", "--activations",
                                        help="Activation bits: int8 | int16 (16x8: int16 activations, int8 "
                                             "weights, int16 I/O unless --io float32)."),
        force: bool = typer.Option(False, "--force", "-f", help="Overwrite existing outputs."),
    ) -> None:
        if auto:
            _auto_impl(model, output, dataset, calibration_samples, per_tensor, io, seed, force, max_accuracy_drop,
                       target, allow_qat, weights, int4_layers, keep_int8_layers, activations, qat)
            return
        for name, given in (("--max-accuracy-drop", max_accuracy_drop is not None), ("--target", target is not None),
                            ("--allow-qat", allow_qat)):
            if given:
                raise UsageError(f"{name} needs --auto", received=name)
        _quantise_impl(model, output, dataset, input_scale, calibration_samples, per_tensor, io, qat, qat_epochs,
                       qat_learning_rate, allow_float_fallback, seed, evaluate, force, weights, int4_layers,
                       keep_int8_layers, activations)

    command.__doc__ = _QUANTISE_DOC if name == "quantise" else "Alias of `quantise`.\n\n    " + _QUANTISE_DOC
    command.__name__ = f"{name}_cmd"
    app.command(name, hidden=hidden)(command)


_make_quantise_command("quantise", hidden=False)
_make_quantise_command("quantize", hidden=False)
