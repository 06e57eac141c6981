"""The weights manifest without training: verified loading, refusals, and the identity metrics record.

Shipped from untrained models (``ship_random``), so that these checks run in seconds; the pipeline
tests ship trained ones.
"""
import dataclasses
import shutil

import pytest
import torch

from models import weights, zoo
from models.training import shipping
from tests.inference.test_analysis import ship_random


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    return ship_random(tmp_path_factory.mktemp("w"), ("resnet18", "unet_lite0"))


@pytest.fixture
def copy(shipped, tmp_path):
    return shutil.copytree(shipped, tmp_path / "w")


def test_tampered_or_missing_weights_fail_loudly(copy):
    blob = bytearray((copy / "unet_lite0.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (copy / "unet_lite0.safetensors").write_bytes(bytes(blob))
    with pytest.raises(weights.WeightsError, match="sha256"):
        weights.Manifest.read(copy).load("unet_lite0")
    (copy / "resnet18.safetensors").unlink()
    with pytest.raises(weights.WeightsError, match="missing"):
        weights.Manifest.read(copy).verify("resnet18")
    with pytest.raises(weights.WeightsError, match="no shipped weights for 'vgg19'"):
        weights.Manifest.read(copy).verify("vgg19")


def test_weights_that_no_longer_fit_the_registry_are_refused(copy):
    manifest = weights.Manifest.read(copy)
    manifest.models["unet_lite0"]["input"]["input_size"] += 32  # trained at another size than the registry says
    manifest.write()
    with pytest.raises(weights.WeightsError, match="registry now says"):
        weights.Manifest.read(copy).verify("unet_lite0")
    assert weights.Manifest.read(copy).verify("resnet18").is_file()  # the untouched entry still loads


def test_a_member_dropped_from_the_registry_is_named_and_can_be_retired(copy):
    manifest = weights.Manifest.read(copy)
    manifest.models["vgg19_bn"] = dict(manifest.models["resnet18"], file="vgg19_bn.safetensors")
    manifest.write()
    (copy / "vgg19_bn.safetensors").write_bytes((copy / "resnet18.safetensors").read_bytes())
    with pytest.raises(weights.WeightsError, match="no longer a registered model.*--retire vgg19_bn"):
        weights.Manifest.read(copy).verify("vgg19_bn")
    assert shipping.main(["--retire", "vgg19_bn", "--weights", str(copy)]) == 0
    after = weights.Manifest.read(copy)
    assert after.shipped() == ["resnet18", "unet_lite0"] and "fitted" not in after.ensemble
    assert not (copy / "vgg19_bn.safetensors").exists() and (copy / "resnet18.safetensors").is_file()
    with pytest.raises(weights.WeightsError, match="no shipped weights for 'vgg19_bn'"):
        weights.retire("vgg19_bn", copy)


def test_a_manifest_of_another_format_is_refused(copy):
    manifest = weights.Manifest.read(copy)
    manifest.data["format_version"] = 99
    manifest.write()
    with pytest.raises(weights.WeightsError, match="format 99, expected 1"):
        weights.Manifest.read(copy)


def test_the_identity_changes_with_any_file_or_calibration(copy):
    before = weights.Manifest.read(copy).identity()
    assert before["models"] == {n: weights.sha256_file(copy / f"{n}.safetensors") for n in ("resnet18", "unet_lite0")}
    manifest = weights.Manifest.read(copy)
    manifest.models["resnet18"]["temperature"] = 1.5
    manifest.write()
    recalibrated = weights.Manifest.read(copy).identity()
    assert recalibrated["models"] == before["models"]
    assert recalibrated["calibration_sha256"] != before["calibration_sha256"]
    manifest.ensemble["fitted"] = {"threshold": 0.45}
    manifest.write()
    assert weights.Manifest.read(copy).identity()["calibration_sha256"] != recalibrated["calibration_sha256"]


def test_the_identity_names_the_part_of_a_graph_that_runs_int8(copy, monkeypatch):
    """The same ranges with another ``int8_scope`` run another graph: results measured with one are stale."""
    manifest = weights.Manifest.read(copy)
    manifest.models["resnet18"]["int8_ranges"] = {"x": [-1.0, 1.0]}
    manifest.write()
    monkeypatch.setitem(zoo.REGISTRY, "resnet18", dataclasses.replace(zoo.get_spec("resnet18"), int8=True))
    whole = weights.Manifest.read(copy).identity()
    monkeypatch.setitem(zoo.REGISTRY, "resnet18", dataclasses.replace(zoo.get_spec("resnet18"), int8=True,
                                                                      int8_scope="/layer1/"))
    assert weights.Manifest.read(copy).identity()["calibration_sha256"] != whole["calibration_sha256"]


def test_verify_command_checks_every_file(copy, capsys):
    assert weights.verify_main(["--weights", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "resnet18: resnet18.safetensors ok" in out and "unet_lite0: unet_lite0.safetensors ok" in out
    assert "2 models," in out
    (copy / "resnet18.safetensors").write_bytes(b"x")
    with pytest.raises(weights.WeightsError, match="sha256"):
        weights.verify_main(["--weights", str(copy)])


def test_loading_skips_random_init_yet_gives_the_file_s_values_and_nothing_left_on_meta(shipped):
    from safetensors.torch import load_file
    for name in ("resnet18", "unet_lite0"):
        model = weights.Manifest.read(shipped).load(name)
        state = load_file(shipped / f"{name}.safetensors")
        tensors = dict(model.state_dict())
        assert tensors.keys() == state.keys() and not any(t.is_meta for t in tensors.values())
        assert all(torch.equal(tensors[k], v.to(tensors[k].dtype)) for k, v in state.items())


def test_a_buffer_the_file_does_not_hold_is_built_for_real(shipped, monkeypatch):
    real = weights.build_model

    def with_constant(name, init=None):
        model = real(name, init=init)
        model.register_buffer("constant", torch.arange(3.0), persistent=False)  # made in __init__, not in the file
        return model
    monkeypatch.setattr(weights, "build_model", with_constant)
    model = weights.Manifest.read(shipped).load("resnet18")
    assert torch.equal(model.constant, torch.arange(3.0))
