"""Re-predict a model that `benchmarks.msrc_wsss` trained, under inference variants, and score
each on a seeded 2/3 of the photos ("tune": where a choice is made) and the other third ("held
out": where it is confirmed). Only the inference settings differ between the rows.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.msrc_repredict /tmp/bench-msrc-all-XXXX \\
        --variants '{"plain": {"class_max_norm": false}, "peak_relative": {"class_max_norm": true}}'

The folder is the "working folder" msrc_wsss prints (and stores as "workdir" in its JSON); its
``gold_seen`` links are the gold masks of the photos it trained on. "tune" is msrc_wsss's own
seeded 2/3 (``load_view``, where it chooses the CAM threshold), "held out" the rest. Each variant
starts from the run's CPU inference settings (``services.publishing.CPU_INFERENCE``) with the given
fields replaced.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from sqlalchemy import delete

from benchmarks.common import DATA, seed_torch_home, write_result
from benchmarks.msrc_wsss import VIEWS, load_view
from services import evaluation, publishing
from services.context import Studio
from slrnet.config import InferenceConfig
from storage.models import PseudoLabel

PROJECT = "msrc"


def split_gold(gold_dir: Path, view: str, seed: int) -> dict[str, Path]:
    """{"tune", "held_out"}: folders of links to the gold masks of msrc_wsss's tune 2/3 and the
    other photos."""
    _, _, tune = load_view(DATA / "msrc", VIEWS[view], seed)
    tune_stems = {Path(name).stem for name in tune}
    gold = sorted(gold_dir.iterdir())
    parts = {"tune": [f for f in gold if f.stem in tune_stems],
             "held_out": [f for f in gold if f.stem not in tune_stems]}
    folders = {}
    for name, files in parts.items():
        folder = Path(tempfile.mkdtemp(prefix=f"gold-{name}-"))
        for f in files:
            (folder / f.name).symlink_to(f.resolve())
        folders[name] = folder
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--variants", default='{"plain": {"class_max_norm": false}, '
                                              '"peak_relative": {"class_max_norm": true}}')
    parser.add_argument("--view", choices=sorted(VIEWS), default="all", help="the view it trained on")
    parser.add_argument("--seed", type=int, default=0, help="msrc_wsss's --seed (its split)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    variants = json.loads(args.variants)
    seed_torch_home(args.workdir / "torch")
    folders = split_gold(args.workdir / "gold_seen", args.view, args.seed)
    studio = Studio.open(args.workdir / "data")
    result: dict = {"args": {**vars(args), "workdir": str(args.workdir)}, "variants": {}}
    try:
        for name, fields in variants.items():
            config = InferenceConfig(**{**dataclasses.asdict(publishing.CPU_INFERENCE), **fields})
            with studio.Session.begin() as session:  # predict skips images already labelled
                session.execute(delete(PseudoLabel))
            publishing.predict(studio, PROJECT, device="cpu", config=config)
            scores = {part: evaluation.evaluate(studio, PROJECT, gt_masks=folder)
                      for part, folder in folders.items()}
            result["variants"][name] = {"config": dataclasses.asdict(config), **scores}
            print(name, {part: round(s["miou"], 4) for part, s in scores.items()}, flush=True)
    finally:
        studio.close()
    write_result(args.name or f"msrc_repredict_{args.workdir.name}", result)


if __name__ == "__main__":
    main()
