"""Tests for catdog.models: the architecture registry, model building and the LightningModule.

Everything runs offline on tiny inputs (32-64 px): the machine's CPU is shared.
"""

from __future__ import annotations

import math
import urllib.error
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from catdog.errors import CatdogError
from catdog.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassifierModule,
    arch_spec,
    build_model,
    default_normalization,
    fc_layer,
    feature_layer,
    get_submodule,
    load_classifier,
    resolve_layer,
    supported_archs,
)
from catdog.models.module import check_finite_weights
from catdog.models.weights import weights_left_uninitialised

# Real offline ImageNet weights, see ../shared/weights/README.md (relative to the repository).
SHARED_WEIGHTS = (
    Path(__file__).resolve().parents[2] / "shared" / "weights" / "mobilenet_v2_imagenet1001.pth"
)


def one_line(error: pytest.ExceptionInfo[CatdogError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def is_plain(value: object) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, list):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


# --- registry ------------------------------------------------------------------------------


def test_supported_archs_cover_the_gap_linear_families() -> None:
    archs = supported_archs(exact_cam=True)
    for name in [
        "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2",
        "efficientnet_b0", "efficientnet_b7", "efficientnet_v2_s", "densenet121", "regnet_y_400mf",
    ]:  # fmt: skip
        assert name in archs
    others = supported_archs(exact_cam=False)
    for name in ["mobilenet_v3_small", "convnext_tiny", "vit_b_16", "swin_t", "vgg11"]:
        assert name not in archs and name in others  # trained and explained by gradient methods
    assert "googlenet" not in supported_archs()
    assert archs == sorted(archs) and sorted(archs + others) == supported_archs()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", ("resnet18", "layer4", "fc", False, True)),
        ("ResNeXt50_32x4d", ("resnext50_32x4d", "layer4", "fc", False, True)),
        ("wide_resnet50_2", ("wide_resnet50_2", "layer4", "fc", False, True)),
        ("mobilenet_v2", ("mobilenet_v2", "features", "classifier.1", False, True)),
        ("efficientnet_v2_s", ("efficientnet_v2_s", "features", "classifier.1", False, True)),
        ("densenet121", ("densenet121", "features", "classifier", True, True)),
        ("regnet_x_400mf", ("regnet_x_400mf", "trunk_output", "fc", False, True)),
        ("vit_b_16", ("vit_b_16", "encoder.layers.-1.ln_1", "heads.head", False, False)),
        ("swin_t", ("swin_t", "norm", "head", False, False)),
        ("convnext_tiny", ("convnext_tiny", "features", "classifier.2", False, False)),
        ("mobilenet_v3_large", ("mobilenet_v3_large", "features", "classifier.3", False, False)),
        ("vgg16", ("vgg16", "features", "classifier.6", False, False)),
    ],
)
def test_arch_spec(name: str, expected: tuple) -> None:
    spec = arch_spec(name)
    assert (spec.name, spec.feature_layer, spec.fc_layer, spec.feature_relu, spec.exact_cam) == expected
    assert spec.stages == () or len(spec.stages) == 4
    assert spec.reshape == {"vit_b_16": "tokens", "swin_t": "channels_last"}.get(spec.name)


@pytest.mark.parametrize(
    ("name", "why"),
    [("googlenet", "auxiliary logits"), ("squeezenet1_0", "1x1 convolution"), ("resnet19", "Unknown architecture")],
)
def test_arch_spec_rejects_with_reason_and_alternatives(name: str, why: str) -> None:
    with pytest.raises(CatdogError) as error:
        arch_spec(name)
    message = one_line(error)
    assert why in message and name in message and "resnet*" in message and "vit*" in message


