"""load_darknet against OpenCV's Darknet importer, and its error handling.

Two independent truths read the same cfg text and ``.weights`` bytes:
OpenCV's Darknet importer (``cv2.dnn.readNetFromDarknet``, OpenCV 4.x only:
OpenCV 5 removed it, so those tests skip there) and ``darknet_forward``
below, a NumPy forward pass written from Darknet's arithmetic (its padding,
batch-norm and max-pool formulas), which always runs. The cfg files are
written here from the official ``yolov3-tiny.cfg`` / ``yolov3.cfg`` layouts
and the ``.weights`` files are random, laid out by a small cfg walker in this
file (not by tfdet). We compare the raw outputs of the convolutions that feed
each ``[yolo]`` layer, i.e. before the yolo transform.
"""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from tfdet.models.yolov3 import yolov3_network, yolov3_tiny_network  # noqa: E402
from tfdet.weights.darknet import DarknetWeightsError, load_darknet  # noqa: E402

YOLO = """[yolo]
mask = {mask}
anchors = 10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326
classes={classes}
num=9
"""


def _conv(filters, size, stride=1, bn=True):
    text = "[convolutional]\n"
    if bn:
        text += "batch_normalize=1\n"
    act = "leaky" if bn else "linear"
    return text + f"filters={filters}\nsize={size}\nstride={stride}\npad=1\nactivation={act}\n"


def tiny_cfg(classes):
    """yolov3-tiny.cfg's layer sequence (layer indices in comments)."""
    out = 3 * (5 + classes)
    s = ["[net]\nbatch=1\nwidth=416\nheight=416\nchannels=3\n"]
    for i, f in enumerate((16, 32, 64, 128, 256, 512)):  # layers 0..11
        s.append(_conv(f, 3))
        s.append(f"[maxpool]\nsize=2\nstride={2 if i < 5 else 1}\n")
    s += [_conv(1024, 3), _conv(256, 1), _conv(512, 3), _conv(out, 1, bn=False)]  # 12..15
    s.append(YOLO.format(mask="3,4,5", classes=classes).replace("num=9", "num=6").replace(
        "10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326",
        "10,14, 23,27, 37,58, 81,82, 135,169, 344,319"))  # 16
    s += ["[route]\nlayers = -4\n", _conv(128, 1), "[upsample]\nstride=2\n", "[route]\nlayers = -1, 8\n"]
    s += [_conv(256, 3), _conv(out, 1, bn=False)]  # 21, 22
    s.append(YOLO.format(mask="1,2,3", classes=classes).replace("num=9", "num=6").replace(
        "10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326",
        "10,14, 23,27, 37,58, 81,82, 135,169, 344,319"))
    return "\n".join(s)


