"""Keras models in and out: reading the user's files, building tfopt's own.

    model_io        .keras / .h5 / SavedModel -> a Keras 2 model
    keras3          Keras 3 models rebuilt in Keras 2
    keras2_flatten  nested models flattened into one graph
    models          the built-in teacher and student builders
    lowrank_layers  the factorized layers low-rank writes (LowRankDense, ...)
    macs            multiply-accumulates and parameter counts
    predict         batched predictions over arrays or streamed files
"""