@pytest.mark.parametrize("arch", ["vit_b_16", "swin_t", "convnext_tiny", "mobilenet_v3_small", "vgg11"])
def test_every_family_gets_a_new_head_and_its_layers_resolve(arch: str) -> None:
    spec = arch_spec(arch)
    with weights_left_uninitialised():  # names and shapes only: vgg11's 133 M weights take 1 s to initialise
        model = build_model(arch, num_classes=3)
    assert fc_layer(model, spec).out_features == 3
    for layer in (spec.feature_layer, *spec.stages):
        resolve_layer(model, layer)


# One architecture per family: a hook on the feature layer, then (relu) -> spatial mean -> fc,
# must reproduce the logits exactly. This is what makes CAM exact.
@pytest.mark.parametrize(
    "arch",
    [
        "resnet18", "mobilenet_v2", "efficientnet_b0", "densenet121", "regnet_y_400mf",
        "mnasnet0_5", "shufflenet_v2_x0_5",
    ],  # fmt: skip
)
def test_feature_and_fc_layers_reproduce_logits(arch: str) -> None:
    torch.manual_seed(0)
    spec = arch_spec(arch)
    model = build_model(arch, num_classes=3).eval()
    captured: list[torch.Tensor] = []
    hook = feature_layer(model, spec).register_forward_hook(lambda m, i, out: captured.append(out))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        hook.remove()
        features = captured[0]
        assert features.ndim == 4 and features.shape[1] == fc_layer(model, spec).in_features
        if spec.feature_relu:
            features = F.relu(features)
        rebuilt = fc_layer(model, spec)(features.mean(dim=(2, 3)))
    assert logits.shape == (2, 3)
    torch.testing.assert_close(rebuilt, logits, atol=1e-4, rtol=0)


def test_get_submodule_names_the_mismatch() -> None:
    with pytest.raises(CatdogError, match="layer=layer4 is not a module of MobileNetV2"):
        get_submodule(torchvision.models.mobilenet_v2(num_classes=2), "layer4")


# --- build_model and weights -----------------------------------------------------------------


@pytest.mark.parametrize("weights", [None, "none", "NULL", "Null", ""])
def test_build_from_scratch(weights: str | None) -> None:
    model = build_model("mobilenet_v2", 5, weights)
    head = fc_layer(model, "mobilenet_v2")
    assert (head.in_features, head.out_features) == (1280, 5)
    assert isinstance(model.classifier[0], nn.Dropout)  # kept before the new head


def test_unknown_weights_name_lists_valid_names() -> None:
    with pytest.raises(CatdogError) as error:
        build_model("resnet18", 2, "IMAGENET_V9")
    message = one_line(error)
    assert "IMAGENET1K_V1" in message and "DEFAULT" in message and "model.weights=null" in message


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(CatdogError, match="does not exist"):
        build_model("resnet18", 2, str(tmp_path / "nope.pth"))


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (urllib.error.URLError("no network"), "no network"),
        (urllib.error.HTTPError("https://x", 403, "Forbidden", None, None), "HTTP Error 403"),
        (TimeoutError("timed out"), "TimeoutError: timed out"),
    ],
)
def test_failed_download_gives_one_line_with_both_alternatives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: OSError, reason: str
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache: torch.hub must download

    def offline(*args: object, **kwargs: object) -> None:
        raise failure

    # The lowest level torch.hub.load_state_dict_from_url (used by torchvision) goes through.
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CatdogError) as error:
        build_model("resnet18", 2, "IMAGENET1K_V1")
    message = one_line(error)
    assert message.startswith("Could not download torchvision weights resnet18 IMAGENET1K_V1 (")
    assert f"({reason}" in message
    assert "model.weights=null" in message and "model.weights=/path/to/state_dict.pth" in message


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model_with_module_prefix"])
def test_local_state_dict_with_1001_classes_loads_backbone(tmp_path: Path, wrap: str) -> None:
    torch.manual_seed(0)
    source = torchvision.models.mobilenet_v2(num_classes=1001).state_dict()
    payload = {
        "bare": source,
        "state_dict": {"state_dict": source},
        "model_with_module_prefix": {"model": {f"module.{k}": v for k, v in source.items()}},
    }[wrap]
    path = tmp_path / "imagenet1001.pth"
    torch.save(payload, path)
    model = build_model("mobilenet_v2", 2, str(path))
    loaded = model.state_dict()
    for key, value in source.items():
        if not key.startswith("classifier.1."):
            assert torch.equal(loaded[key], value), key
    assert loaded["classifier.1.weight"].shape == (2, 1280)


def test_state_dict_of_another_architecture_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    with pytest.raises(CatdogError) as error:
        build_model("mobilenet_v2", 2, path)
    message = one_line(error)
    assert "does not fit the mobilenet_v2 architecture" in message
    assert "missing keys features.0.0.weight" in message
    assert "unexpected keys conv1.weight" in message


def test_state_dict_with_wrong_shapes_is_rejected(tmp_path: Path) -> None:
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    path = tmp_path / "gray.pth"
    torch.save(state, path)
    with pytest.raises(CatdogError, match=r"shape mismatches \(file vs model\) conv1.weight"):
        build_model("resnet18", 2, path)


def test_weights_file_that_is_not_torch(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("not a tensor\n")
    with pytest.raises(CatdogError, match="could not be read as a torch file"):
        build_model("resnet18", 2, path)


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="no shared offline ImageNet weights")
def test_shared_imagenet1001_mobilenet_v2_loads() -> None:
    model = build_model("mobilenet_v2", 2, str(SHARED_WEIGHTS))
    source = torch.load(SHARED_WEIGHTS, map_location="cpu", weights_only=True)
    loaded = model.state_dict()
    for key in ["features.18.0.weight", "features.1.conv.0.1.running_var"]:
        assert torch.equal(loaded[key], source[key])
    assert loaded["classifier.1.weight"].shape == (2, 1280)


def test_default_normalization() -> None:
    imagenet = (list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert default_normalization("resnet18", None) == imagenet
    assert default_normalization("resnet18", "IMAGENET1K_V1") == imagenet
    assert default_normalization("efficientnet_v2_l", "default") == ([0.5] * 3, [0.5] * 3)


# --- ClassifierModule --------------------------------------------------------------------------


def test_hparams_are_plain_and_resolved() -> None:
    optimizer = OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9})
    data = OmegaConf.create({"layout": "folder", "root": "/pets", "split": {"seed": 1, "val": 0.2}})
    module = ClassifierModule(
        arch="mobilenet_v2", class_names=("a", "b", "c"), optimizer=optimizer, data=data
    )
    hparams = dict(module.hparams)
    assert is_plain(hparams)
    assert hparams["class_names"] == ["a", "b", "c"]
    assert hparams["mean"] == list(IMAGENET_MEAN) and hparams["std"] == list(IMAGENET_STD)
    assert hparams["optimizer"] == {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9}
    assert hparams["data"]["split"] == {"seed": 1, "val": 0.2}
    assert (hparams["feature_layer"], hparams["fc_layer"]) == ("features", "classifier.1")
    assert ClassifierModule().hparams.optimizer == {"_target_": "torch.optim.AdamW", "lr": 1e-3}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_names": ["cat"]}, "at least 2 distinct"),
        ({"class_names": ["cat", "cat"]}, "at least 2 distinct"),
        ({"mean": [0.5, 0.5]}, "mean must be 3 numbers"),
        ({"optimizer": {"lr": 0.1}}, "must be a mapping with a _target_"),
        ({"scheduler": {"_target_": "x", "interval": "batch"}}, "'epoch' or 'step'"),
        ({"label_smoothing": 1.0}, r"\[0, 1\)"),
        ({"data": {"root": object()}}, "data.root must hold plain values"),
    ],
)
def test_invalid_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(CatdogError, match=match):
        ClassifierModule(**kwargs)


def test_forward_channels_last_matches_plain_network() -> None:
    module = ClassifierModule(arch="resnet18", channels_last=True).eval()
    assert module.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(x), module.net(x), atol=1e-5, rtol=0)


