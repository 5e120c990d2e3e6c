"""Generated C that reads well and errors that say what to do next: TFLM file names that do not repeat "model",
C-engine header scales with their decimal value, parenthesised negative macros, the preprocessing record in both
exports' headers, the C-name sanitisation said out loud, and one-line CLI errors (exit 2, nothing written) for a
Keras model, a float model given to the C engine and a file stem with no ASCII letter."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from firmware_export.naming import tflm_file_names
from toolchain.fsutil import sha256_file
from tests.helpers import REF_DIR, run_cli

HELLO = REF_DIR / "tflm__hello_world_int8.tflite"
GCC = shutil.which("gcc")
DIGITS_PRE = {"input_shape": [28, 28, 1], "scale": 1 / 16, "resize": "bilinear", "channels": "keep"}
DIGITS_NORM = {"scale": 1 / 16, "max_value": 16.0, "provenance": "dataset", "detail": "digits pixels 0..16"}


@pytest.fixture(autouse=True)
def _no_tflm_tree(monkeypatch):
    monkeypatch.delenv("TOOLCHAIN_TFLM_DIR", raising=False)


def _copy_hello(dst: Path) -> Path:
    if not HELLO.is_file():
        pytest.skip(f"reference model absent: {HELLO}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(HELLO, dst)
    return dst


def _one_line_error(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory):
    """A tiny Keras model saved as .keras, in a run folder, and converted to a float32 .tflite (no quantisation)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=(8, 8, 1), batch_size=1)
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inp, out)
    model.save(folder / "tiny.keras")
    (folder / "run").mkdir()
    shutil.copy(folder / "tiny.keras", folder / "run" / "model.keras")
    shutil.copy(folder / "tiny.keras", folder / "renamed.tflite")  # a zip archive whatever its name says
    (folder / "tiny_float.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return folder


# ------------------------------------------------------------------------------------------------ file names


def test_tflm_file_names_drop_the_model_infix_only_for_the_word_model():
    assert tflm_file_names("kws").names() == ["kws_model_data.h", "kws_model_data.c", "kws_model_config.h",
                                               "kws_op_resolver.h", "kws_main.cc"]
    assert tflm_file_names("model_int8").names() == ["model_int8_data.h", "model_int8_data.c", "model_int8_config.h",
                                                      "model_int8_op_resolver.h", "model_int8_main.cc"]
    assert tflm_file_names("model").data_c == "model_data.c"
    assert tflm_file_names("kws_ref_model").config_h == "kws_ref_model_config.h"
    assert tflm_file_names("Model_v2").data_h == "Model_v2_data.h"
    # "model" inside a word is not the word
    assert tflm_file_names("mymodel").data_c == "mymodel_model_data.c"
    assert tflm_file_names("models_v1").config_h == "models_v1_model_config.h"


@pytest.mark.skipif(not GCC, reason="gcc not installed")
def test_cli_export_of_model_int8_writes_names_without_repeats(tmp_path, capsys):
    src = _copy_hello(tmp_path / "runs" / "s1" / "model_int8.tflite")
    out = tmp_path / "fw"
    code, stdout, err = run_cli(["export", src, "--output", out, "--host-only"], capsys)
    assert code == 0, err
    expected = ["manifest.json", "model_int8_config.h", "model_int8_data.c", "model_int8_data.h",
                "model_int8_main.cc", "model_int8_op_resolver.h"]
    assert sorted(p.name for p in out.iterdir()) == expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(f["name"] for f in manifest["files"]) == expected[1:]
    assert "C name" not in err  # the stem is already the C name: nothing to report
    for f in expected[1:]:
        assert f in stdout  # the summary lists the files as written
    # the symbols keep TFLM's spelling; main.cc includes exactly the files that exist
    data_c = (out / "model_int8_data.c").read_text()
    assert "const unsigned char model_int8_model_data[MODEL_INT8_MODEL_DATA_LEN] = {" in data_c
    assert '#include "model_int8_data.h"' in data_c
    main_cc = (out / "model_int8_main.cc").read_text()
    assert sorted(re.findall(r'#include "(model_int8_\w+\.h)"', main_cc)) == ["model_int8_config.h",
                                                                             "model_int8_data.h",
                                                                             "model_int8_op_resolver.h"]
    assert 'records in its "Preprocessing" block' in main_cc and "model_int8_config.h" in main_cc
    probe = tmp_path / "probe.c"
    probe.write_text('#include "model_int8_data.h"\n#include "model_int8_config.h"\n'
                     "int main(void) { return (int)(model_int8_model_data_len != MODEL_INT8_MODEL_DATA_LEN)"
                     " + (int)(MODEL_INT8_INPUT_ZERO_POINT != -128); }\n")
    exe = tmp_path / "probe"
    subprocess.run([GCC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", str(out), str(probe),
                    str(out / "model_int8_data.c"), "-o", str(exe)], check=True, capture_output=True)
    assert subprocess.run([str(exe)]).returncode == 0


# ------------------------------------------------------------------------------------------------ headers


def _defines(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^#define (\w+)[ \t]+(.*)$", text, flags=re.M)}


def _block(text: str) -> str:
    m = re.search(r"^/\* Preprocessing.*?#define \w+_PREPROC_CHANNELS \"\w+\"\n", text, flags=re.M | re.S)
    assert m, text
    return m.group(0)


@pytest.mark.skipif(not GCC, reason="gcc not installed")
def test_c_engine_header_scales_negatives_and_preprocessing(tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter

    from firmware_export.cgen import build

    src = _copy_hello(tmp_path / "hw.tflite")
    (tmp_path / "hw.json").write_text(json.dumps({"preprocessing": DIGITS_PRE, "normalisation": DIGITS_NORM,
                                                  "tflite_sha256": sha256_file(src)}))
    code, _, err = run_cli(["export", src, "--output", tmp_path / "c", "--format", "c"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["export", src, "--output", tmp_path / "t", "--host-only"], capsys)
    assert code == 0, err
    header = (tmp_path / "c" / "hw.h").read_text()
    d = _defines(header)
    it = Interpreter(model_path=str(src))
    for prefix, det in (("INPUT", it.get_input_details()[0]), ("OUTPUT", it.get_output_details()[0])):
        scale, zp = det["quantization"]
        m = re.fullmatch(r"(0x[0-9a-f.]+p[-+]?\d+)f\s+/\* ([0-9.e-]+) \*/", d[f"HW_{prefix}_SCALE"])
        assert m, d[f"HW_{prefix}_SCALE"]
        assert np.float32(float.fromhex(m.group(1))) == np.float32(scale)   # the exact literal
        assert np.float32(float(m.group(2))) == np.float32(scale)           # the decimal round-trips to it
        assert d[f"HW_{prefix}_ZERO_POINT"] == f"({zp})"
    assert d["HW_INPUT_ZERO_POINT"] == "(-128)"  # hello_world's input zero point: a negative literal
    # no generated header of either export has a bare negative literal as a macro value
    for h in sorted((tmp_path / "c").glob("*.h")) + sorted((tmp_path / "t").glob("*.h")):
        bare = {k: v for k, v in _defines(h.read_text()).items() if v.startswith("-")}
        assert not bare, (h.name, bare)
    # the C engine's header carries the very preprocessing block of the TFLM config header
    block = _block(header)
    assert block == _block((tmp_path / "t" / "hw_model_config.h").read_text())
    assert "#define HW_PREPROC_RAW_SCALE 0.0625f\n" in block and "#define HW_PREPROC_RAW_MAX_VALUE 16.0f\n" in block
    assert "bilinear (half-pixel centres, as tf.image.resize) to 28x28x1" in block
    assert "dataset: digits pixels 0..16" in block and '#define HW_PREPROC_RESIZE "bilinear"' in block
    # it compiles warning-free, and the engine stays bit-exact (golden vectors from LiteRT)
    probe = tmp_path / "probe.c"
    probe.write_text('#include "hw.h"\nint probe(void);\nint probe(void) { return -HW_INPUT_ZERO_POINT + '
                     "(int)(HW_PREPROC_RAW_MAX_VALUE * HW_INPUT_SCALE) + (int)sizeof(HW_PREPROC_RESIZE); }\n")
    subprocess.run([GCC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "-I", str(tmp_path / "c"),
                    str(probe), "-o", str(tmp_path / "probe.o")], check=True, capture_output=True)
    res = build.run_host(build.build_host(tmp_path / "c", "hw"))
    assert res["mismatches"] == 0 and res["runs"] > 0


# ------------------------------------------------------------------------------------------------ C names


@pytest.mark.parametrize("fmt", ["tflm", "c"])
@pytest.mark.parametrize("given, ident, reason", [
    ("1abc", "model_1abc", "a C identifier cannot start with a digit, so 'model_' is prefixed"),
    ("my-model", "my_model", "characters other than ASCII letters, digits and '_' become '_'"),
])
def test_cli_says_when_name_is_sanitised(fmt, given, ident, reason, tmp_path, capsys):
    src = _copy_hello(tmp_path / "hw.tflite")
    out = tmp_path / "fw"
    extra = ["--format", "c"] if fmt == "c" else ["--host-only"]
    code, _, err = run_cli(["export", src, "--output", out, "--name", given, *extra], capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if "C name" in line]
    assert notes == [f"warning: C name '{ident}' (from --name '{given}': {reason})"], err
    files = {p.name for p in out.iterdir()}
    assert (f"{ident}.h" in files) if fmt == "c" else set(tflm_file_names(ident).names()) <= files
    assert json.loads((out / "manifest.json").read_text())["name"] == ident


def test_cli_says_when_the_file_stem_is_sanitised(tmp_path, capsys):
    src = _copy_hello(tmp_path / "tflm__hello-world.tflite")
    code, _, err = run_cli(["export", src, "--output", tmp_path / "fw", "--host-only"], capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if "C name" in line]
    assert len(notes) == 1, err
    assert notes[0].startswith("C name 'tflm_hello_world' (from the file stem 'tflm__hello-world': ")
    assert "become '_'" in notes[0] and "runs of '_' are merged" in notes[0]


@pytest.mark.parametrize("fmt", ["tflm", "c"])
def test_cli_unicode_only_stem_suggests_name(fmt, tmp_path, capsys):
    src = _copy_hello(tmp_path / "модель.tflite")
    out = tmp_path / "fw"
    code, _, err = run_cli(["export", src, "--output", out, *(["--format", "c"] if fmt == "c" else [])], capsys)
    line = _one_line_error(code, err)
    assert "no ASCII letter or digit" in line and "'модель'" in line and "--name" in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["модель.tflite"]


# ------------------------------------------------------------------------------------------------ Keras / float


@pytest.mark.parametrize("fmt", ["tflm", "c"])
@pytest.mark.parametrize("which", ["tiny.keras", "run", "renamed.tflite"])
def test_cli_keras_model_says_quantise_first(which, fmt, keras_models, tmp_path, capsys):
    src = keras_models / which
    out = tmp_path / "fw"
    code, _, err = run_cli(["export", src, "--output", out, *(["--format", "c"] if fmt == "c" else [])], capsys)
    line = _one_line_error(code, err)
    assert "takes a .tflite model, not a Keras model" in line
    int8 = src / "model_int8.tflite" if src.is_dir() else src.with_name(f"{src.stem}_int8.tflite")
    assert f"toolchain quantise {src} --output {int8}" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_float_model_to_c_engine_says_quantise_first(keras_models, tmp_path, capsys):
    out = tmp_path / "fw"
    code, _, err = run_cli(["export", keras_models / "tiny_float.tflite", "--output", out, "--format", "c"], capsys)
    line = _one_line_error(code, err)
    assert "the C engine runs int8-quantised models" in line
    assert "toolchain quantise MODEL.keras --output X.tflite" in line and "--format tflm" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []
