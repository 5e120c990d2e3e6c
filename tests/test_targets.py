"""Board profiles (toolchain/targets.toml) and fit reports."""

from __future__ import annotations

import json
import tomllib

import pytest

from firmware_export.targets import TARGETS_FILE, fit_report, get_target, load_targets, runtime_estimates
from toolchain.errors import UsageError
from tests.helpers import run_cli

# Datasheet figures: (core, clock MHz, flash KB, RAM KB)
DATASHEET = {
    "nrf52840": ("Arm Cortex-M4F", 64, 1024, 256),
    "stm32l4r5zi": ("Arm Cortex-M4F", 120, 2048, 640),
    "stm32f746": ("Arm Cortex-M7F", 216, 1024, 320),
    "stm32h7a3zi": ("Arm Cortex-M7F", 280, 2048, 1376),
    "rp2040": ("dual Arm Cortex-M0+", 133, 2048, 264),
    "esp32s3": ("dual Xtensa LX7", 240, 8192, 512),
    "rpi4": ("quad Arm Cortex-A72", 1500, 16 * 1024 * 1024, 4 * 1024 * 1024),
}


def test_targets_file_is_valid_toml_with_required_boards():
    raw = tomllib.loads(TARGETS_FILE.read_text())
    assert set(DATASHEET) <= set(raw["boards"])
    boards = load_targets()
    for key, (core, mhz, flash, ram) in DATASHEET.items():
        t = boards[key]
        assert (t.core, t.clock_mhz, t.flash_kb, t.ram_kb) == (core, mhz, flash, ram)
        assert t.flash_bytes == flash * 1024 and t.ram_bytes == ram * 1024
        assert t.runtime in runtime_estimates()
    assert boards["rpi4"].runtime == "tflite-runtime"
    assert "Arduino Nano 33 BLE Sense" in boards["nrf52840"].display
    assert "MLPerf Tiny" in boards["stm32l4r5zi"].notes


@pytest.mark.parametrize("name,key", [("nrf52840", "nrf52840"), ("NRF52840", "nrf52840"), ("nano33ble", "nrf52840"),
                                      ("pico", "rp2040"), ("ESP32-S3", "esp32s3"), ("stm32_l4r5zi", "stm32l4r5zi"),
                                      ("raspberry-pi-4", "rpi4")])
def test_get_target_by_key_or_alias(name, key):
    assert get_target(name).key == key


def test_unknown_board_did_you_mean():
    with pytest.raises(UsageError) as exc:
        get_target("stm32f764")
    assert "did you mean stm32f746" in str(exc.value)
    with pytest.raises(UsageError) as exc:
        get_target("zzzzzz")
    assert "toolchain targets" in str(exc.value)


def test_fit_report_arithmetic():
    t = get_target("nrf52840")
    r = fit_report(t, model_bytes=100_000, arena_bytes=50_000, io_buffer_bytes=1_000, n_ops=5)
    est = runtime_estimates()["tflm"]
    assert r.runtime_estimate_bytes == int((est.core_kb + 5 * est.per_op_kb) * 1024) == (16 + 20) * 1024
    assert r.flash_bytes == 100_000 + 36 * 1024
    assert r.ram_bytes == 51_000
    assert r.flash_pct == round(100 * r.flash_bytes / (1024 * 1024), 2)
    assert r.ram_pct == round(100 * 51_000 / (256 * 1024), 2)
    assert r.fits and r.fits_flash and r.fits_ram
    text = "\n".join(r.lines())
    assert "FITS" in text and "estimate" in text and "I/O buffers" in text


def test_fit_report_does_not_fit():
    pico = get_target("rp2040")
    r = fit_report(pico, model_bytes=500_000, arena_bytes=300 * 1024, io_buffer_bytes=0, n_ops=3)
    assert r.fits_flash and not r.fits_ram and not r.fits
    assert "DOES NOT FIT" in r.lines()[0]
    r = fit_report(pico, model_bytes=3 * 1024 * 1024, arena_bytes=1024, io_buffer_bytes=0, n_ops=3)
    assert not r.fits_flash and r.fits_ram


def test_linux_target_counts_model_in_ram():
    r = fit_report(get_target("rpi4"), model_bytes=1_000_000, arena_bytes=10_000, io_buffer_bytes=100, n_ops=4)
    assert r.ram_bytes == 1_010_100
    assert r.runtime == "tflite-runtime" and r.fits




def test_cli_targets_lists_every_board(capsys):
    code, out, err = run_cli(["targets"], capsys)
    assert code == 0, err
    for key in DATASHEET:
        assert key in out
    assert "estimate" in out
    code, out, _ = run_cli(["targets", "--json"], capsys)
    data = json.loads(out)
    assert {b["key"] for b in data["boards"]} >= set(DATASHEET)
    assert data["runtime_estimates"]["tflm"]["core_kb"] == 16
