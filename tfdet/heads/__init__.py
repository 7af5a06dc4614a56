"""Heads: per-level prediction subnets shared across pyramid levels (``retinanet``, ``efficientdet``).

Submodules are imported explicitly (``from tfdet.heads.retinanet import retinanet_head``) so this package stays light.
"""
