"""C identifiers for generated firmware sources.

``c_identifier(name)`` turns a file stem such as ``tflm__hello-world v2`` into a valid C/C++ identifier
(``tflm_hello_world_v2``) and refuses names that cannot be used as the prefix of the generated symbols:
C/C++ reserved words, names reserved for the implementation, and names that clash with identifiers the generated
code itself uses (``main``, ``tflite``, ``tensor_arena``, fixed-width integer types...).
``export_name(name, stem)`` does that for an export and logs the C name when it differs from what was given.

``tflm_file_names(name)`` is the one place that names the TFLM export's files (the exporter, its manifest, the
on-target harness and the tests all ask it). TFLM's examples call them ``NAME_model_data.c`` etc.; when NAME
already contains the word ``model`` as an ``_``-separated token (case-insensitive: ``model``, ``model_int8``,
``kws_ref_model``, ``Model_v2``, but not ``mymodel`` or ``models``) the ``_model`` infix is dropped so it does not
repeat:

    NAME = kws                    NAME = model_int8
    kws_model_data.h / .c         model_int8_data.h / .c      (the model as a C array)
    kws_model_config.h            model_int8_config.h         (shapes, quantisation, arena, preprocessing)
    kws_op_resolver.h             model_int8_op_resolver.h
    kws_main.cc                   model_int8_main.cc

Only the file names change: the symbols and macros keep TFLM's spelling for every NAME (``NAME_model_data[]``,
``NAME_model_data_len``, ``NAME_MODEL_DATA_LEN``, include guards ``NAME_MODEL_DATA_H_`` / ``NAME_MODEL_CONFIG_H_``),
so code that uses an export changes only its ``#include`` lines.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from toolchain.errors import ExportError

log = logging.getLogger("firmware_export")

MAX_NAME_LENGTH = 40  # longest generated symbol is NAME + "_model_data_len": stays within 63 significant chars

C_KEYWORDS = frozenset("""
auto break case char const continue default do double else enum extern float for goto if inline int long register
restrict return short signed sizeof static struct switch typedef union unsigned void volatile while _Alignas
_Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn _Static_assert _Thread_local
alignas alignof bool constexpr false nullptr static_assert thread_local true typeof typeof_unqual
""".split())

CXX_KEYWORDS = frozenset("""
and and_eq asm bitand bitor catch char8_t char16_t char32_t class compl concept consteval constinit const_cast
co_await co_return co_yield decltype delete dynamic_cast explicit export final friend import module mutable
namespace new noexcept not not_eq operator or or_eq override private protected public reinterpret_cast requires
static_cast template this throw try typeid typename using virtual wchar_t xor xor_eq
""".split())

RESERVED_WORDS = C_KEYWORDS | CXX_KEYWORDS

# Identifiers the generated sources (templates) and the headers they include already use: a NAME equal to one of
# them would shadow or redefine it.
GENERATED_CODE_IDENTIFIERS = frozenset("""
main tflite std TfLiteStatus TfLiteTensor kTfLiteOk kTfLiteError MicroPrintf GetModel MicroInterpreter
MicroMutableOpResolver TFLITE_SCHEMA_VERSION tensor_arena
int8_t uint8_t int16_t uint16_t int32_t uint32_t int64_t uint64_t size_t NULL errno assert lroundf
""".split())

# Suffixes appended to NAME by the generated files (lower-case symbols and upper-case macros).
SYMBOL_SUFFIXES = ("_model_data", "_model_data_len", "_labels", "_input_shape", "_output_shape", "_input_t",
                   "_output_t", "_OpResolver", "_RegisterOps")
MACRO_SUFFIXES = ("_MODEL_DATA_LEN", "_TENSOR_ARENA_SIZE", "_NUM_CLASSES", "_OP_COUNT", "_ALIGN16",
                  "_MODEL_SECTION", "_UNUSED", "_INPUT_SCALE", "_INPUT_ZERO_POINT", "_OUTPUT_SCALE",
                  "_OUTPUT_ZERO_POINT", "_MODEL_DATA_H_", "_MODEL_CONFIG_H_", "_OP_RESOLVER_H_")


def sanitise(name: str) -> str:
    """Replace every character that is not a letter, digit or underscore; never starts with a digit."""
    text = re.sub(r"[^A-Za-z0-9_]", "_", str(name))
    text = re.sub(r"_+", "_", text).strip("_")  # "__" anywhere is reserved in C++; leading "_X" in C
    if text and text[0].isdigit():
        text = "model_" + text
    return text


def generated_symbols(name: str) -> list[str]:
    """Every identifier the export generates for ``name``."""
    upper = name.upper()
    return [name + s for s in SYMBOL_SUFFIXES] + [upper + s for s in MACRO_SUFFIXES]


def c_identifier(name: str) -> str:
    """Sanitise ``name`` into a C identifier and refuse reserved words and clashes (ExportError)."""
    raw = str(name)
    ident = sanitise(raw)
    if not ident:
        raise ExportError("the model name has no ASCII letter or digit to build a C identifier from (C names "
                          "are ASCII)", received=repr(raw), hint="name the C symbols with --name, e.g. --name model")
    if len(ident) > MAX_NAME_LENGTH:
        raise ExportError(f"the C name is longer than {MAX_NAME_LENGTH} characters; pass a shorter --name",
                          received=f"{ident} ({len(ident)} characters)")
    if ident in RESERVED_WORDS:
        raise ExportError("the C name is a C/C++ reserved word; pass another --name", received=ident)
    if ident in GENERATED_CODE_IDENTIFIERS:
        raise ExportError("the C name clashes with an identifier used by the generated code; pass another --name",
                          received=ident)
    clash = sorted(set(generated_symbols(ident)) & (RESERVED_WORDS | GENERATED_CODE_IDENTIFIERS))
    if clash:
        raise ExportError("the C name produces symbols that clash with identifiers used by the generated code",
                          received=f"{ident} -> {', '.join(clash)}")
    return ident


def _sanitise_reasons(raw: str) -> list[str]:
    """Why ``sanitise(raw)`` differs from ``raw`` (the rules it applied, in order)."""
    reasons = []
    if re.search(r"[^A-Za-z0-9_]", raw):
        reasons.append("characters other than ASCII letters, digits and '_' become '_'")
    replaced = re.sub(r"[^A-Za-z0-9_]", "_", raw)
    if "__" in replaced or replaced != replaced.strip("_"):
        reasons.append("runs of '_' are merged and leading/trailing '_' dropped: '__' and a leading '_' are "
                       "reserved in C/C++")
    text = re.sub(r"_+", "_", replaced).strip("_")
    if text[:1].isdigit():
        reasons.append("a C identifier cannot start with a digit, so 'model_' is prefixed")
    return reasons


def export_name(name: str | None, stem: str) -> str:
    """The C name of an export: ``c_identifier`` of ``name`` (``--name``) or else of the model's file stem.

    When it differs from the text it was made from, says so in one log line (WARNING for an explicit ``--name``,
    INFO for the file stem): ``C name 'model_1abc' (from --name '1abc': ...)``."""
    raw = str(name if name is not None else stem)
    ident = c_identifier(raw)
    if ident != raw:
        origin = "--name" if name is not None else "the file stem"
        log.log(logging.WARNING if name is not None else logging.INFO, "C name %r (from %s %r: %s)", ident, origin,
                raw, "; ".join(_sanitise_reasons(raw)))
    return ident


@dataclass(frozen=True)
class TflmFiles:
    """The file names of a TFLM export of one C name (see the module docstring for the rule)."""

    data_h: str
    data_c: str
    config_h: str
    op_resolver_h: str
    main_cc: str

    def names(self) -> list[str]:
        return [self.data_h, self.data_c, self.config_h, self.op_resolver_h, self.main_cc]

    def template_values(self) -> dict[str, str]:
        """``${data_h}``, ``${data_c}``, ``${config_h}``, ``${op_resolver_h}``, ``${main_cc}`` for the templates."""
        return dict(vars(self))


def tflm_file_names(name: str) -> TflmFiles:
    """The TFLM export's file names for C name ``name``: ``NAME_model_data.c`` etc., or ``NAME_data.c`` etc. when
    ``name`` already has ``model`` as an ``_``-separated word."""
    stem = name if "model" in name.lower().split("_") else f"{name}_model"
    return TflmFiles(data_h=f"{stem}_data.h", data_c=f"{stem}_data.c", config_h=f"{stem}_config.h",
                     op_resolver_h=f"{name}_op_resolver.h", main_cc=f"{name}_main.cc")
