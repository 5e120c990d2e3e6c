"""`toolchain build-tflm`: the TFLM library for the Cortex-M4F, built from a TFLM source tree and cached."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from toolchain.cli.app import app, console, progress_printer
from toolchain.errors import UsageError


@app.command("build-tflm")
def build_tflm_cmd(
    tflm_dir: Optional[Path] = typer.Option(None, "--tflm-dir",
                                            help="TFLM source tree (create_tflm_tree.py layout with lists/; "
                                                 "default: $TOOLCHAIN_TFLM_DIR)."),
    kernels: str = typer.Option("all", "--kernels", help="reference | cmsis-nn | all."),
) -> None:
    """Build the TFLM library for the Cortex-M4F (reference and/or CMSIS-NN kernels), or find it in the cache.

    `bench --runtime qemu-m4 --engine tflm|cmsis-nn`, `verify --on qemu-m4` and `export --on-target` build it on
    first use; this command does it ahead (about 10 minutes per flavour on 2 cores). The cache is
    $TOOLCHAIN_CACHE_DIR (default ~/.cache/edge-ml-toolchain), keyed by the tree's digest, the flags and the
    compiler.

    Examples:

      toolchain build-tflm --tflm-dir ~/src/tflm-tree

      TOOLCHAIN_TFLM_DIR=~/src/tflm-tree toolchain build-tflm --kernels cmsis-nn
    """
    from firmware_export.m4.tflm_lib import FLAVOURS, TflmTree, build_library

    if kernels not in (*FLAVOURS, "all"):
        raise UsageError("--kernels must be reference, cmsis-nn or all", received=f"--kernels {kernels}")
    tree = TflmTree.open(tflm_dir)
    for flavour in FLAVOURS if kernels == "all" else (kernels,):
        lib = build_library(tree, flavour, progress=progress_printer())
        how = "cached" if lib.cached else f"built in {lib.build_seconds:.0f} s"
        console.print(f"TFLM {flavour} library ({how}): {lib.path}", markup=False)
