"""TFLite builtin operator names -> ``tflite::MicroMutableOpResolver`` ``AddXxx()`` method names.

The table follows ``tensorflow/lite/micro/micro_mutable_op_resolver.h`` in tflite-micro. An operator that is not
in it (or a custom operator) cannot be registered by the generated resolver: ``resolver_methods`` raises
:class:`ExportError` naming it.
"""

from __future__ import annotations

from toolchain.errors import ExportError

TFLM_ADD_METHODS: dict[str, str] = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "ELU": "AddElu",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MAXIMUM": "AddMaximum",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable",
    "REDUCE_MAX": "AddReduceMax",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile",
    "ZEROS_LIKE": "AddZerosLike",
}


def resolver_methods(opcode_names: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """``[(op_name, AddMethod), ...]`` for the model's unique operators, sorted by op name.

    Raises ExportError naming every operator the TFLM resolver cannot register.
    """
    names = sorted(set(opcode_names))
    unknown = [n for n in names if n not in TFLM_ADD_METHODS]
    if unknown:
        raise ExportError("the model uses operators that TFLM's MicroMutableOpResolver cannot register "
                          "(custom or unsupported ops)", received=", ".join(unknown),
                          hint="re-convert the model using builtin operators that TFLM implements")
    return [(n, TFLM_ADD_METHODS[n]) for n in names]


def model_operator_names(model) -> list[str]:
    """Sorted unique operator names of every subgraph (control-flow bodies included) of a parsed TFLiteModel."""
    names = set(model.opcode_names())
    if getattr(model, "num_subgraphs", 1) > 1:
        import tflite

        from toolchain.errors import ModelError

        try:
            root = tflite.Model.GetRootAsModel(model.data, 0)
            table = tflite.utils.BUILTIN_OPCODE2NAME
            codes = []
            for i in range(root.OperatorCodesLength()):
                oc = root.OperatorCodes(i)
                code = max(int(oc.DeprecatedBuiltinCode()), int(oc.BuiltinCode()))
                if code == tflite.BuiltinOperator.CUSTOM:
                    codes.append((oc.CustomCode() or b"CUSTOM").decode("utf-8", "replace"))
                else:
                    codes.append(table.get(code, f"BUILTIN_{code}"))
            for s in range(root.SubgraphsLength()):
                sg = root.Subgraphs(s)
                for j in range(sg.OperatorsLength()):
                    names.add(codes[sg.Operators(j).OpcodeIndex()])
        except (IndexError, ValueError, TypeError, AttributeError) as exc:
            raise ModelError("not a valid TFLite flatbuffer (corrupt subgraph operators)",
                             received=f"{model.path}: {type(exc).__name__}") from exc
    return sorted(names)
