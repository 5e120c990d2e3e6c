"""Render a verify report and look at report.html in a real headless browser (Debian ``chromium``).

    python benchmarks/report_screenshot.py [--report DIR | --reference R --candidate C [--on qemu-m4]
                                            [--firmware-from pipeline.json]] [--png OUT.png] [--width 1280]

* ``--report DIR``: re-render DIR/report.json with the current renderer (figures as recorded in that file);
* ``--reference/--candidate``: run ``verify`` on them (``--on qemu-m4`` also runs the samples through the C engine on
  the emulated Cortex-M4F); ``--firmware-from`` copies the ``firmware`` entry of a pipeline run on the same
  candidate (pipeline.json; its int8 size must equal the candidate's);
* neither: train a tiny CNN on the 8x8 digits (a few seconds), quantise it and verify it.

Then: ``chromium --headless --dump-dom`` of a copy of the page carrying a small script that writes the page's
``scrollWidth`` / ``scrollHeight`` into the DOM (at ``--width`` px), and ``chromium --headless --screenshot`` of the
page at ``--width`` x scrollHeight px, reduced to a 256-colour PNG. Prints a JSON summary; exits 1 when the page is
wider than the window (a horizontal scroll bar), 2 when chromium is missing.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MEASURE = ("<script>window.addEventListener('load',function(){var d=document.documentElement,"
           "m=document.createElement('pre');m.id='measure';m.textContent='MEASURE '+JSON.stringify("
           "{scroll_width:d.scrollWidth,scroll_height:d.scrollHeight,client_width:d.clientWidth});"
           "document.body.appendChild(m);});</script>")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _browser(exe: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000", *args],
                          capture_output=True, text=True, timeout=120)


def measure(exe: str, page: Path, width: int) -> dict:
    """scrollWidth / scrollHeight / clientWidth of ``page`` laid out in a ``width`` px wide window."""
    probe = page.with_name("_measure.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    try:
        out = _browser(exe, f"--window-size={width},900", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    m = re.search(r"MEASURE (\{.*?\})", out.stdout)
    if not m:
        raise SystemExit(f"no measurement in the dumped DOM: {out.stderr[-500:]}")
    return json.loads(m.group(1))


def screenshot(exe: str, page: Path, png: Path, width: int, height: int) -> None:
    out = _browser(exe, f"--screenshot={png}", f"--window-size={width},{height}", page.as_uri())
    if not png.is_file():
        raise SystemExit(f"chromium wrote no screenshot: {out.stderr[-500:]}")
    try:
        from PIL import Image
    except ImportError:
        return
    Image.open(png).convert("RGB").quantize(colors=256).save(png, optimize=True)


def tiny_models(work: Path) -> tuple[Path, Path]:
    """A small CNN trained 8 epochs on the 8x8 digits (as tests/test_verify.py builds it) and its int8 model."""
    import numpy as np

    import keras

    from toolchain.data import load_dataset
    from toolchain.quantise import QuantConfig, quantise

    ds = load_dataset("digits", seed=0)
    x = (ds.x_train.astype(np.float32) / 16.0).reshape(-1, 8, 8, 1)
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=(8, 8, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    h = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(h))
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, ds.y_train, epochs=8, batch_size=32, verbose=0)
    run = work / "tiny"
    run.mkdir(parents=True)
    model.save(run / "model.keras")
    meta = {"model": "tiny_cnn", "dataset": "digits", "labels": [str(i) for i in range(10)], "num_classes": 10,
            "preprocessing": {"input_shape": [8, 8, 1], "scale": 1.0 / 16.0, "resize": "none", "channels": "keep"},
            "input_shape": [8, 8, 1], "seed": 0, "split": {"val_fraction": 0.1, "test_fraction": 0.2},
            "params": int(model.count_params())}
    (run / "metadata.json").write_text(json.dumps(meta))
    quantise(run / "model.keras", work / "tiny_int8.tflite", config=QuantConfig(calibration_samples=100))
    return run / "model.keras", work / "tiny_int8.tflite"


def build_report(args, work: Path) -> Path:
    from toolchain.report import write_reports

    out = work / "report"
    if args.report:
        report = json.loads((Path(args.report) / "report.json").read_text())
    else:
        from toolchain.verify import VerifyOptions, verify

        ref, cand = (Path(args.reference), Path(args.candidate)) if args.candidate else tiny_models(work)
        runner = None
        if args.on:
            import functools

            from toolchain.ontarget import verify_on_target

            runner = functools.partial(verify_on_target, engine="c", tflm_dir=None, progress=None)
        opts = VerifyOptions(on_target=args.on, target_samples=args.samples if args.on else None)
        report = verify(ref, cand, opts, target_runner=runner).to_json()
        if args.firmware_from:
            summary = json.loads(Path(args.firmware_from).read_text())
            if summary.get("int8_tflite_bytes") != cand.stat().st_size:
                raise SystemExit(f"{args.firmware_from} describes another model "
                                 f"({summary.get('int8_tflite_bytes')} B, candidate {cand.stat().st_size} B)")
            report["firmware"] = summary["firmware"]
    write_reports(report, out)
    return out / "report.html"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", help="folder with a report.json to re-render")
    ap.add_argument("--reference")
    ap.add_argument("--candidate")
    ap.add_argument("--on", choices=["qemu-m4"])
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--firmware-from")
    ap.add_argument("--png", default=str(ROOT / "benchmarks" / "results" / "report_html.png"))
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--keep", help="copy the rendered report folder here")
    args = ap.parse_args(argv)
    exe = chromium()
    if exe is None:
        print("chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        page = build_report(args, Path(tmp))
        m = measure(exe, page, args.width)
        png = Path(args.png)
        png.parent.mkdir(parents=True, exist_ok=True)
        screenshot(exe, page, png, args.width, m["scroll_height"])
        if args.keep:
            shutil.copytree(page.parent, args.keep, dirs_exist_ok=True)
        version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    fits = m["scroll_width"] <= args.width
    print(json.dumps({"browser": version, "window_width": args.width, **m, "fits_width": fits, "png": str(png),
                      "png_bytes": png.stat().st_size}, indent=1))
    return 0 if fits else 1


if __name__ == "__main__":
    raise SystemExit(main())
