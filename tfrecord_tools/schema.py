"""The tf.Example feature keys of a tfdet TFRecord.

These are the TF Object Detection API keys, so records written here are read
by the TF OD API (and by anything that reads its records), and records written
by its tools are read by ``tfdet.data``. Every writer and reader in this
project takes its keys from this module; nothing else spells them.

Boxes are normalised to ``[0, 1]`` at this boundary (``xmin = x / width``);
inside ``tfdet`` they become absolute ``yxyx`` pixels. Class labels are the
label-map ids ``1..K``; id 0 is never a class.
"""

# Image-level features.
IMAGE_ENCODED = "image/encoded"  # bytes: the source file's bytes, unchanged
IMAGE_FORMAT = "image/format"  # bytes: b"jpeg" or b"png", sniffed from the bytes
IMAGE_FILENAME = "image/filename"  # bytes
IMAGE_SOURCE_ID = "image/source_id"  # bytes
IMAGE_KEY_SHA256 = "image/key/sha256"  # bytes: hex digest of image/encoded
IMAGE_HEIGHT = "image/height"  # int64: of the stored image
IMAGE_WIDTH = "image/width"  # int64: of the stored image

# Object-level features: one list entry per object, all lists the same length.
OBJECT_XMIN = "image/object/bbox/xmin"  # float list, normalised
OBJECT_YMIN = "image/object/bbox/ymin"
OBJECT_XMAX = "image/object/bbox/xmax"
OBJECT_YMAX = "image/object/bbox/ymax"
OBJECT_CLASS_LABEL = "image/object/class/label"  # int64 list, 1..K
OBJECT_CLASS_TEXT = "image/object/class/text"  # bytes list
OBJECT_IS_CROWD = "image/object/is_crowd"  # int64 list, 0/1
OBJECT_DIFFICULT = "image/object/difficult"  # int64 list, 0/1
OBJECT_TRUNCATED = "image/object/truncated"  # int64 list, 0/1
OBJECT_AREA = "image/object/area"  # float list, pixels
OBJECT_POSE = "image/object/view"  # bytes list (VOC <pose>; TF OD API key)
OBJECT_MASK = "image/object/mask"  # bytes list: one image-sized PNG per object

# KITTI extras (float lists, one entry per object).
OBJECT_ALPHA = "image/object/alpha"
OBJECT_OCCLUDED = "image/object/occluded"
OBJECT_3D_HEIGHT = "image/object/3d_bbox/height"
OBJECT_3D_WIDTH = "image/object/3d_bbox/width"
OBJECT_3D_LENGTH = "image/object/3d_bbox/length"
OBJECT_3D_X = "image/object/3d_bbox/x"
OBJECT_3D_Y = "image/object/3d_bbox/y"
OBJECT_3D_Z = "image/object/3d_bbox/z"
OBJECT_3D_ROT_Y = "image/object/3d_bbox/rot_y"
# KITTI camera calibration, when the calib file is given: the 3x4 P2 matrix, row-major.
IMAGE_CALIB_P2 = "image/calib/p2"

BOX_KEYS = (OBJECT_YMIN, OBJECT_XMIN, OBJECT_YMAX, OBJECT_XMAX)

KITTI_3D_KEYS = (
    OBJECT_3D_HEIGHT,
    OBJECT_3D_WIDTH,
    OBJECT_3D_LENGTH,
    OBJECT_3D_X,
    OBJECT_3D_Y,
    OBJECT_3D_Z,
    OBJECT_3D_ROT_Y,
)

# Per-object feature keys and their value type, used by readers that parse
# records without TensorFlow (inspect, verify, tests).
OBJECT_FLOAT_KEYS = (
    OBJECT_XMIN, OBJECT_YMIN, OBJECT_XMAX, OBJECT_YMAX, OBJECT_AREA,
    OBJECT_ALPHA, OBJECT_OCCLUDED, *KITTI_3D_KEYS,
)
OBJECT_INT_KEYS = (OBJECT_CLASS_LABEL, OBJECT_IS_CROWD, OBJECT_DIFFICULT, OBJECT_TRUNCATED)
OBJECT_BYTES_KEYS = (OBJECT_CLASS_TEXT, OBJECT_POSE, OBJECT_MASK)

# Keys every record written by tfrecord-tools carries.
REQUIRED_IMAGE_KEYS = (
    IMAGE_ENCODED, IMAGE_FORMAT, IMAGE_FILENAME, IMAGE_SOURCE_ID,
    IMAGE_KEY_SHA256, IMAGE_HEIGHT, IMAGE_WIDTH,
)
REQUIRED_OBJECT_KEYS = (*BOX_KEYS, OBJECT_CLASS_LABEL, OBJECT_CLASS_TEXT)

SUPPORTED_IMAGE_FORMATS = ("jpeg", "png")


def shard_name(split: str, index: int, num_shards: int) -> str:
    """File name of one shard: ``NAME-00000-of-00008.tfrecord``."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def manifest_name(split: str) -> str:
    """File name of a split's manifest: ``NAME.manifest.json``."""
    return f"{split}.manifest.json"


LABEL_MAP_NAME = "label_map.pbtxt"