def test_freeze_backbone_and_frozen_batchnorm() -> None:
    module = ClassifierModule(arch="resnet18", freeze_backbone=True, train_bn=False)
    trainable = [n for n, p in module.net.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    module.eval()
    module.train()
    batchnorms = [m for m in module.net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batchnorms and not any(m.training for m in batchnorms)
    assert module.training and module.net.layer1.training and module.net.fc.training
    optimizer = module.configure_optimizers()["optimizer"]
    assert [len(g["params"]) for g in optimizer.param_groups] == [2]


def test_backbone_lr_gives_two_param_groups() -> None:
    module = ClassifierModule(
        arch="mobilenet_v2",
        backbone_lr=1e-4,
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-2, "weight_decay": 0.0},
    )
    optimizer = module.configure_optimizers()["optimizer"]
    backbone, head = optimizer.param_groups
    assert (backbone["name"], backbone["lr"]) == ("backbone", 1e-4)
    assert (head["name"], head["lr"]) == ("head", 1e-2)
    assert head["params"] == [module.net.classifier[1].weight, module.net.classifier[1].bias]
    assert len(backbone["params"]) + 2 == len(list(module.net.parameters()))
    assert backbone["params"][0] is module.net.features[0][0].weight  # the real parameters


def test_single_param_group_without_backbone_lr() -> None:
    optimizer = ClassifierModule(arch="resnet18").configure_optimizers()["optimizer"]
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["lr"] == 1e-3


def test_scheduler_config() -> None:
    module = ClassifierModule(
        arch="resnet18",
        scheduler={
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "T_max": 5,
            "interval": "step",
        },
    )
    config = module.configure_optimizers()
    scheduler = config["lr_scheduler"]
    assert isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler["scheduler"].optimizer is config["optimizer"]
    assert scheduler["interval"] == "step" and "monitor" not in scheduler

    plateau = ClassifierModule(
        arch="resnet18",
        scheduler={"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "monitor": "val/loss"},
    ).configure_optimizers()["lr_scheduler"]
    assert (plateau["interval"], plateau["monitor"]) == ("epoch", "val/loss")
    assert ClassifierModule(arch="resnet18", scheduler={}).hparams.scheduler is None


def test_bad_optimizer_target_is_a_catdog_error() -> None:
    # Rejected when the module is built, before any training time is spent.
    with pytest.raises(CatdogError, match="NoSuchOptimizer' is not a torch.optim class"):
        ClassifierModule(optimizer={"_target_": "torch.optim.NoSuchOptimizer"}).configure_optimizers()


# --- training, testing, checkpoints ------------------------------------------------------------


def loader(n: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=generator)
    labels = torch.arange(n) % 3
    return DataLoader(TensorDataset(images, labels, torch.arange(n)), batch_size=4)


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ClassifierModule, pl.Trainer, Path, dict[str, torch.Tensor]]:
    """A resnet18 fit for one tiny epoch with frozen BatchNorm; its best.ckpt and BN stats."""
    root = tmp_path_factory.mktemp("train")
    pl.seed_everything(0)
    module = ClassifierModule(
        arch="resnet18",
        class_names=["cat", "dog", "fox"],
        train_bn=False,
        backbone_lr=1e-4,
        scheduler={"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": 2},
        data={"layout": "synthetic", "seed": 0},
        image_size=32,
    )
    bn_before = module.net.bn1.running_mean.clone()
    checkpoint = ModelCheckpoint(dirpath=root, filename="best", monitor="val/acc", mode="max")
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(module, loader(8, 0), loader(4, 1))
    return module, trainer, Path(checkpoint.best_model_path), {"bn_before": bn_before}


def test_training_logs_metrics_and_keeps_batchnorm_frozen(trained) -> None:
    module, trainer, _, extra = trained
    for key in ["train/loss", "train/acc", "val/loss", "val/acc"]:
        assert key in trainer.callback_metrics
    assert torch.equal(module.net.bn1.running_mean, extra["bn_before"])


def test_checkpoint_is_weights_only_and_reloads_identically(trained) -> None:
    module, _, path, _ = trained
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert is_plain(raw["hyper_parameters"])
    assert raw["hyper_parameters"]["class_names"] == ["cat", "dog", "fox"]
    reloaded = load_classifier(path)
    assert not reloaded.training and reloaded.class_names == ["cat", "dog", "fox"]
    assert reloaded.hparams.data == {"layout": "synthetic", "seed": 0}
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), module.eval()(x), atol=0, rtol=0)


