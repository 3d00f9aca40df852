"""services.train_plan is the one owner of the training plan: what the preview shows is what the
training service runs (mode x device x warm/cold, the heavy parts of training replaced by stubs),
the service times steps only when no speed was measured, and the rules the plan is made of."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from services import labeling, train_plan, training
from services.context import Studio
from services.errors import UserError
from services.train_options import TrainOptions
from services.train_plan import StepTimes, TrainPlan
from slrnet.feature_data import FeatureSample
from slrnet.schedule import images_per_epoch
from storage import runs as run_repo
from storage.projects import get_project_by_name
from tests.ui_support import CLASSES, image_ids, make_project

LIGHT_FEATURES = "efficientnet_lite0-57934424/s320/s1+s1f+s0.5+s0.5f"  # the CPU light head's
SPEEDS = {"cpu/mobilenet_v2/64/160": 5.0, "cpu/mobilenet_v2+frozen/64/160": 7.0,
          "cuda/mobilenet_v2/256/448": 90.0, "cpu/efficientnet_lite0+light/64/160": 30.0,
          f"cpu/features/{LIGHT_FEATURES}": 2.0}


@pytest.fixture()
def project(studio: Studio, tmp_path: Path) -> str:
    """10 images: 4 tagged "cat", 2 of those and 2 more with a mask."""
    name = make_project(studio, tmp_path, count=10)
    ids = image_ids(studio, name)
    cat = labeling.get_project(studio, name).classes[1].id
    for i in range(4):
        labeling.set_image_tags(studio, ids[f"img{i}.png"], [cat])
    for i in (2, 3, 4, 5):
        labeling.save_mask(studio, ids[f"img{i}.png"], np.ones((30, 40), np.uint8))
    return name


def _publish(studio: Studio, project: str, plan: TrainPlan) -> int:
    """A published model trained as ``plan`` says: its run row and a checkpoint file."""
    with studio.Session.begin() as session:
        row = get_project_by_name(session, project)
        config = train_plan.run_config(plan.model_config, plan.train_config, ["background", *CLASSES])
        run = run_repo.create_run(session, row.id, mode=plan.mode, backbone=plan.model_config.backbone,
                                  config=config)
        run_repo.set_checkpoint_path(session, run, f"checkpoints/run-{run.id}.pt")
        run_repo.mark_trained(session, run)
        run_repo.mark_published(session, run)
        version = int(run.version)
    (studio.data_dir / "checkpoints").mkdir(exist_ok=True)
    (studio.data_dir / "checkpoints" / f"run-{run.id}.pt").write_bytes(b"weights")
    return version


class StubTraining:
    """Replaces the torch-heavy parts of services.training: the device, the model, fit, the
    checkpoint a warm start reads, the timed steps and the presence rule learnt after fit;
    records what the service ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, device: str, timed: StepTimes | None = None) -> None:
        self.plans: list[TrainPlan] = []
        self.fit_args: dict[str, Any] = {}
        self.timed_calls = 0
        self.timed = timed
        real_train = training._train
        monkeypatch.setattr(training, "open_device", lambda name: torch.device(device))
        monkeypatch.setattr(training, "load_checkpoint", lambda path: {
            "model": {"w": torch.zeros(1)}, "class_names": ["background", *CLASSES]})
        monkeypatch.setattr("slrnet.model.build_model", lambda config: object())
        monkeypatch.setattr(training, "_fit", self._fit)
        monkeypatch.setattr(training, "learn_presence", lambda *args, **kwargs: None)
        monkeypatch.setattr(training, "_time_steps", self._time_steps)
        monkeypatch.setattr(training, "learn_presence", lambda *args, **kwargs: None)  # reads the checkpoint
        self.feature_plans: list[TrainPlan] = []
        monkeypatch.setattr(training, "_feature_samples", self._feature_samples)

        def train_spy(studio: Studio, data: Any, plan: TrainPlan, *args: Any, **kwargs: Any) -> Any:
            self.plans.append(plan)
            return real_train(studio, data, plan, *args, **kwargs)

        monkeypatch.setattr(training, "_train", train_spy)

    def _fit(self, studio: Studio, run_id: int, rel_path: str, notify: Any, **kwargs: Any) -> Any:
        self.fit_args = kwargs
        epochs = kwargs["train_config"].epochs
        return types.SimpleNamespace(history=[{"seconds": 1.0}] * epochs, epochs_completed=epochs,
                                     resumed_from_epoch=0)

    def _feature_samples(self, studio: Studio, data: Any, samples: Any, ids: Any, plan: TrainPlan,
                         *args: Any) -> Any:
        self.feature_plans.append(plan)  # the samples as stored features (none computed here)
        return [FeatureSample(s.name, dict, tags=s.tags, mask=s.mask) for s in samples]

    def _time_steps(self, samples: Any, plan: TrainPlan, device: torch.device) -> StepTimes:
        self.timed_calls += 1
        assert self.timed is not None, "timed steps although a speed was measured"
        return self.timed


