"""Detection losses: ``keras.ops`` only, stable in logits, unreduced.

Each loss returns per-element (``[..., K]``), per-box or per-anchor
(``[...]``) values; reduce them with ``normalize_by`` / ``weighted_mean``,
which return exactly 0 (with finite gradients) when the count is 0.
``yolo_v3_losses`` returns its reduced terms as a ``loss/<term>`` dict.
"""

from tfdet.losses.classification import sigmoid_cross_entropy, sigmoid_focal_loss, softmax_cross_entropy
from tfdet.losses.masks import mask_bce
from tfdet.losses.normalization import normalize_by, safe_divide, weighted_mean
from tfdet.losses.regression import ciou_loss, diou_loss, giou_loss, huber, smooth_l1
from tfdet.losses.yolo import yolo_v3_ignore_mask, yolo_v3_losses

__all__ = [
    "sigmoid_cross_entropy",
    "sigmoid_focal_loss",
    "softmax_cross_entropy",
    "smooth_l1",
    "huber",
    "giou_loss",
    "diou_loss",
    "ciou_loss",
    "yolo_v3_losses",
    "yolo_v3_ignore_mask",
    "mask_bce",
    "safe_divide",
    "normalize_by",
    "weighted_mean",
]
