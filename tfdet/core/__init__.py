"""The detection core shared by every detector.

``keras.ops`` only, static shapes, batched: every function here compiles
under XLA (``jit_compile=True``) and runs under ``KERAS_BACKEND=jax``.
Boxes are ``yxyx`` absolute pixels, float32, unless a name says otherwise.
"""
