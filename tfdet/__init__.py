"""tfdet: object detection and instance segmentation for TensorFlow 2 / Keras 3.

``import tfdet`` stays light: model, training and export modules load when
they are first used, so command-line tools start fast.
"""

__version__ = "0.1.0"

__all__ = ["build_model", "list_models", "load_model", "__version__"]


def __getattr__(name):
    # The registry loads on first use, so `import tfdet` stays light.
    if name in ("build_model", "list_models", "load_model"):
        from tfdet import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module 'tfdet' has no attribute {name!r}")
