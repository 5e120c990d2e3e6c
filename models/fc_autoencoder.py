"""fc_autoencoder: MLPerf Tiny anomaly-detection reference (fully connected autoencoder, 640 -> 640).

Same layer structure as mlcommons/tiny benchmark/training/anomaly_detection/keras_model.py: four
[Dense 128 -> BN -> ReLU] encoder layers, a [Dense 8 -> BN -> ReLU] bottleneck, four [Dense 128 -> BN -> ReLU]
decoder layers and a linear Dense 640 output. After BN folding: 265,864 parameters, 264,192 MACs.
"""

from __future__ import annotations

from models import ModelSpec

SPEC = ModelSpec(
    name="fc_autoencoder",
    input_shape=(640,),
    num_classes=0,
    task="autoencoder",
    source="MLPerf Tiny anomaly detection reference (mlcommons/tiny, FC autoencoder, ToyADMOS)",
    description="Fully connected autoencoder for machine-sound anomaly detection (MLPerf Tiny AD)",
    params=269_992,
    macs=264_192,
)


def build(input_shape, num_classes=0):
    import keras
    from keras import layers

    dim = int(input_shape[0])
    inputs = keras.Input(shape=(dim,), name="features")
    x = inputs
    widths = [128] * 4 + [8] + [128] * 4
    for i, units in enumerate(widths, start=1):
        x = layers.Dense(units, name=f"dense{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
    outputs = layers.Dense(dim, name="reconstruction")(x)
    return keras.Model(inputs, outputs, name=SPEC.name)
