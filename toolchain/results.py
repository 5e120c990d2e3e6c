"""Typed results of the stages, each with ``to_json()`` (the JSON files the commands write and ``--json`` prints).

``VerifyReport`` (report.json), ``BenchResult`` (``toolchain bench`` on a host/device runtime),
``TargetBenchResult`` (``toolchain bench --runtime c-host|qemu-m4``), ``ExportManifest`` (TFLM export
manifest.json), ``EngineManifest`` (C-engine manifest.json) and ``PipelineSummary`` (pipeline.json).
``docs/report_schema.md`` documents every field; a test checks that the document and these classes agree.
Constructing a result with an unknown field is a TypeError, so a stage cannot write an undocumented key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


class _Result:
    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]


@dataclass
class VerifyReport(_Result):
    format: str
    toolchain_version: str
    created_utc: str
    task: str                                  # "classification" | "outputs"
    passed: bool
    samples: int
    dataset: dict[str, Any]
    reference: dict[str, Any] | None
    candidate: dict[str, Any]
    accuracy_drop_pp: float | None
    comparison: dict[str, Any] | None
    rows: list[dict[str, Any]]
    layer_errors: dict[str, Any]
    latency_ms: dict[str, Any]
    sizes: dict[str, Any]
    baseline: dict[str, Any] | None
    checks: list[dict[str, Any]]
    warnings: list[str]
    input_statistics: dict[str, Any]
    host: dict[str, Any]
    target: dict[str, Any] | None = None        # --on qemu-m4: the samples on the emulated Cortex-M4F
    footprint: dict[str, Any] | None = None     # what the footprint gates compare (verify.gates.footprint)
    firmware: dict[str, Any] | None = None      # the pipeline's board fit per engine (arena, flash, RAM, time)
    plots: list[str] = field(default_factory=list)


@dataclass
class BenchResult(_Result):
    model: str
    size_bytes: int
    runtime: str
    runtime_version: str
    threads: int | None
    runs: int
    warmup: int
    input: dict[str, Any]
    latency_ms: dict[str, float]
    throughput_per_s: float | None
    batch_throughput_per_s: float | None
    batch_samples: int | None
    batch_mode: str | None
    peak_rss_bytes: int
    host: dict[str, Any]
    batch_passes: int | None = None            # timed run_many passes behind batch_throughput_per_s


@dataclass
class TargetBenchResult(_Result):
    runtime: str                               # "c-host" | "qemu-m4"
    model: str
    name: str
    runs: int
    macs: int
    arena_bytes: int
    build_seconds: float
    outputs_match: bool
    mismatches: int
    latency_ms: float | None                   # c-host only (wall clock); QEMU counts instructions instead
    instructions_per_inference: int | None
    macs_per_instruction: float | None
    flash_bytes: int | None
    ram_bytes: int | None
    size_bytes: int | None = None
    firmware_flash_bytes: int | None = None
    static_ram_bytes: int | None = None
    stack_bytes: int | None = None
    sections: dict[str, int] | None = None
    emulation_seconds: float | None = None
    machine: str | None = None
    instructions_per_tick: int | None = None
    first_mismatch: str | None = None
    host: dict[str, Any] | None = None
    engine: str | None = None                  # qemu-m4: "c" | "tflm" | "cmsis-nn"
    engine_title: str | None = None
    arena_source: str | None = None            # "TFLM arena_used_bytes() on the 32-bit target" | "C engine ..."
    flash: dict[str, int] | None = None        # model, runtime, harness, firmware (bytes)
    reference: str | None = None               # the host reference the outputs were compared with
    identical_pct: float | None = None         # % of inputs whose outputs equal the reference's exactly
    max_lsb_diff: int | None = None
    input_source: str | None = None
    qemu_runs: int | None = None
    library: dict[str, Any] | None = None      # TFLM library: flavour, tree digest, cached
    board_time: dict[str, Any] | None = None   # instructions / board clock (a lower bound)


@dataclass
class ExportManifest(_Result):
    format: str
    export: str                                # "tflm"
    name: str
    source: dict[str, Any]
    model_bytes: int
    params: int
    macs: int
    peak_activation_bytes: int
    section: str | None
    alignment: int
    operators: list[str]
    op_resolver: dict[str, Any]
    io: list[dict[str, Any]]
    num_classes: int | None
    labels: list[str] | None
    arena: dict[str, Any]
    target: dict[str, Any] | None
    warnings: list[str]
    files: list[dict[str, Any]]
    toolchain_version: str


@dataclass
class EngineManifest(_Result):
    format: str                                # "c-engine"
    name: str
    source_model: str
    source_sha256: str
    tflite_bytes: int
    operators: list[str]
    layers: list[dict[str, Any]]
    macs: int
    weight_bytes: int
    input: dict[str, Any]
    output: dict[str, Any]
    arena_bytes: int
    memory_plan: dict[str, Any]
    tflm_arena: dict[str, Any] | None
    arena_vs_tflm: float | None
    golden_vectors: int
    golden_reference: str | None = None
    golden_note: str | None = None
    files: list[str] = field(default_factory=list)


@dataclass
class PipelineSummary(_Result):
    format: str
    toolchain_version: str
    created_utc: str
    model: str
    dataset: str
    epochs: int
    epochs_run: int | None
    samples: int
    float_accuracy: float | None
    int8_accuracy: float | None
    accuracy_drop_pp: float | None
    agreement: float | None
    params: int | None
    macs: int | None
    keras_bytes: int
    int8_tflite_bytes: int
    arena_bytes: int
    arena_recorded_bytes: int
    c_engine_arena_bytes: int | None
    latency_ms: dict[str, Any]
    target: str
    firmware: dict[str, Any]
    on_target: dict[str, Any] | None
    checks: list[dict[str, Any]]
    passed: bool
    stage_seconds: dict[str, float]
    artifacts: dict[str, str]
