"""Training step cost: today's frozen-backbone CPU step against the light head on stored features,
side by side in one process; and the feature pass's cost per image.

1. Step: batch ``--batch`` of MSRC photos, pseudo-label term on (so PAMR runs), losses at the
   stride-4 grid, backward and SGD, data loading included (the old step decodes, crops and
   normalises images; the new one crops stored features). Old = the CPU default model before
   issue 18 (MobileNetV2 frozen, 64-ch paper head, 160 px crops); new = `ModelConfig(head="light")`
   on EfficientNet-Lite0 features at ``--feature-size`` px, 160 px crops (40 x 40 cells).
   Interleaved rounds; medians (wall and process CPU time: on a shared machine the CPU seconds of
   a 1-thread process are what it would take alone) and the ratios new / old, with a phase
   breakdown (data, forward, losses incl. PAMR, backward + step).
2. Feature pass: `FeatureExtractor.extract` per photo (all views) for each backbone x size asked,
   median wall and CPU seconds over ``--photos`` photos after one warm-up, and 334 x that.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.feature_step --rounds 5

Random head weights (the cost does not depend on them); backbones with their ImageNet weights.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.common import DATA, seed_torch_home, write_result
from slrnet.config import ModelConfig, TrainConfig
from slrnet.data import Sample
from slrnet.feature_data import FeatureSample
from slrnet.features import FeatureExtractor, FeatureSpec
from slrnet.model import build_model
from slrnet.modes import compute_losses
from slrnet.train import build_optimizer, build_train_set, train_outputs
from storage.files import read_rgb

OLD = ModelConfig(num_classes=21, has_background=False, backbone="mobilenet_v2", pretrained=False,
                  feature_channels=64, freeze_low=True, freeze_backbone=True)


def photos(n: int) -> list[tuple[str, np.ndarray]]:
    files = sorted((DATA / "msrc" / "train" / "images").glob("*.jpg"))[:n]
    return [(f.name, read_rgb(f)) for f in files]


def tags_of(i: int) -> np.ndarray:
    tags = np.zeros(21, np.float32)
    tags[[i % 21, (3 * i + 5) % 21]] = 1
    return tags


def stepper(model_config: ModelConfig, samples: list, batch: int) -> Callable[[dict[str, float]], None]:
    """One full step per call, adding each phase's seconds to the dict it is given."""
    train_config = TrainConfig(epochs=2, warmup_epochs=1, image_size=160, batch_size=batch,
                               feature_resolution_losses=True, amp=False)
    model = build_model(model_config).train()
    optimizer = build_optimizer(model, train_config)
    loader = DataLoader(build_train_set(samples, model_config, train_config), batch_size=batch, shuffle=True,
                        drop_last=True)
    batches = iter(())

    def step(phases: dict[str, float]) -> None:
        nonlocal batches
        t0 = time.perf_counter()
        b = next(batches, None)
        if b is None:
            batches = iter(loader)
            b = next(batches)
        t1 = time.perf_counter()
        outs = train_outputs(model, b)
        t2 = time.perf_counter()
        losses = compute_losses(model_config, outs, b, True, feature_resolution=True)
        t3 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        t4 = time.perf_counter()
        for name, dt in (("data", t1 - t0), ("forward", t2 - t1), ("losses_pamr", t3 - t2),
                         ("backward_step", t4 - t3), ("total", t4 - t0)):
            phases[name] = phases.get(name, 0.0) + dt

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and model")
    parser.add_argument("--feature-size", type=int, default=320)
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--extract", nargs="*", default=["efficientnet_lite0:160", "efficientnet_lite0:224",
                                                          "efficientnet_lite0:320", "mobilenet_v2:320",
                                                          "efficientnet_lite2:320"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="feature_step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import tempfile
    seed_torch_home(__import__("pathlib").Path(tempfile.mkdtemp(prefix="bench-step-")) / "torch")
    result: dict = {"machine": f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, "
                               f"{os.cpu_count()} cpus, torch {torch.__version__}",
                    "threads": args.threads, "load_before": os.getloadavg()}
    images = photos(max(args.photos, 2 * args.batch))

    # feature pass
    extract: dict[str, dict] = {}
    features_by_name = {}
    for item in args.extract:
        backbone, size = item.split(":")
        extractor = FeatureExtractor(FeatureSpec.for_backbone(backbone, int(size)))
        extractor.extract(images[0][1])
        times, cpu = [], []
        for name, image in images[:args.photos]:
            t, c = time.perf_counter(), time.process_time()
            arrays = extractor.extract(image)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            if backbone == "efficientnet_lite0" and int(size) == args.feature_size:
                features_by_name[name] = arrays
        per, per_cpu = statistics.median(times), statistics.median(cpu)
        extract[item] = {"s_per_image": round(per, 4), "cpu_s_per_image": round(per_cpu, 4),
                         "cpu_s_for_334": round(334 * per_cpu, 1),
                         "kb_per_image": round(sum(a.nbytes for a in arrays.values()) / 1024)}
        print(item, extract[item], flush=True)
    result["feature_pass"] = extract

    old_samples = [Sample(n, image=im, tags=tags_of(i)) for i, (n, im) in enumerate(images)]
    new_samples = [FeatureSample(n, features_by_name[n], tags=tags_of(i))
                   for i, (n, _) in enumerate(images) if n in features_by_name]
    new = ModelConfig(num_classes=21, has_background=False, backbone="efficientnet_lite0", pretrained=False,
                      head="light", feature_channels=64, feature_image_size=args.feature_size)
    steps = {"old": stepper(OLD, old_samples, args.batch), "new": stepper(new, new_samples, args.batch)}
    per_round: dict[str, list[float]] = {k: [] for k in steps}
    cpu_round: dict[str, list[float]] = {k: [] for k in steps}
    phases: dict[str, dict[str, float]] = {k: {} for k in steps}
    for fn in steps.values():  # warm-up
        fn({})
    for _ in range(args.rounds):
        for key, fn in steps.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                fn(phases[key])
            per_round[key].append((time.perf_counter() - t) / args.steps)
            cpu_round[key].append((time.process_time() - c) / args.steps)
    n = args.rounds * args.steps
    result["step"] = {key: {"median_s": round(statistics.median(v), 4),
                            "median_cpu_s": round(statistics.median(cpu_round[key]), 4),
                            "phases_ms": {p: round(1000 * s / n, 1) for p, s in phases[key].items()}}
                      for key, v in per_round.items()}
    step = result["step"]
    step["new_over_old"] = round(step["new"]["median_s"] / step["old"]["median_s"], 3)
    step["new_over_old_cpu"] = round(step["new"]["median_cpu_s"] / step["old"]["median_cpu_s"], 3)
    result["load_after"] = os.getloadavg()
    write_result(args.name, result)


if __name__ == "__main__":
    main()
