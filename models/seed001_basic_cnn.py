"""seed001_basic_cnn: the classic Keras MNIST CNN.

28x28x1: Conv2D 32 3x3 ReLU -> Conv2D 64 3x3 ReLU -> MaxPool 2x2 -> Flatten -> Dense 128 ReLU -> Dense 10 softmax.
Parameters: 320 + 18,496 + 1,179,776 + 1,290 = 1,199,882.
"""

from __future__ import annotations

from models import ModelSpec

SPEC = ModelSpec(
    name="seed001_basic_cnn",
    input_shape=(28, 28, 1),
    num_classes=10,
    task="classification",
    source="seed project: basic MNIST CNN (2 conv, max-pool, 2 dense)",
    description="Basic 2-conv CNN for 28x28 grayscale digits",
    params=1_199_882,
    macs=11_992_448,
)


def build(input_shape, num_classes):
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=SPEC.name)
