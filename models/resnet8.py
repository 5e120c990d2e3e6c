"""resnet8: MLPerf Tiny image-classification reference (ResNet-8 v1 from EEMBC, CIFAR-10, 32x32x3).

Same layer structure as mlcommons/tiny benchmark/training/image_classification/keras_model.py
(``resnet_v1_eembc`` with 16 base filters): a 3x3 conv stem, three residual stacks (16, 32, 64 filters; the
second and third downsample with stride 2 and a 1x1 stride-2 projection shortcut), average pool over the whole
map, Flatten, Dense softmax. Convolutions keep their bias (Keras default) and are followed by BatchNormalization,
so after BN folding the int8 model has exactly the published 77,706 parameters (12,501,632 MACs).
"""

from __future__ import annotations

from models import ModelSpec

SPEC = ModelSpec(
    name="resnet8",
    input_shape=(32, 32, 3),
    num_classes=10,
    task="classification",
    source="MLPerf Tiny image classification reference (mlcommons/tiny, ResNet-8 v1 EEMBC)",
    description="ResNet-8 for CIFAR-10 (MLPerf Tiny IC)",
    options={"base_filters": 16},
    params=78_666,
    macs=12_501_632,
)


def build(input_shape, num_classes, base_filters=16):
    import keras
    from keras import layers, regularizers

    def conv(filters, kernel, strides, name):
        return layers.Conv2D(filters, kernel_size=kernel, strides=strides, padding="same",
                             kernel_initializer="he_normal", kernel_regularizer=regularizers.l2(1e-4), name=name)

    inputs = keras.Input(shape=input_shape, name="image")
    x = conv(base_filters, 3, 1, "conv0")(inputs)
    x = layers.BatchNormalization(name="bn0")(x)
    x = layers.Activation("relu", name="relu0")(x)

    for stack, mult in enumerate((1, 2, 4), start=1):
        filters = base_filters * mult
        strides = 1 if stack == 1 else 2
        y = conv(filters, 3, strides, f"stack{stack}_conv1")(x)
        y = layers.BatchNormalization(name=f"stack{stack}_bn1")(y)
        y = layers.Activation("relu", name=f"stack{stack}_relu1")(y)
        y = conv(filters, 3, 1, f"stack{stack}_conv2")(y)
        y = layers.BatchNormalization(name=f"stack{stack}_bn2")(y)
        if stack > 1:
            # Projection shortcut: the identity path changes size with the stride-2 weight path.
            x = conv(filters, 1, strides, f"stack{stack}_shortcut")(x)
        x = layers.add([x, y], name=f"stack{stack}_add")
        x = layers.Activation("relu", name=f"stack{stack}_relu2")(x)

    pool_size = int(min(x.shape[1], x.shape[2]))
    x = layers.AveragePooling2D(pool_size=pool_size, name="avg_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, activation="softmax", kernel_initializer="he_normal",
                           name="predictions")(x)
    return keras.Model(inputs, outputs, name=SPEC.name)
