"""Every zoo classifier, quantised to int8, runs bit-exact on the emulated Cortex-M4 (QEMU MPS2 AN386).

The host side of the same check is in test_cengine.py; this file adds the on-target half of the acceptance:
100 random inputs per model, outputs compared byte for byte with TFLM's reference kernels (``run_c_bench`` computes
the reference on the host through ``firmware_export.cgen.golden``)."""

from __future__ import annotations

import shutil

import pytest

from firmware_export.cgen.bench import run_c_bench
from firmware_export.cgen.zoo import quantise_random

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                       reason="needs arm-none-eabi-gcc and qemu-system-arm"),
]

# Golden inputs live in the firmware image (4 MB of flash on MPS2 AN386): a 200x200x3 model gets its 100 inputs in
# five firmware runs of 20 different inputs each.
BATCHES = {"seed000_face": 5}
ZOO_CLASSIFIERS = ["seed000_face", "seed001_basic_cnn", "seed002_keras_cnn", "seed003_fashion_cnn", "seed004_cs231n",
                   "resnet8", "ds_cnn", "mobilenet_v1_025"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_CLASSIFIERS)
def test_zoo_classifier_bit_exact_on_cortex_m4(name, tmp_path):
    model = quantise_random(name, tmp_path / f"{name}.tflite", seed=7)
    batches = BATCHES.get(name, 1)
    runs = 0
    for batch in range(batches):
        res = run_c_bench(model, runtime="qemu-m4", runs=100 // batches, seed=5 + batch, timeout=1500)
        assert res["outputs_match"], (batch, res.get("first_mismatch"))
        assert res["instructions_per_inference"] > 0
        runs += res["runs"]
    assert runs == 100