def test_load_classifier_never_reads_pretrained_weights(trained, tmp_path: Path) -> None:
    _, _, path, _ = trained
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["weights"] = "IMAGENET1K_V1"  # would need the network
    torch.save(checkpoint, tmp_path / "pretrained.ckpt")
    assert load_classifier(tmp_path / "pretrained.ckpt").hparams.weights == "IMAGENET1K_V1"


def test_test_results(trained) -> None:
    module, trainer, _, _ = trained
    metrics = trainer.test(module, loader(6, 2), verbose=False)[0]
    results = module.test_results
    assert is_plain(results)
    assert results["class_names"] == ["cat", "dog", "fox"]
    matrix = results["confusion_matrix"]
    assert sum(map(sum, matrix)) == 6 and [sum(row) for row in matrix] == [2, 2, 2]
    assert results["per_class"]["dog"]["support"] == 2
    assert set(results["per_class"]["fox"]) == {"precision", "recall", "support"}
    assert results["accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(3)) / 6)
    assert results["accuracy"] == pytest.approx(metrics["test/acc"])
    assert results["loss"] == pytest.approx(metrics["test/loss"], abs=1e-5)


def test_load_classifier_skips_the_random_initialisation_its_weights_replace(trained) -> None:
    """The network built to receive a checkpoint draws no random numbers, gets exactly the saved weights, and
    torch.nn.init is left as it was."""
    _, _, path, _ = trained
    initialisers = {name: getattr(nn.init, name) for name in dir(nn.init)}
    rng = torch.get_rng_state()
    loaded = load_classifier(path)
    assert torch.equal(torch.get_rng_state(), rng)
    assert {name: getattr(nn.init, name) for name in dir(nn.init)} == initialisers
    saved = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(value, saved[key]) for key, value in loaded.state_dict().items() if key.startswith("net."))


def _uninitialised_network_takes_the_weights_of(arch: str) -> None:
    torch.manual_seed(0)
    built = torchvision.models.get_model(arch, num_classes=3)
    with weights_left_uninitialised():
        bare = torchvision.models.get_model(arch, num_classes=3)
    bare.load_state_dict(built.state_dict())
    # Every tensor, the buffers a state dict leaves out included: none of them may keep uninitialised memory.
    for (name, expected), (_, got) in zip(
        [*built.named_parameters(), *built.named_buffers()], [*bare.named_parameters(), *bare.named_buffers()]
    ):
        assert torch.equal(got, expected), f"{arch}: {name}"


@pytest.mark.parametrize("arch", ["resnet18", "vit_b_16", "swin_t", "mobilenet_v3_small", "efficientnet_b0"])
def test_an_uninitialised_network_of_each_family_takes_every_weight_of_a_state_dict(arch: str) -> None:
    _uninitialised_network_takes_the_weights_of(arch)


