"""Necks: feature pyramids built on backbone outputs (``fpn`` for RetinaNet, ``bifpn`` for EfficientDet).

Submodules are imported explicitly (``from tfdet.necks.fpn import fpn``) so this package stays light.
"""
