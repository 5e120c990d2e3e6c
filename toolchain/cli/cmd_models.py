"""`toolchain models`: list the model zoo with measured parameter and MAC counts."""

from __future__ import annotations

import json
from typing import Optional

import typer

from toolchain.cli.app import app, console, print_table


def zoo_table(names: list[str] | None = None) -> list[dict]:
    """One row per zoo model: its spec, with the params and MACs recorded for the default build (a test builds every
    model and checks them), so listing the zoo needs no TensorFlow."""
    import models

    return [spec.to_dict() for spec in models.list_specs() if not names or spec.name in names]


@app.command("models")
def models_cmd(
    name: Optional[str] = typer.Argument(None, help="Show only this model."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """List the model zoo: name, input shape, classes, task, parameters and MACs (of the default build; checked against the built Keras model by the tests).

    Parameters are the Keras count (batch-norm layers included); MACs count conv, depthwise and dense
    multiply-accumulates for one inference.

    Examples:

      toolchain models

      toolchain models resnet8

      toolchain models --json
    """
    import models

    if name is not None:
        models.get_spec(name)  # unknown name -> ModelError with "did you mean"
    rows = zoo_table([name] if name else None)
    if as_json:
        console.print(json.dumps(rows, indent=2), markup=False)
        return
    header = ("name", "input", "classes", "task", "params", "MACs")
    body = [(r["name"], "x".join(map(str, r["input_shape"])), str(r["num_classes"] or "-"), r["task"],
             f"{r['params']:,}", f"{r['macs']:,}") for r in rows]
    print_table(header, body, right={2, 4, 5})
    if name is not None:
        r = rows[0]
        console.print(f"\n{r['description']}\nsource: {r['source']}", markup=False)
        if r["options"]:
            opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
            console.print(f"builder options: {opts}", markup=False)
    else:
        console.print("params: Keras count incl. batch-norm; MACs: conv/depthwise/dense multiply-accumulates "
                      "per inference", markup=False)
