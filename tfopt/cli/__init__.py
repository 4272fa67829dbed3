"""The `tfopt` command.

    console   `tfopt compress | measure | inspect` (also `python -m tfopt`)
    compress  the pipeline's flags (also `python -m tfopt.pipeline`)
    measure   `tfopt measure FILE.tflite`
    inspect   `tfopt inspect FILE.tflite`
"""
