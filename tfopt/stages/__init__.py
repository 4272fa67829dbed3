"""The pipeline's stages: one module each, one Stage interface, one registry.

`registry` is the only list of stage names; `base` defines what a stage is
(Stage), what it gets (Context) and what it returns (StageOutput). Importing
this package is cheap: a stage's module is imported when it is first used.
"""
