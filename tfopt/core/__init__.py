"""What every other folder builds on and nothing in tfopt below it.

    errors       TfoptError and the one-line error of every command
    validate     require(): a setting checked, ConfigError naming it
    artifacts    atomic writes, gzip sizes, output-folder ownership
    progress     the run's progress lines and clock
    quiet_start  TensorFlow / LiteRT start-up lines held back
    _keras       the Keras 2 (tf_keras) import and graph helpers
    version      tfopt's version
"""