@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("mode", ["wsss", "ssss", "ssss_tags"])
def test_the_preview_is_the_plan_the_service_trains(studio: Studio, project: str,
                                                    monkeypatch: pytest.MonkeyPatch, mode: str, device: str,
                                                    warm: bool) -> None:
    (studio.data_dir / train_plan.THROUGHPUT_FILE).write_text(json.dumps(SPEEDS))
    options = TrainOptions(mode=mode, device=device)
    if warm:
        version = _publish(studio, project, train_plan.preview_training(studio, project, options))
    preview = train_plan.preview_training(studio, project, options)
    assert preview.warm_start_from == (version if warm else None)
    assert preview.speed_source == "measured"
    stub = StubTraining(monkeypatch, device)
    result = training.train(studio, project, TrainOptions(mode=mode, device=device))
    [ran] = stub.plans
    assert ran == preview
    assert stub.fit_args["model_config"] == preview.model_config
    assert stub.fit_args["train_config"] == preview.train_config
    assert (stub.fit_args["init_weights"] is not None) == warm
    assert result.epochs == preview.epochs and result.metrics["plan"] == preview.metrics()
    assert stub.timed_calls == 0  # a measured speed: no timed steps
    # on a CPU, every mode: the light head on stored features, all 10 images' still to compute
    light = device == "cpu"
    assert (preview.model_config.head == "light") == light
    assert stub.feature_plans == ([preview] if light else [])
    assert preview.feature_spec_key == (LIGHT_FEATURES if light else None)
    assert preview.features_missing == (10 if light else 0)
    if light:
        training_s = preview.estimated_s - preview.features_s
        assert preview.features_s == 10 / 2.0 and training_s <= preview.budget_s
        assert "10 image(s) still need them" in preview.summary()


def test_with_nothing_measured_the_service_times_steps_and_replans_the_epochs(
        studio: Studio, project: str, monkeypatch: pytest.MonkeyPatch) -> None:
    preview = train_plan.preview_training(studio, project, TrainOptions(device="cpu"))
    assert preview.speed_source == "guessed" and preview.needs_timing
    timed = StepTimes(seconds_per_image=0.5, warmup_seconds_per_image=0.25)
    stub = StubTraining(monkeypatch, "cpu", timed=timed)
    reports: list[str] = []
    training.train(studio, project, TrainOptions(device="cpu"), progress=lambda f, m, x: reports.append(m))
    [ran] = stub.plans
    assert stub.timed_calls == 1 and ran.speed_source == "timed" and not ran.needs_timing
    assert ran.model_config == preview.model_config and ran.images_per_epoch == preview.images_per_epoch
    # 240 s at 2 img/s (0.5 s per image), warm-up epochs at 4 img/s: the most epochs that fit
    warmup = train_plan.default_warmup(ran.epochs)
    cost = ran.images_per_epoch * (warmup * 0.25 + (ran.epochs - warmup) * 0.5)
    assert cost <= train_plan.CPU_TRAIN_BUDGET_S
    assert reports[0].startswith("plan: ") and f"{ran.epochs} epoch(s)" in reports[0]


def _facts(**changes: Any) -> train_plan.PlanFacts:
    facts = train_plan.PlanFacts(counts=train_plan.LabelCounts(tagged=12, masked=0, unlabelled=0),
                                 class_names=("background", "cat", "dog"), has_background=True,
                                 device="cpu", images=12,
                                 throughput={"cpu/mobilenet_v2+frozen/64/160": 3.0,
                                             "cpu/efficientnet_lite0+light/64/160": 12.0})
    return dataclasses.replace(facts, **changes) if changes else facts


def test_a_resumed_budgeted_run_keeps_the_epochs_of_the_interrupted_one() -> None:
    first = train_plan.make_plan(_facts(), TrainOptions())
    interrupted = train_plan.run_config(first.model_config, first.train_config, _facts().class_names)
    interrupted["train"]["epochs"] = first.epochs + 3
    again = train_plan.make_plan(_facts(resumable=interrupted, throughput={}), TrainOptions())
    assert again.resumes and again.epochs == first.epochs + 3 and not again.needs_timing


def test_the_gpu_plan_is_not_budgeted_and_the_whole_batches_rule() -> None:
    plan = train_plan.make_plan(_facts(device="cuda"), TrainOptions())
    assert plan.budget_s is None and plan.epochs == 30 and plan.image_size == train_plan.GPU_IMAGE_SIZE
    assert plan.train_config.batch_size == 12 and plan.train_config.amp  # min(16, 12 images)
    assert train_plan.default_epochs(100) == 30 and train_plan.default_epochs(10_000) == 8
    assert images_per_epoch(12, 8) == 8 and images_per_epoch(5, 8) == 5 and images_per_epoch(16, 8) == 16
    assert train_plan.default_warmup(1) == 1 and train_plan.default_warmup(2) == 1
    assert train_plan.default_warmup(12) == 2 and train_plan.default_warmup(30) == 5


