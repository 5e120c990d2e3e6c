"""``toolchain datasets``: list the data set sources, or load one spec and show its splits."""

from __future__ import annotations

import json
from typing import Optional

import typer

from toolchain.cli.app import app, console


@app.command("datasets")
def datasets(
    spec: Optional[str] = typer.Argument(
        None, help="Optional data set spec to load and summarise (digits, npz:PATH, idx:DIR, folder:DIR, keras:NAME)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the stratified train/validation/test split."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Fraction of the training part used for validation."),
    test_fraction: float = typer.Option(0.2, "--test-fraction",
                                        help="Fraction held out for test when the source has no test split."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List the data set sources and whether each is available offline now; with SPEC, load it and show the splits.

    Nothing is ever downloaded: keras:NAME only reads files already in the Keras cache ($KERAS_HOME/datasets or
    ~/.keras/datasets).

    **Examples**

        toolchain datasets

        toolchain datasets digits

        toolchain datasets npz:data/my_data.npz --seed 1 --json

        toolchain datasets idx:~/data/fashion --val-fraction 0.15
    """
    from toolchain import data

    if spec is None:
        rows = data.list_datasets()
        if as_json:
            console.print(json.dumps(rows, indent=2), markup=False)
            return
        width = max(len(r["spec"]) for r in rows)
        console.print(f"{'SOURCE':<{width}}  OFFLINE  DESCRIPTION", markup=False)
        for r in rows:
            offline = "yes" if r["offline"] else "no"
            console.print(f"{r['spec']:<{width}}  {offline:<7}  {r['description']} [{r['detail']}]", markup=False)
        return
    ds = data.load_dataset(spec, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    summary = ds.summary()
    if as_json:
        console.print(json.dumps(summary, indent=2), markup=False)
        return
    counts = {part: [int((y == k).sum()) for k in range(ds.num_classes)]
              for part, y in (("train", ds.y_train), ("val", ds.y_val), ("test", ds.y_test))}
    console.print(f"data set     {summary['spec']}", markup=False)
    console.print(f"samples      {tuple(summary['sample_shape'])} {summary['dtype']}, max value {summary['max_value']:g}",
                  markup=False)
    console.print(f"classes      {ds.num_classes}: {', '.join(ds.labels)}", markup=False)
    console.print(f"split        train {summary['train']}, val {summary['val']}, test {summary['test']} "
                  f"(seed {seed}, test from {summary['split']['test_source']})", markup=False)
    for part, c in counts.items():
        console.print(f"{part:<12} per class {c}", markup=False)
