"""Datasets (digits, CIFAR in its own pickle format, Tiny-ImageNet folders) and the model factory."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from tdecomp import data, models
from tdecomp.config import load_config
from tdecomp.train import train


def test_digits_split_is_fixed_and_standardized():
    a, b = data.create("digits", seed=0), data.create("digits", seed=5)
    assert len(a.train) == 1437 and len(a.test) == 360
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])  # the training seed does not move the split
    x = a.train.tensors[0]
    assert x.shape[1:] == (1, 8, 8) and abs(float(x.mean())) < 1e-5 and float(x.std()) == pytest.approx(1, abs=1e-3)
    assert len(data.create("digits", subset=100).train) == 100


def write_cifar(root, num_classes: int, per_batch: int = 4) -> None:
    """Tiny files in CIFAR's python format (pickled dicts of uint8 rows of 3·32·32)."""
    rng = np.random.default_rng(0)
    label_key = "labels" if num_classes == 10 else "fine_labels"
    folder = root / ("cifar-10-batches-py" if num_classes == 10 else "cifar-100-python")
    folder.mkdir(parents=True)
    names = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]) if num_classes == 10 else ["train", "test"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, num_classes, per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta_name, meta_key = ("batches.meta", "label_names") if num_classes == 10 else ("meta", "fine_label_names")
    (folder / meta_name).write_bytes(pickle.dumps({meta_key: [f"class{i}" for i in range(num_classes)]}))


@pytest.mark.parametrize("num_classes,train_size", [(10, 20), (100, 4)])
def test_cifar_loaders_read_files_in_cifar_format(tmp_path, num_classes, train_size):
    write_cifar(tmp_path, num_classes)
    bundle = data.create(f"cifar{num_classes}", root=str(tmp_path))
    assert len(bundle.train) == train_size and len(bundle.test) == 4
    image, label = bundle.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < num_classes
    assert bundle.model_kwargs == {"num_classes": num_classes, "in_channels": 3}


def test_missing_cifar_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/cifar-10-batches-py.*download=true"):
        data.create("cifar10", root=str(tmp_path))


def test_training_runs_on_cifar_format_files(tmp_path):
    write_cifar(tmp_path / "data", 10, per_batch=16)
    cfg = load_config(None, dict(model="resnet20", data="cifar10", data_dir=str(tmp_path / "data"), epochs=1,
                                 batch_size=32, family="tt", rank=0.2, out=str(tmp_path / "run"), progress=False))
    assert train(cfg)["epochs"] == 1


def test_tiny_imagenet_reads_the_release_layout(tmp_path):
    from PIL import Image

    base = tmp_path / "tiny-imagenet-200"
    lines = []
    for k, wnid in enumerate(["n01", "n02"]):
        (base / "train" / wnid / "images").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 64), (k * 100, i, 0)).save(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
        (base / "val" / "images").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64)).save(base / "val" / "images" / f"val_{k}.JPEG")
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t64\t64")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines))
    bundle = data.create("tiny-imagenet", root=str(tmp_path))
    assert len(bundle.train) == 4 and len(bundle.test) == 2 and bundle.test[1][1] == 1
    assert bundle.train[0][0].shape == (3, 64, 64) and bundle.model_kwargs["num_classes"] == 2
    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200"):
        data.create("tiny-imagenet", root=str(tmp_path / "nowhere"))


@pytest.mark.parametrize("name,kwargs,params", [
    ("resnet20", {}, 269_722), ("resnet32", {}, 464_154), ("resnet56", {}, 853_018),
    ("resnet32", {"width": 2}, 1_849_898),
    ("vgg19", {}, 20_035_018), ("wrn16_4", {}, 2_748_890),
])
def test_models_have_the_published_sizes_and_run(name, kwargs, params):
    """ResNets: the counts akamaster publishes (269,722 / 464,154 / 853,018); VGG-19-BN 20.04 M."""
    model = models.create(name, num_classes=10, in_channels=3, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"model='resnet18' is not valid; expected one of: .*'resnet20'"):
        models.create("resnet18")
