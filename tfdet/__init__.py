"""tfdet: object detection and instance segmentation for TensorFlow 2 / Keras 3.

``import tfdet`` stays light: model, training and export modules load when
they are first used, so command-line tools start fast.
"""

__version__ = "0.1.0"
