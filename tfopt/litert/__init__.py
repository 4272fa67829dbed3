"""LiteRT files: writing .tflite files and measuring them.

    convert               Keras -> .tflite (float, dynamic, int8, int16x8, int4)
    int4                  int4 files through litert-quantizer
    evaluate              one file measured: size, gzip, accuracy, latency
    int8_fidelity         float vs int8 outputs: agreement, cosine, SNR
    int8_repair           the int8 repair ladder (ranges, equalization, bias
                          correction, float fallback), with int8_ranges,
                          int8_equalization, int8_bias_correction, int8_file_edits
    quant_debug           per-layer quantization error (LiteRT's debugger)
    breakdown             latency per layer, by prefixes
    explorer              Model Explorer overlays
"""