# The smallest network of each torchvision builder and version (all 75 architectures pass: bench/RESULTS.md).
ONE_PER_BUILDER = [
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_v2_s", "mnasnet0_5", "mobilenet_v2", "regnet_x_400mf",
    "regnet_y_400mf", "resnext50_32x4d", "wide_resnet50_2", "shufflenet_v2_x0_5", "swin_v2_t", "vgg11", "vgg11_bn",
    "vit_b_32",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("arch", ONE_PER_BUILDER)
def test_an_uninitialised_network_of_every_builder_takes_every_weight_of_a_state_dict(arch: str) -> None:
    _uninitialised_network_takes_the_weights_of(arch)


def test_load_classifier_errors(trained, tmp_path: Path) -> None:
    module, _, path, _ = trained
    with pytest.raises(CatdogError, match="does not exist"):
        load_classifier(tmp_path / "missing.ckpt")

    text = tmp_path / "notes.ckpt"
    text.write_text("hello\n")
    with pytest.raises(CatdogError) as error:
        load_classifier(text)
    assert "could not be read as a torch file" in one_line(error)

    plain = tmp_path / "plain.ckpt"
    torch.save(module.state_dict(), plain)
    with pytest.raises(CatdogError) as error:
        load_classifier(plain)
    assert "is not a catdog checkpoint (no hyper_parameters)" in one_line(error)

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    mobilenet = ClassifierModule(arch="mobilenet_v2", class_names=["cat", "dog", "fox"])
    checkpoint["state_dict"] = mobilenet.state_dict()
    other = tmp_path / "other.ckpt"
    torch.save(checkpoint, other)
    with pytest.raises(CatdogError) as error:
        load_classifier(other)
    message = one_line(error)
    assert "does not fit the resnet18 architecture" in message
    assert "missing keys net.conv1.weight" in message


def test_a_vision_transformer_at_another_input_size_is_a_one_line_error() -> None:
    with pytest.raises(CatdogError, match=r"vit_b_16 takes 224x224 inputs .* set data.image_size=224"):
        ClassifierModule(arch="vit_b_16", class_names=["a", "b"], weights=None, image_size=160)


# --- issue 19 item 3: a checkpoint is data, no _target_ below the allow-listed top level -------
OPEN = {"_target_": "builtins.open", "file": "X", "mode": "w"}
NESTED_TARGETS = [
    # the demonstrated exploit: a nested _target_ is instantiated by Hydra's recursive instantiate
    {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": OPEN}},
    {"scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": OPEN}},
    {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1, "betas": [OPEN]}},
    {"data": {"root": "x", "deep": [{"k": OPEN}]}},
]


@pytest.mark.parametrize("hparams", NESTED_TARGETS)
def test_nested_target_in_a_checkpoint_is_refused_before_anything_runs(tmp_path: Path, hparams: dict) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    module = ClassifierModule(arch="resnet18", class_names=["cat", "dog"], image_size=32)
    bad = dict(module.hparams)
    for key, value in hparams.items():
        text = repr(value).replace("'X'", repr(str(victim)))
        bad[key] = eval(text)  # the victim's path inside the nested config
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": bad}, path)
    with pytest.raises(CatdogError, match="_target_") as error:
        load_classifier(path).configure_optimizers()
    assert "\n" not in str(error.value)
    assert victim.read_text() == "keep me"
    with pytest.raises(CatdogError, match="_target_"):  # the same settings given directly
        ClassifierModule(arch="resnet18", class_names=["cat", "dog"], image_size=32, **hparams).configure_optimizers()
    assert victim.read_text() == "keep me"


# --- issue #19 item 5: malformed checkpoint settings and diverged weights are one-line errors ---------------
def _edited_checkpoint(tmp_path: Path, edit) -> Path:
    from helpers import save_checkpoint

    path = save_checkpoint(tmp_path / "x.ckpt", ["cat", "dog"])
    checkpoint = torch.load(path, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("image_size", -5, "image_size"),
        ("image_size", 10**9, "image_size"),
        ("image_size", "big", "image_size"),
        ("std", [0.0, 0.2, 0.2], "std"),
        ("mean", [float("nan"), 0.5, 0.5], "mean"),
    ],
)
def test_malformed_checkpoint_settings_are_one_line_errors(tmp_path: Path, key: str, value, match: str) -> None:
    from helpers import one_line

    path = _edited_checkpoint(tmp_path, lambda c: c["hyper_parameters"].__setitem__(key, value))
    with pytest.raises(CatdogError, match=match) as err:
        load_classifier(path)
    one_line(err)


