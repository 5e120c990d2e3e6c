"""seed002_keras_cnn: deeper 5x5 CNN for 28x28x1.

Conv2D 32 5x5 same ReLU -> MaxPool 2/2 -> Conv2D 64 5x5 -> Conv2D 128 5x5 -> Conv2D 64 5x5 (valid, ReLU)
-> MaxPool 2/2 -> Flatten -> Dense 1024 ReLU -> Dropout 0.1 -> Dense 10 softmax.
Spatial sizes at 28x28: 28 -> 14 -> 10 -> 6 -> 2 -> 1.
"""

from __future__ import annotations

from models import ModelSpec

SPEC = ModelSpec(
    name="seed002_keras_cnn",
    input_shape=(28, 28, 1),
    num_classes=10,
    task="classification",
    source="seed project: Keras 5x5 CNN (4 conv, 2 pool, dense 1024, dropout)",
    description="4-conv 5x5 CNN with a 1024-unit dense layer",
    params=538_698,
    macs=14_014_976,
)


def build(input_shape, num_classes):
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, strides=2, name="pool1")(x)
    x = layers.Conv2D(64, 5, activation="relu", name="conv2")(x)
    x = layers.Conv2D(128, 5, activation="relu", name="conv3")(x)
    x = layers.Conv2D(64, 5, activation="relu", name="conv4")(x)
    x = layers.MaxPooling2D(2, strides=2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1024, activation="relu", name="dense")(x)
    x = layers.Dropout(0.1, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=SPEC.name)
