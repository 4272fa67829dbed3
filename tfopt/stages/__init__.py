"""What a stage is, and the stages that are not compression techniques.

    base          Stage (the interface), Context (what a stage gets) and
                  StageOutput (what it returns)
    report        the run's report: rows, sections, report.json / .md / .png
    teacher       trains (or takes) the baseline
    scratch       the student trained without a teacher (a control)
    tflite_files  the finishing stage "convert": every model to .tflite
    measure_files the finishing stage "evaluate": every file measured

Each technique's stage is tfopt/techniques/<name>/stage.py; the stage names
are listed once, in tfopt.config.registry. Importing this package is cheap:
a stage's module is imported when it is first used.
"""