def test_hyper_parameters_as_a_list_is_a_one_line_error(tmp_path: Path) -> None:
    from helpers import one_line

    path = _edited_checkpoint(tmp_path, lambda c: c.__setitem__("hyper_parameters", [1, 2]))
    with pytest.raises(CatdogError) as err:
        load_classifier(path)
    one_line(err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_check_finite_weights_names_exactly_the_tensors_torch_isfinite_refuses(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    weights = {f"t{i}": torch.randn(int(n), generator=generator).to(dtype) for i, n in enumerate(range(1, 40, 3))}
    weights["empty"], weights["count"] = torch.zeros(0, dtype=dtype), torch.tensor(7)
    for name, value in zip(["t2", "t5", "t9", "t12"], [math.nan, math.inf, -math.inf, 1e300]):
        weights[name][-1] = torch.tensor(value, dtype=torch.float64).to(dtype)  # 1e300: infinite but in float64
    reference = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    with pytest.raises(CatdogError) as err:
        check_finite_weights(weights, Path("x.ckpt"))
    assert f"in {len(reference)} tensor(s) (first: {reference[0]})" in one_line(err)
    check_finite_weights({k: v for k, v in weights.items() if k not in reference}, Path("x.ckpt"))


def test_diverged_checkpoint_says_the_model_outputs_nan(tmp_path: Path) -> None:
    """explain crashed ('cannot convert float NaN to integer') and evaluate reported 33% on NaN weights."""
    from helpers import explain_cfg, make_config, make_trained_run, one_line, write_images

    from catdog.explain.pipeline import explain
    from catdog.pipelines.evaluate import evaluate

    def poison(checkpoint: dict) -> None:
        checkpoint["state_dict"]["net.fc.weight"][0, 0] = float("nan")

    path = _edited_checkpoint(tmp_path, poison)
    with pytest.raises(CatdogError, match="NaN") as err:
        load_classifier(path)
    one_line(err)
    images = tmp_path / "photos"
    write_images(images, {"cat": 2, "dog": 1}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"])
    (run / "checkpoints" / "best.ckpt").write_bytes(path.read_bytes())
    with pytest.raises(CatdogError, match="NaN"):
        explain(explain_cfg(run))
    with pytest.raises(CatdogError, match="NaN"):
        evaluate(make_config("evaluate", [f"ckpt={run}", "progress=false", "data.num_workers=0"]))


def test_finite_weights_that_overflow_say_the_model_outputs_nan(tmp_path: Path) -> None:
    from helpers import explain_cfg, make_config, make_trained_run, write_images

    from catdog.explain.pipeline import explain
    from catdog.pipelines.evaluate import evaluate

    images = tmp_path / "photos"
    write_images(images, {"cat": 2, "dog": 1}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"])
    # Finite weights (3e38 < float32's 3.4e38) whose sums over 512 positive features overflow to infinity.
    path = _edited_checkpoint(tmp_path, lambda c: c["state_dict"]["net.fc.weight"].fill_(3e38))
    (run / "checkpoints" / "best.ckpt").write_bytes(path.read_bytes())
    with pytest.raises(CatdogError, match="NaN"):
        explain(explain_cfg(run))
    with pytest.raises(CatdogError, match="NaN"):
        evaluate(make_config("evaluate", [f"ckpt={run}", "progress=false", "data.num_workers=0"]))


# --- issue #18: the settings record keeps the checkpoint's flat hyper-parameters ------------------------------
# The hyper_parameters of a checkpoint written by scripts/train.py before ClassifierSettings (commit d7de9ae,
# demo data, 1 epoch), paths shortened: the contract explain, evaluate and compare load.
MAIN_D7DE9AE_HPARAMS = {
    "arch": "resnet18",
    "class_names": ["cat", "dog", "none"],
    "weights": None,
    "image_size": 112,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "freeze_backbone": False,
    "train_bn": True,
    "backbone_lr": None,
    "optimizer": {"_target_": "torch.optim.AdamW", "lr": 0.001, "weight_decay": 0.0001},
    "scheduler": {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": 1, "interval": "epoch"},
    "channels_last": True,
    "data": {
        "layout": "demo", "root": "/data/demo", "manifest": None, "image_size": 112, "batch_size": 64,
        "num_workers": 2, "val_fraction": 0.15, "test_fraction": 0.15, "split_seed": 0, "augment": True,
        "cache_images": False, "cache_features": False, "train_image_size": None,
        "augment_paste": {"p": 0.0, "scale": [0.25, 0.9], "backgrounds": None},
        "num_per_class": 250, "generator_seed": 0, "split_csv": "/runs/train/x/split.csv",
    },
    "label_smoothing": 0.0,
    "freeze_epochs": 0,
    "no_decay_norm_bias": True,
    "seed": 42,
    "feature_layer": "layer4",
    "fc_layer": "fc",
}
# Keys that checkpoints of older versions lack (what they meant then: the field defaults).
NEWER_KEYS = {"label_smoothing": 0.0, "freeze_epochs": 0, "no_decay_norm_bias": False, "seed": 0}


def _old_checkpoint(path: Path, hparams: dict) -> Path:
    """A checkpoint in the layout Lightning and the old ClassifierModule wrote (no catdog code involved)."""
    net = torchvision.models.resnet18(num_classes=len(hparams["class_names"]))
    state = {f"net.{key}": value for key, value in net.state_dict().items()}
    torch.save({"epoch": 0, "global_step": 8, "state_dict": state, "hyper_parameters": hparams}, path)
    return path


@pytest.mark.parametrize("older", [False, True], ids=["main-d7de9ae", "before-label-smoothing"])
def test_checkpoints_of_the_flat_layout_keep_loading(tmp_path: Path, older: bool) -> None:
    hparams = {k: v for k, v in MAIN_D7DE9AE_HPARAMS.items() if not (older and k in NEWER_KEYS)}
    path = _old_checkpoint(tmp_path / "old.ckpt", hparams)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # the contract: plain data
    module = load_classifier(path)
    expected = {**MAIN_D7DE9AE_HPARAMS, **(NEWER_KEYS if older else {})}
    assert dict(module.hparams) == expected and list(module.hparams) == list(MAIN_D7DE9AE_HPARAMS)
    assert module.class_names == ["cat", "dog", "none"] and not module.training
    assert torch.equal(module.net.fc.weight, raw["state_dict"]["net.fc.weight"])
    # Validated as before: a bad value in the old layout is still refused.
    bad = _old_checkpoint(tmp_path / "bad.ckpt", {**hparams, "std": [0.0, 0.2, 0.2]})
    with pytest.raises(CatdogError, match="std must be 3 positive numbers"):
        load_classifier(bad)


def test_settings_record_is_the_flat_hyper_parameters() -> None:
    from catdog.models.module import ClassifierSettings

    names = [k for k in MAIN_D7DE9AE_HPARAMS if k not in ("feature_layer", "fc_layer")]
    assert list(ClassifierSettings.names()) == names
    settings = ClassifierSettings.from_hparams({k: MAIN_D7DE9AE_HPARAMS[k] for k in names})
    assert settings.to_hparams() == MAIN_D7DE9AE_HPARAMS
    # A record and keyword overrides build the same module as the flat keywords alone.
    by_record = ClassifierModule(settings, image_size=64)
    by_keywords = ClassifierModule(**{**{k: MAIN_D7DE9AE_HPARAMS[k] for k in names}, "image_size": 64})
    assert dict(by_record.hparams) == dict(by_keywords.hparams) == {**MAIN_D7DE9AE_HPARAMS, "image_size": 64}
    with pytest.raises(TypeError, match="no_such_setting"):
        ClassifierModule(no_such_setting=1)
