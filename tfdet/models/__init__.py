"""Detectors. Submodules are imported explicitly (``from tfdet.models import yolov3``) so this package stays light."""
