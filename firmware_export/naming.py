"""C identifiers for generated firmware sources.

``c_identifier(name)`` turns a file stem such as ``tflm__hello-world v2`` into a valid C/C++ identifier
(``tflm_hello_world_v2``) and refuses names that cannot be used as the prefix of the generated symbols:
C/C++ reserved words, names reserved for the implementation, and names that clash with identifiers the generated
code itself uses (``main``, ``tflite``, ``tensor_arena``, fixed-width integer types...).
"""

from __future__ import annotations

import re

from toolchain.errors import ExportError

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
        raise ExportError("the model name has no letter or digit to build a C identifier from; pass --name",
                          received=repr(raw))
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
