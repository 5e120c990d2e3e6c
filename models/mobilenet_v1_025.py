"""mobilenet_v1_025: MLPerf Tiny visual-wake-words reference (MobileNetV1, width 0.25, 96x96x3, 2 classes).

Same layer structure as mlcommons/tiny benchmark/training/visual_wake_words/vww_model.py (``mobilenet_v1``):
a 3x3 stride-2 conv stem with 8 filters, 13 depthwise-separable blocks [DepthwiseConv 3x3 -> BN -> ReLU ->
Conv 1x1 -> BN -> ReLU] with pointwise widths 16, 32, 32, 64, 64, 128 x6, 256, 256 (stride 2 in blocks
2, 4, 6 and 12), average pool over the final map, Flatten, Dense softmax. Convolutions keep their bias, so after
BN folding the int8 model has exactly 210,850 parameters (7,489,664 MACs).
"""

from __future__ import annotations

from models import ModelSpec

SPEC = ModelSpec(
    name="mobilenet_v1_025",
    input_shape=(96, 96, 3),
    num_classes=2,
    task="classification",
    source="MLPerf Tiny visual wake words reference (mlcommons/tiny, MobileNetV1 alpha=0.25)",
    description="MobileNetV1 0.25 for person detection (MLPerf Tiny VWW)",
    params=221_794,
    macs=7_489_664,
)

# (pointwise filters, depthwise stride) for the 13 depthwise-separable blocks.
_BLOCKS = ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2),
           (128, 1), (128, 1), (128, 1), (128, 1), (128, 1), (256, 2), (256, 1))


def build(input_shape, num_classes):
    import keras
    from keras import layers, regularizers

    def reg():
        return regularizers.l2(1e-4)

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(8, kernel_size=3, strides=2, padding="same", kernel_initializer="he_normal",
                      kernel_regularizer=reg(), name="conv0")(inputs)
    x = layers.BatchNormalization(name="bn0")(x)
    x = layers.Activation("relu", name="relu0")(x)
    for i, (filters, stride) in enumerate(_BLOCKS, start=1):
        x = layers.DepthwiseConv2D(kernel_size=3, strides=stride, padding="same", depthwise_initializer="he_normal",
                                   depthwise_regularizer=reg(), name=f"dw{i}")(x)
        x = layers.BatchNormalization(name=f"dw{i}_bn")(x)
        x = layers.Activation("relu", name=f"dw{i}_relu")(x)
        x = layers.Conv2D(filters, kernel_size=1, strides=1, padding="same", kernel_initializer="he_normal",
                          kernel_regularizer=reg(), name=f"pw{i}")(x)
        x = layers.BatchNormalization(name=f"pw{i}_bn")(x)
        x = layers.Activation("relu", name=f"pw{i}_relu")(x)
    x = layers.AveragePooling2D(pool_size=(int(x.shape[1]), int(x.shape[2])), name="avg_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=SPEC.name)
