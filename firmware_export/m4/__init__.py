"""Firmware on the emulated Cortex-M4F (QEMU MPS2 AN386): the Arm tools and QEMU, the TFLM library built from a
TFLM tree, and the TFLM test firmware. The C engine's own builds live in ``firmware_export.cgen``."""
