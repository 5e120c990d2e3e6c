"""seed004_cs231n: the CS231n / LeNet-style CIFAR network on 32x32x3.

First layer: six 5x5 filters, stride 1, no padding -> 28x28x6; then ReLU, MaxPool 2 -> 14x14x6,
Conv 16 5x5 ReLU -> 10x10x16, MaxPool 2 -> 5x5x16, Flatten, Dense 120 ReLU, Dense 84 ReLU, Dense softmax.
"""

from __future__ import annotations

from models import ModelSpec

SPEC = ModelSpec(
    name="seed004_cs231n",
    input_shape=(32, 32, 3),
    num_classes=10,
    task="classification",
    source="seed project: CS231n conv layer example (6 filters 5x5, stride 1, no padding) + LeNet head",
    description="LeNet-style CNN for 32x32 RGB (CIFAR-10)",
    params=62_006,
    macs=651_720,
)


def build(input_shape, num_classes):
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(6, 5, strides=1, padding="valid", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(16, 5, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(120, activation="relu", name="dense1")(x)
    x = layers.Dense(84, activation="relu", name="dense2")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=SPEC.name)
