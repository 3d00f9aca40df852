"""Predict's memory does not grow with classes x photo pixels: probabilities stay at the model's
resolution, the full-size label map and confidence are filled a band of rows at a time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import torch
import torch.nn.functional as F

from slrnet.inference import reduce_image
from slrnet.tiles import top_class_in_bands


def test_banded_top_class_matches_interpolate_then_argmax() -> None:
    torch.manual_seed(0)
    probs = torch.rand(5, 7, 9).softmax(0)
    for size in [(61, 83), (7, 9), (4, 5), (30, 9)]:
        labels, confidence = top_class_in_bands(probs, size, band_elements=5 * 83 * 3)  # 3-row bands
        full = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
        best, index = full.max(0)
        assert (labels == index.numpy()).mean() > 0.999
        assert np.abs(confidence.astype(float) - best.numpy() * 255).max() <= 0.51
    keep = torch.tensor([False, True, False, True, False])
    labels, _ = top_class_in_bands(probs, (20, 20), keep=keep)
    assert set(np.unique(labels)) <= {1, 3}


def test_reduce_image_averages_blocks() -> None:
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    reduced = reduce_image(image, 2)
    assert reduced.shape == (3, 4, 3)
    assert reduced[1, 2, 0] == round(image[2:4, 4:6, 0].mean())


PROBE = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    from slrnet.config import InferenceConfig, ModelConfig
    from slrnet.inference import Predictor
    torch.set_num_threads(1)
    k, height, width = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

    class Model(torch.nn.Module):  # any model with class scores and stride-4 segmentation logits
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, k, 1)
        def forward(self, x):
            seg = self.conv(torch.nn.functional.avg_pool2d(x, 4))
            return {"seg_logits": seg, "cls_logits": seg.mean((2, 3))}

    cfg = ModelConfig(num_classes=k, mode="wsss", backbone="tiny", pretrained=False)
    predictor = Predictor(Model(), cfg, [str(i) for i in range(k)], default_size=160,
                          config=InferenceConfig(class_filter="none"))
    predictor.predict(np.zeros((120, 160, 3), np.uint8))  # allocator and kernels warmed up
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pred = predictor.predict(image)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kb": peak - before, "shape": list(pred.labels.shape)}))
""")


def test_predict_peak_memory_does_not_scale_with_classes_times_pixels() -> None:
    """81 classes on a 1600 x 2400 photo: full-resolution float probabilities alone would be
    1.2 GB; the peak grows by less than a tenth of that (the outputs are 8 MB)."""
    k, height, width = 81, 1600, 2400
    done = subprocess.run([sys.executable, "-c", PROBE, str(k), str(height), str(width)], check=True,
                          capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["shape"] == [height, width]
    assert result["growth_kb"] * 1024 < k * height * width * 4 / 10


def test_jpeg_read_reduced_keeps_the_upright_full_size(tmp_path: object) -> None:
    from pathlib import Path

    from PIL import Image as PILImage

    from storage.files import read_rgb, read_rgb_reduced

    path = Path(str(tmp_path)) / "rotated.jpg"
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    PILImage.new("RGB", (1600, 1200), (200, 30, 30)).save(path, exif=exif)
    reduced, size = read_rgb_reduced(path, 320)
    assert size == (1600, 1200) == read_rgb(path).shape[:2]
    assert 320 <= max(reduced.shape[:2]) < 1600 and reduced.shape[0] > reduced.shape[1]
    assert abs(int(reduced[10, 10, 0]) - 200) < 8
