"""ds_cnn: MLPerf Tiny keyword-spotting reference (DS-CNN, Speech Commands MFCC 49x10x1, 12 classes).

Same layer structure as mlcommons/tiny benchmark/training/keyword_spotting/keras_model.py (``ds_cnn``):
Conv2D 64 (10x4) stride 2 same -> BN -> ReLU -> Dropout 0.2, then four depthwise-separable blocks
[DepthwiseConv 3x3 same -> BN -> ReLU -> Conv 1x1 64 -> BN -> ReLU], Dropout 0.4, AveragePooling over the
whole feature map (25x5 for the 49x10 input, as in the published int8 model), Flatten, Dense softmax.
Convolutions keep their bias, so after BN folding the int8 model has exactly the published 22,604 parameters
(2,656,768 MACs).
"""

from __future__ import annotations

from models import ModelSpec

SPEC = ModelSpec(
    name="ds_cnn",
    input_shape=(49, 10, 1),
    num_classes=12,
    task="classification",
    source="MLPerf Tiny keyword spotting reference (mlcommons/tiny, DS-CNN)",
    description="Depthwise-separable CNN for keyword spotting (MLPerf Tiny KWS)",
    options={"filters": 64, "blocks": 4},
    params=24_908,
    macs=2_656_768,
)


def build(input_shape, num_classes, filters=64, blocks=4):
    import keras
    from keras import layers, regularizers

    reg = regularizers.l2(1e-4)
    inputs = keras.Input(shape=input_shape, name="features")
    x = layers.Conv2D(filters, (10, 4), strides=(2, 2), padding="same", kernel_regularizer=reg, name="conv0")(inputs)
    x = layers.BatchNormalization(name="bn0")(x)
    x = layers.Activation("relu", name="relu0")(x)
    x = layers.Dropout(0.2, name="dropout0")(x)
    for i in range(1, int(blocks) + 1):
        x = layers.DepthwiseConv2D(kernel_size=(3, 3), depth_multiplier=1, padding="same",
                                   depthwise_regularizer=reg, name=f"dw{i}")(x)
        x = layers.BatchNormalization(name=f"dw{i}_bn")(x)
        x = layers.Activation("relu", name=f"dw{i}_relu")(x)
        x = layers.Conv2D(filters, (1, 1), padding="same", kernel_regularizer=reg, name=f"pw{i}")(x)
        x = layers.BatchNormalization(name=f"pw{i}_bn")(x)
        x = layers.Activation("relu", name=f"pw{i}_relu")(x)
    x = layers.Dropout(0.4, name="dropout1")(x)
    # Global average over the whole feature map: 25x5 for 49x10 input, as in the published int8 model.
    x = layers.AveragePooling2D(pool_size=(int(x.shape[1]), int(x.shape[2])), name="avg_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=SPEC.name)
