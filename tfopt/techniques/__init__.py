"""The compression techniques, one folder each: the algorithm (algorithm.py,
callable from Python on any Keras 2 model) and its pipeline stage (stage.py,
registered in tfopt.config.registry); settings are its section in
tfopt.config.technique_config.

    distill      knowledge distillation into a smaller student
    prune        magnitude pruning (tfmot)
    slim         structured channel pruning through residual / SE groups
    strided      2 x 2 pools folded into stride-2 convolutions
    lowrank      truncated-SVD factorization
    cluster      weight sharing (tfmot clustering)
    qat          quantization-aware training (int8, int4)
    binary       binarized and ternary weights
    sensitivity  per-layer pruning sensitivity -> per-layer sparsities
    sweep        accuracy vs sparsity curves
    bitwidth     accuracy vs weight bits
    search       the budgeted search for the smallest or fastest file
"""
