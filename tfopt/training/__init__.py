"""Training: one fit used by every stage that trains.

    train              fit, its optimizer, loss and accuracy; FitContext
    epoch_checkpoints  per-epoch checkpoints that let a stage resume
    tensorboard_logs   the run's TensorBoard folder
    distribute         default / mirrored / multi-worker strategies
"""