def yolov3_cfg(classes):
    """yolov3.cfg's layer sequence; route targets computed as the cfg states them (36, 61)."""
    out = 3 * (5 + classes)
    s = ["[net]\nbatch=1\nwidth=416\nheight=416\nchannels=3\n", _conv(32, 3)]
    stage_ends = []
    n = 1
    for filters, blocks in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):
        s.append(_conv(filters, 3, stride=2))
        n += 1
        for _ in range(blocks):
            s += [_conv(filters // 2, 1), _conv(filters, 3), "[shortcut]\nfrom=-3\nactivation=linear\n"]
            n += 3
        stage_ends.append(n - 1)
    assert stage_ends[2:4] == [36, 61]  # the official cfg's route targets
    for scale, (filters, mask) in enumerate(((512, "6,7,8"), (256, "3,4,5"), (128, "0,1,2"))):
        if scale:
            s += ["[route]\nlayers = -4\n", _conv(filters, 1), "[upsample]\nstride=2\n",
                  f"[route]\nlayers = -1, {stage_ends[4 - scale]}\n"]
        for size in (1, 3, 1, 3, 1, 3):
            s.append(_conv(filters if size == 1 else 2 * filters, size))
        s += [_conv(out, 1, bn=False), YOLO.format(mask=mask, classes=classes)]
    return "\n".join(s)


def walk_cfg(text):
    """An independent reading of a cfg: per conv ``(filters, in_channels, size, bn)``
    in order, and the Darknet layer indices of the convs feeding ``[yolo]`` layers."""
    sections = []
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("["):
            sections.append((line[1:-1], {}))
        elif "=" in line:
            key, value = line.split("=", 1)
            sections[-1][1][key.strip()] = value.strip()
    channels = [int(sections[0][1]["channels"])]  # channels[-1] is the latest output
    outs, convs, heads = [], [], []
    for kind, opts in sections[1:]:
        cin = outs[-1] if outs else channels[0]
        if kind == "convolutional":
            f = int(opts["filters"])
            convs.append((f, cin, int(opts["size"]), opts.get("batch_normalize") == "1"))
            outs.append(f)
        elif kind == "route":
            idx = [int(v) for v in opts["layers"].split(",")]
            outs.append(sum(outs[i if i >= 0 else len(outs) + i] for i in idx))
        elif kind == "yolo":
            heads.append(len(outs) - 1)
            outs.append(cin)
        else:  # shortcut, maxpool, upsample keep the channels
            outs.append(cin)
    return convs, heads


def write_weights(path, convs, seed=0, header=(0, 2, 0), seen=0, extra=0, drop=0):
    """A random ``.weights`` file for ``convs`` (from ``walk_cfg``); returns the float arrays."""
    rng = np.random.default_rng(seed)
    major, minor, revision = header
    blobs = [np.array([major, minor, revision], "<i4").tobytes(),
             np.array([seen], "<i8" if major * 10 + minor >= 2 else "<i4").tobytes()]
    arrays = []
    for filters, cin, size, bn in convs:
        if bn:
            beta = rng.uniform(-0.1, 0.1, filters)
            gamma = rng.uniform(0.5, 1.5, filters)
            mean = rng.uniform(-0.1, 0.1, filters)
            var = rng.uniform(0.5, 1.5, filters)  # positive, away from 0 so epsilons do not matter
            params = [beta, gamma, mean, var]
        else:
            params = [rng.uniform(-0.1, 0.1, filters)]
        # ~1/sqrt(fan_in) keeps activations O(1) through the depth.
        params.append(rng.standard_normal((filters, cin, size, size)) / np.sqrt(cin * size * size))
        params = [p.astype("<f4") for p in params]
        arrays.append(params)
        blobs += [p.tobytes() for p in params]
    blobs.append(np.zeros(extra, "<f4").tobytes())
    data = b"".join(blobs)
    path.write_bytes(data[:len(data) - 4 * drop])
    return arrays


def darknet_forward(text, arrays, image):
    """A float64 NumPy forward pass with Darknet's own arithmetic, from the cfg.

    Conv: ``pad = size // 2`` on all sides, ``out = (in + 2 pad - size) // stride + 1``;
    batch norm ``(x - mean) / (sqrt(var) + 1e-6) * gamma + beta``; leaky 0.1;
    maxpool: ``size - 1`` padding, window start ``out * stride - (size - 1) // 2``
    with C's truncating division (0 for size 2), padding never wins; upsample
    nearest; route concatenates in the listed order; shortcut adds.

    Args:
        text: cfg text. arrays: ``write_weights``'s arrays. image: ``[H, W, 3]`` in [0, 1].

    Returns:
        The inputs of the ``[yolo]`` layers, ``[h, w, C]`` each, in cfg order.
    """
    sections = []
    for line in text.splitlines():
        if line.startswith("["):
            sections.append((line[1:-1], {}))
        elif "=" in line:
            key, value = line.split("=", 1)
            sections[-1][1][key.strip()] = value.strip()
    x = image.astype(np.float64)
    outs, heads, conv_index = [], [], 0
    for kind, opts in sections[1:]:
        if kind == "convolutional":
            size, stride = int(opts["size"]), int(opts["stride"])
            params = [a.astype(np.float64) for a in arrays[conv_index]]
            conv_index += 1
            kernel = params[-1]  # [F, C, k, k]
            pad = size // 2
            h, w, _ = x.shape
            oh, ow = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
            xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
            y = np.zeros((oh, ow, kernel.shape[0]))
            for dy in range(size):
                for dx in range(size):
                    patch = xp[dy:dy + stride * (oh - 1) + 1:stride, dx:dx + stride * (ow - 1) + 1:stride]
                    y += patch @ kernel[:, :, dy, dx].T
            if opts.get("batch_normalize") == "1":
                beta, gamma, mean, var = params[:4]
                y = (y - mean) / (np.sqrt(var) + 1e-6) * gamma + beta
            else:
                y = y + params[0]
            if opts["activation"] == "leaky":
                y = np.where(y > 0, y, 0.1 * y)
        elif kind == "maxpool":
            size, stride = int(opts["size"]), int(opts["stride"])
            pad = size - 1
            offset = -int(pad / 2)  # C truncates toward zero
            h, w, c = x.shape
            oh, ow = (h + pad - size) // stride + 1, (w + pad - size) // stride + 1
            xp = np.full((h + 2 * size, w + 2 * size, c), -np.inf)
            xp[size:size + h, size:size + w] = x
            y = np.full((oh, ow, c), -np.inf)
            for dy in range(size):
                for dx in range(size):
                    r0, c0 = size + offset + dy, size + offset + dx
                    y = np.maximum(y, xp[r0:r0 + stride * (oh - 1) + 1:stride, c0:c0 + stride * (ow - 1) + 1:stride])
        elif kind == "upsample":
            s_ = int(opts["stride"])
            y = np.repeat(np.repeat(x, s_, axis=0), s_, axis=1)
        elif kind == "route":
            idx = [int(v) for v in opts["layers"].split(",")]
            y = np.concatenate([outs[i if i >= 0 else len(outs) + i] for i in idx], axis=-1)
        elif kind == "shortcut":
            y = x + outs[int(opts["from"]) + len(outs)]
        elif kind == "yolo":
            heads.append(x)
            y = x
        else:
            raise ValueError(kind)
        outs.append(y)
        x = y
    return heads


def _load_random(folder, cfg_text, model, seed=0):
    """Writes cfg + random weights into ``folder`` and loads them into ``model``.

    Returns:
        A dict: ``cfg_text``, ``cfg`` and ``weights`` paths, the written
        ``arrays``, the Darknet indices of the ``heads``, the loaded ``model``.
    """
    cfg = folder / "net.cfg"
    cfg.write_text(cfg_text)
    weights = folder / "net.weights"
    convs, heads = walk_cfg(cfg_text)
    arrays = write_weights(weights, convs, seed=seed)
    assert load_darknet(model, weights) == (0, 2, 0, 0)
    return dict(cfg_text=cfg_text, cfg=cfg, weights=weights, arrays=arrays, heads=heads, model=model)


@pytest.fixture(scope="module")
def tiny80(tmp_path_factory):
    return _load_random(tmp_path_factory.mktemp("tiny"), tiny_cfg(80), yolov3_tiny_network(80))


@pytest.fixture(scope="module")
def full80(tmp_path_factory):
    # 62M random parameters (248 MB).
    return _load_random(tmp_path_factory.mktemp("yolov3"), yolov3_cfg(80), yolov3_network(80))


def _random_rgb(size, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _check(model, theirs, rgb, what):
    """Compares our raw heads with ``theirs`` (NHWC head inputs, p5 first).

    With random weights the 23 residual additions of Darknet-53 grow the
    activations to tens, so the tolerance is 1e-4 times the output's scale
    (``max(1, max |theirs|)``); for the tiny network that is 1e-4 absolute.
    """
    ours = model((rgb.astype("float32") / 255.0)[None])
    errors = {}
    for key, t in zip(["p5", "p4", "p3"], theirs):
        o = np.asarray(ours[key])
        assert o.shape == t.shape, (key, o.shape, t.shape)
        scale = float(np.abs(t).max())
        assert scale > 0.1  # a live signal, not a collapsed one
        errors[key] = (float(np.abs(o - t).max()), scale)
    print(f"max |ours - {what}| (error, output scale):", errors)
    for key, (err, scale) in errors.items():
        assert err < 1e-4 * max(1.0, scale), (key, err, scale)


def _compare_with_reference(loaded, size):
    rgb = _random_rgb(size)
    theirs = [h[None] for h in darknet_forward(loaded["cfg_text"], loaded["arrays"], rgb / 255.0)]
    _check(loaded["model"], theirs, rgb, "numpy darknet")


def _compare_with_opencv(loaded, size):
    if not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Darknet importer (removed in OpenCV 5; 4.x has it)")
    rgb = _random_rgb(size)
    bgr = np.ascontiguousarray(rgb[..., ::-1])  # what cv2.imread would hand OpenCV
    # swapRB turns BGR back into RGB; scalefactor 1/255 is our preprocessing.
    blob = cv2.dnn.blobFromImage(bgr, scalefactor=1 / 255.0, size=(size, size), swapRB=True, crop=False)
    np.testing.assert_allclose(blob[0].transpose(1, 2, 0), rgb / 255.0, atol=1e-7)
    net = cv2.dnn.readNetFromDarknet(str(loaded["cfg"]), str(loaded["weights"]))
    net.setInput(blob)
    # OpenCV names a cfg layer's convolution conv_<darknet layer index>.
    names = [f"conv_{i}" for i in loaded["heads"]]
    theirs = [np.asarray(t).transpose(0, 2, 3, 1) for t in net.forward(names)]
    _check(loaded["model"], theirs, rgb, "opencv")


def test_kernel_layout(tiny80):
    """Kernel element [o, i, y, x] of the file lands at Keras HWIO [y, x, i, o]."""
    file_kernel = tiny80["arrays"][1][-1]  # conv 1: [32, 16, 3, 3]
    kernel = tiny80["model"].get_layer("conv_1").get_weights()[0]
    assert kernel.shape == (3, 3, 16, 32)
    assert kernel[2, 0, 7, 5] == file_kernel[5, 7, 2, 0]
    np.testing.assert_array_equal(kernel, file_kernel.transpose(2, 3, 1, 0))


@pytest.mark.slow
def test_tiny_matches_darknet_reference(tiny80):
    _compare_with_reference(tiny80, 416)


@pytest.mark.slow
def test_tiny_matches_opencv(tiny80):
    _compare_with_opencv(tiny80, 416)


@pytest.mark.slow
def test_yolov3_matches_darknet_reference(full80):
    _compare_with_reference(full80, 96)  # float64 NumPy is slow; 96 still has 3x3 / 6x6 / 12x12 heads


@pytest.mark.slow
def test_yolov3_matches_opencv(full80):
    _compare_with_opencv(full80, 256)


@pytest.mark.slow
def test_walker_agrees_with_the_models(tiny80, full80):
    """Our conv order and shapes are the cfg's."""
    from tfdet.weights.darknet import darknet_layers

    for loaded in (tiny80, full80):
        convs, _ = walk_cfg(loaded["cfg_text"])
        ours = [(int(c.kernel.shape[3]), int(c.kernel.shape[2]), int(c.kernel.shape[0]), bn is not None)
                for c, bn in darknet_layers(loaded["model"])]
        assert ours == convs


@pytest.fixture(scope="module")
def tiny():
    return yolov3_tiny_network(2)


@pytest.fixture(scope="module")
def tiny_convs():
    return walk_cfg(tiny_cfg(2))[0]


def test_truncated_file_names_it(tmp_path, tiny, tiny_convs):
    path = tmp_path / "short.weights"
    write_weights(path, tiny_convs, drop=3)
    with pytest.raises(DarknetWeightsError, match=r"short\.weights.*truncated"):
        load_darknet(tiny, path)


def test_trailing_data_reports_count(tmp_path, tiny, tiny_convs):
    path = tmp_path / "long.weights"
    write_weights(path, tiny_convs, extra=7)
    with pytest.raises(DarknetWeightsError, match=r"long\.weights: 7 extra float32"):
        load_darknet(tiny, path)


def test_wrong_header(tmp_path, tiny):
    path = tmp_path / "bad.weights"
    path.write_bytes(np.array([-5, 2, 0, 0, 0], "<i4").tobytes() + b"\0" * 64)
    with pytest.raises(DarknetWeightsError, match=r"bad\.weights: not a Darknet"):
        load_darknet(tiny, path)
    path.write_bytes(b"\0" * 8)
    with pytest.raises(DarknetWeightsError, match=r"bad\.weights.*too short"):
        load_darknet(tiny, path)


def test_old_header_has_int32_seen(tmp_path, tiny, tiny_convs):
    """Version 0.1 files store ``seen`` in 4 bytes; the floats start 4 bytes earlier."""
    path = tmp_path / "old.weights"
    arrays = write_weights(path, tiny_convs, header=(0, 1, 0), seen=1234)
    assert load_darknet(tiny, path) == (0, 1, 0, 1234)
    beta, gamma, mean, var, _ = arrays[0]
    np.testing.assert_array_equal(tiny.get_layer("bn_0").get_weights(), [gamma, beta, mean, var])
    bias = arrays[-1][0]
    np.testing.assert_array_equal(tiny.get_layer("conv_12").get_weights()[1], bias)


@pytest.mark.parametrize("name", ["yolov3_tiny", "yolov3"])
def test_default_priors_are_the_cfg_masks(name):
    """Each output decodes with the priors its ``[yolo]`` section's ``mask`` selects, so published
    weights decode as in Darknet. The cfg lists the coarsest scale first; the detector the finest."""
    from tfdet.zoo import build_model

    text = tiny_cfg(3) if name == "yolov3_tiny" else yolov3_cfg(3)
    per_section = []
    for section in text.split("[yolo]")[1:]:
        options = dict(line.split("=", 1) for line in section.splitlines() if "=" in line)
        options = {key.strip(): value for key, value in options.items()}
        anchors = np.array([float(v) for v in options["anchors"].split(",")]).reshape(-1, 2)
        per_section.append(anchors[[int(v) for v in options["mask"].split(",")]])
    detector = build_model(name, 3, image_size=64)
    np.testing.assert_array_equal(detector.priors, np.stack(per_section[::-1]))
