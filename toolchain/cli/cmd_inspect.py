"""`toolchain inspect`: per-layer / per-operator shapes, parameters, MACs, dtypes, quantisation and memory."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from toolchain.cli.app import app, console


def _fmt_shape(shapes: list[list[int | None]]) -> str:
    return " ".join("[" + ",".join("?" if d is None else str(d) for d in s) + "]" for s in shapes)


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1024 * 1024:
        return f"{n:,} B ({n / 1024 / 1024:.2f} MiB)"
    if n >= 1024:
        return f"{n:,} B ({n / 1024:.1f} KiB)"
    return f"{n:,} B"


def _short_options(opts: dict) -> str:
    parts = []
    if "filter_height" in opts:
        parts.append(f"filter {opts['filter_height']}×{opts['filter_width']}")
    if "stride_h" in opts:
        parts.append(f"stride {opts['stride_h']}×{opts['stride_w']}")
    if "padding" in opts:
        parts.append(str(opts["padding"]))
    if opts.get("depth_multiplier", 1) not in (1, None):
        parts.append(f"depth×{opts['depth_multiplier']}")
    if opts.get("dilation_h_factor", 1) != 1 or opts.get("dilation_w_factor", 1) != 1:
        parts.append(f"dilation {opts['dilation_h_factor']}×{opts['dilation_w_factor']}")
    act = opts.get("fused_activation_function")
    if act and act != "NONE":
        parts.append(str(act))
    if "new_shape" in opts:
        parts.append("→ [" + ",".join(map(str, opts["new_shape"])) + "]")
    if "rank" in opts:
        parts.append(f"rank {opts['rank']}")
    if "beta" in opts and opts["beta"] != 1.0:
        parts.append(f"beta {opts['beta']:g}")
    return " ".join(parts)


def _render(result) -> None:
    from rich.table import Table

    from rich.console import Console

    # full-width tables when the output is a file or pipe (rich would assume 80 columns)
    out = console if console.is_terminal else Console(width=200, highlight=False)

    t = result.totals
    kind = "TFLite" if result.format == "tflite" else "Keras"
    console.print(f"[bold]{result.name}[/bold] ({kind}{', ' + result.source if result.source else ''})")
    for label, items in (("inputs", result.inputs), ("outputs", result.outputs)):
        for item in items:
            q = item.get("quantization")
            qtxt = f", {q['summary']}" if q else ""
            console.print(f"  {label[:-1]}: {item['name']} {_fmt_shape([item['shape']])} {item['dtype']}{qtxt}",
                          markup=False)

    table = Table(title_justify="left", show_lines=result.format == "keras")
    table.add_column("#", justify="right", no_wrap=True)
    if result.format == "tflite":
        table.add_column("operator", no_wrap=True)
    else:
        table.add_column("layer")
        table.add_column("type")
    table.add_column("output", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("MACs", justify="right", no_wrap=True)
    table.add_column("weight B", justify="right", no_wrap=True)
    table.add_column("options" if result.format == "tflite" else "formulas")
    for r in result.layers:
        params = f"{r.params:,}" if r.params else ("-" if not r.other_params else f"({r.other_params:,})")
        macs = f"{r.macs:,}" if r.macs else ("-" if not r.other_macs else f"({r.other_macs:,})")
        extra = _short_options(r.options) if result.format == "tflite" else "\n".join(r.formulas)
        name_cols = [r.type] if result.format == "tflite" else [r.name, r.type]
        table.add_row(str(r.index), *name_cols, _fmt_shape(r.output_shape), r.dtypes, params, macs,
                      f"{r.weight_bytes:,}" if r.weight_bytes else "-", extra)
    out.print(table)

    if result.format == "tflite":
        tt = Table(title="tensors", title_justify="left")
        for col, just in (("#", "right"), ("name", "left"), ("shape", "left"), ("dtype", "left"),
                          ("kind", "left"), ("bytes", "right"), ("quantization", "left")):
            tt.add_column(col, justify=just, no_wrap=col not in ("name", "quantization"))
        inputs = {i["index"] for i in result.inputs}
        outputs = {i["index"] for i in result.outputs}
        for info in result.tensors:
            kind_ = ("input" if info["index"] in inputs else "output" if info["index"] in outputs
                     else "state" if info["variable"] else "const" if info["constant"] else "activation")
            q = info["quantization"]
            name = info["name"] if len(info["name"]) <= 48 else info["name"][:45] + "..."
            tt.add_row(str(info["index"]), name, _fmt_shape([info["shape"]]), info["dtype"], kind_,
                       f"{info['bytes']:,}", q["summary"] if q else "-")
        out.print(tt)

    console.print("[bold]totals[/bold]")
    if result.format == "keras":
        console.print(f"  parameters:            {t.params:,} (Keras count_params)")
        console.print(f"  conv/dense parameters: {t.conv_fc_params:,}" +
                      (f"  (+ {t.bn_params:,} BatchNormalization, folded on conversion)" if t.bn_params else ""))
    else:
        console.print(f"  parameters:            {t.params:,} (conv/depthwise/FC weights + biases)")
        if t.other_params:
            console.print(f"  other weights:         {t.other_params:,} (SVDF etc., {t.other_macs:,} MACs)")
    console.print(f"  MACs:                  {t.macs:,}")
    console.print(f"  model size:            {_fmt_bytes(t.model_bytes)}")
    console.print(f"  weight bytes:          {_fmt_bytes(t.weight_bytes)}")
    console.print(f"  peak activations:      {_fmt_bytes(t.peak_activation_bytes)} (at {t.peak_at})"
                  + ("  [batch 1]" if result.format == "keras" else ""), markup=False)
    if t.state_bytes:
        console.print(f"  state (variables):     {_fmt_bytes(t.state_bytes)}")
    for note in result.notes if result.format == "tflite" else []:
        console.print(f"  note: {note}", markup=False)


@app.command("inspect")
def inspect_cmd(
    path: Path = typer.Argument(..., help="Model file: .keras (or a run folder with model.keras) or .tflite."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document instead of tables."),
) -> None:
    """Show per-layer (Keras) or per-operator (TFLite) output shapes, parameters, MACs and dtypes; for TFLite
    also every tensor's scale/zero point and the weight bytes; totals incl. peak activation memory.

    Parameters and MACs count convolution, depthwise and fully-connected layers (weights + biases).

    Keras: parameters = count_params(), BatchNormalization listed separately (it folds on conversion).

    Keras convolutions show (N − F + 2P)/S + 1 and (F·F·D + 1)·K with their own numbers.

    Examples:

      toolchain inspect runs/demo/model.keras

      toolchain inspect runs/demo/model_int8.tflite

      toolchain inspect model_int8.tflite --json > report.json
    """
    from toolchain.model_inspect import inspect_model

    result = inspect_model(path)
    if as_json:
        console.print(json.dumps(result.to_dict(), indent=2), markup=False, highlight=False, soft_wrap=True)
        return
    _render(result)
