"""seed003_fashion_cnn: configurable CNN for 28x28x1 (Fashion-MNIST style).

input -> [Conv 3x3 same -> ReLU -> MaxPool 2x2] x conv_blocks -> Flatten -> [Dense -> ReLU -> Dropout] x dense_blocks
-> Dense softmax. Filters double per block starting at ``base_filters``.
"""

from __future__ import annotations

from models import ModelSpec

SPEC = ModelSpec(
    name="seed003_fashion_cnn",
    input_shape=(28, 28, 1),
    num_classes=10,
    task="classification",
    source="seed project: Fashion-MNIST CNN ([conv-relu-pool] x n, [dense-dropout] x m)",
    description="Configurable [conv-pool] x n + [dense-dropout] x m CNN",
    options={"conv_blocks": 2, "dense_blocks": 1, "base_filters": 32, "dense_units": 128, "dropout": 0.3},
    params=421_642,
    macs=4_241_152,
)


def build(input_shape, num_classes, conv_blocks=2, dense_blocks=1, base_filters=32, dense_units=128, dropout=0.3):
    import keras
    from keras import layers

    if int(conv_blocks) < 1 or int(dense_blocks) < 0:
        raise ValueError(f"conv_blocks must be >= 1 and dense_blocks >= 0 (got {conv_blocks}, {dense_blocks})")
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i in range(int(conv_blocks)):
        x = layers.Conv2D(base_filters * 2 ** i, 3, padding="same", name=f"conv{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    for j in range(int(dense_blocks)):
        x = layers.Dense(dense_units, activation="relu", name=f"dense{j + 1}")(x)
        x = layers.Dropout(dropout, name=f"dropout{j + 1}")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=SPEC.name)
