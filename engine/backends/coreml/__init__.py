"""Core ML backend: WhisperKit's three models (MelSpectrogram, AudioEncoder, TextDecoder) driven
by a host-side decoding loop, with a numpy reference of the same models standing in for Apple's
runtime off macOS. `coremltools` is imported only where a Core ML model is loaded or built.
"""
