"""seed000_face: face / not-face classifier on a 200x200x3 RGB volume.

Four [Conv 3x3 -> ReLU -> MaxPool 2x2] stages (16, 32, 64, 64 filters), Flatten, Dense 64 ReLU, Dropout 0.5,
softmax over 2 classes. The input shape is overridable (e.g. 64x64x3 for quick tests).
"""

from __future__ import annotations

from models import ModelSpec

SPEC = ModelSpec(
    name="seed000_face",
    input_shape=(200, 200, 3),
    num_classes=2,
    task="classification",
    source="seed project: face detector ([conv-relu-pool] x4, dense, dropout, softmax)",
    description="Face / not-face binary classifier on 200x200 RGB",
    options={"filters": (16, 32, 64, 64), "dense_units": 64, "dropout": 0.5},
    params=470_306,
    macs=115_961_664,
)


def build(input_shape, num_classes, filters=(16, 32, 64, 64), dense_units=64, dropout=0.5):
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, activation="relu", name=f"conv{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=SPEC.name)