def test_warm_start_needs_the_same_classes_and_the_whole_architecture() -> None:
    cold = train_plan.make_plan(_facts(), TrainOptions())
    model = json.loads(json.dumps(train_plan.architecture(cold.model_config)))
    current = train_plan.CurrentModel(version=4, model=model, class_names=("background", "cat", "dog"))
    assert train_plan.make_plan(_facts(current=current), TrainOptions()).warm_start_from == 4
    renamed = dataclasses.replace(current, class_names=("background", "cat", "cow"))
    assert train_plan.make_plan(_facts(current=renamed), TrainOptions()).warm_start_from is None
    tuned = dataclasses.replace(current, model={**model, "freeze_backbone": False})
    assert train_plan.make_plan(_facts(current=tuned), TrainOptions()).warm_start_from is None
    with pytest.raises(UserError, match="no current model"):
        train_plan.make_plan(_facts(current=tuned), TrainOptions(warm_start=True))


def test_each_option_has_one_rule_for_the_ui_the_cli_and_the_settings(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    import launch
    from app.settings import train_defaults
    from app.tabs import train as train_tab
    from services.train_options import train_options

    for bad, message in [({"minutes": 0}, "minutes must be a positive number"),
                         ({"minutes": -1}, "minutes must be a positive number"),
                         ({"epochs": 1.5}, "epochs must be a positive whole number"),
                         ({"epochs": 0}, "epochs must be a positive whole number"),
                         ({"backbone": "vgg"}, "unknown backbone"), ({"mode": "fully"}, "unknown mode")]:
        with pytest.raises(UserError, match=message):
            train_options(**bad)
        with pytest.raises(UserError, match=message):
            train_defaults(json.dumps(bad))
        fields = {"mode": "auto", "backbone": "", "epochs": None, "image_size": None, "device": "cpu",
                  "minutes": None, "continue_model": True, **bad}
        with pytest.raises(UserError, match=message):
            train_tab._train_options(**fields)
    assert launch.main(["train", "--data", str(tmp_path), "--minutes", "0"]) != 0
    assert "minutes must be a positive number" in capsys.readouterr().err
    assert train_options(minutes="", epochs=3.0, backbone="").epochs == 3  # empty fields: defaults


def test_the_light_head_plan_prices_only_the_features_still_missing() -> None:
    speeds = {"cpu/efficientnet_lite0+light/64/160": 12.0, f"cpu/features/{LIGHT_FEATURES}": 3.0}
    cold = train_plan.make_plan(_facts(throughput=speeds), TrainOptions())
    assert cold.model_config.head == "light" and cold.model_config.backbone == "efficientnet_lite0"
    assert cold.feature_spec_key == LIGHT_FEATURES and cold.features_missing == 12  # none stored yet
    assert cold.features_s == 12 / 3.0
    stored = train_plan.make_plan(_facts(throughput=speeds, features_missing={LIGHT_FEATURES: 0}),
                                  TrainOptions())
    assert stored.epochs == cold.epochs and stored.features_s == 0
    assert stored.estimated_s == pytest.approx(cold.estimated_s - 4.0)
    assert "all ready" in stored.summary() and "12 image(s) still need them" in cold.summary()
    # the budget is the training's: features do not take epochs away; about 3,400 image views at most
    assert cold.estimated_s - cold.features_s <= cold.budget_s
    assert cold.epochs == 30  # 12 images: 30 epochs (the cap) in 240 s at 12 img/s
    fast = {**speeds, "cpu/efficientnet_lite0+light/64/160": 100.0}
    many = train_plan.make_plan(_facts(throughput=fast, images=334,
                                       counts=train_plan.LabelCounts(tagged=334, masked=0, unlabelled=0)),
                                TrainOptions())
    assert many.epochs == 11 and many.epochs * 334 >= train_plan.CPU_FEATURE_VIEWS  # 73 would fit
    # the paper head on request or with a backbone without stored features; the light head refuses one
    paper = train_plan.make_plan(_facts(), TrainOptions(model_overrides={"head": "paper"}))
    assert paper.model_config.head == "paper" and paper.feature_spec_key is None
    assert train_plan.make_plan(_facts(), TrainOptions(backbone="tiny")).model_config.head == "paper"
    with pytest.raises(UserError, match="no stored features"):
        train_plan.make_plan(_facts(), TrainOptions(backbone="resnet50", model_overrides={"head": "light"}))


def test_a_warm_light_head_round_takes_half_the_view_cap() -> None:
    """Continuing from the current model, the light head's cap of image views is halved as the
    time budget is, so a warm second round is faster than the first."""
    cold = train_plan.make_plan(_facts(), TrainOptions())
    current = train_plan.CurrentModel(version=1, model=dataclasses.asdict(cold.model_config),
                                      class_names=_facts().class_names)
    warm = train_plan.make_plan(_facts(current=current), TrainOptions())
    assert cold.epochs == 30 and cold.warm_start_from is None  # 12 images: the cap
    assert warm.warm_start_from == 1 and warm.epochs == 15 and warm.train_config.warmup_epochs == 0
    assert warm.estimated_s < cold.estimated_s
    fresh = train_plan.make_plan(_facts(current=current), TrainOptions(warm_start=False))
    assert fresh.epochs == cold.epochs
