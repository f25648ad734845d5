"""ONNX export of the landmark network and ONNX Runtime inference agree with PyTorch on real crops."""

from __future__ import annotations

import numpy as np
import pytest

from facelandmarks.inference.landmarker import FaceLandmarker
from facelandmarks.inference.onnx_runtime import OnnxLandmarkNetwork, export_onnx


@pytest.mark.slow
def test_onnx_and_torch_agree_within_0_05_px_on_real_crops(tiny_checkpoint, small_crops, tmp_path):
    from facelandmarks.io.images import read_image

    crops_table, _, _ = small_crops
    crops = np.stack([read_image(p) for p in crops_table["crop_path"]])
    path = export_onnx(tiny_checkpoint, tmp_path / "model.onnx")
    torch_lm = FaceLandmarker.load(tiny_checkpoint, device="cpu")
    onnx_lm = FaceLandmarker.load(path, runtime="onnx", num_threads=1)
    assert onnx_lm.config == torch_lm.config  # crop settings travel inside the .onnx file
    assert onnx_lm.checkpoint_sha256 == torch_lm.checkpoint_sha256
    a = torch_lm.predict_crops(crops)
    for batch in (1, 3, len(crops)):  # dynamic batch axis
        onnx_lm.batch_size = batch
        b = onnx_lm.predict_crops(crops)
        assert b.shape == a.shape == (len(crops), 68, 2)
        assert np.abs(a - b).max() < 0.05
    # the whole photo path too: same faces, same points
    photo = read_image(crops_table["image_path"].iloc[0])
    fa, fb = torch_lm(photo), onnx_lm(photo)
    assert len(fa) == len(fb) > 0
    assert max(np.abs(x.landmarks - y.landmarks).max() for x, y in zip(fa, fb)) < 0.05


def test_a_file_that_is_not_an_exported_network_is_refused_by_name(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ValueError, match="broken.onnx"):
        OnnxLandmarkNetwork(bad)
    with pytest.raises(ValueError, match="missing.onnx"):
        OnnxLandmarkNetwork(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="max_chunk"):
        OnnxLandmarkNetwork(bad, max_chunk=0)


def test_a_network_keeps_working_after_its_file_is_deleted(tiny_checkpoint, tmp_path):
    """A checkpoint exported to a temporary file (``FaceLandmarker.load(..., runtime="onnx")``) is deleted after
    loading; the session for one-image calls is made later, at the first such call, and must not need the file."""
    path = export_onnx(tiny_checkpoint, tmp_path / "model.onnx", flip_test=False)
    net = OnnxLandmarkNetwork(path, num_threads=2)
    crops = np.random.default_rng(0).integers(0, 256, size=(3, net.config.input_size, net.config.input_size, 3),
                                                 dtype=np.uint8)
    path.unlink()
    one = net.predict_crops(crops[:1])  # fewer images than threads: the intra-op session, made now
    three = net.predict_crops(crops)  # two chunks on two threads
    assert one.shape == (1, 68, 2) and np.allclose(one, three[:1], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_export_command_writes_a_runnable_onnx_file(tiny_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from facelandmarks.cli import app

    out = tmp_path / "exported" / "model.onnx"
    result = CliRunner().invoke(app, ["export", str(out), "--model", str(tiny_checkpoint)])
    assert result.exit_code == 0, result.output
    net = OnnxLandmarkNetwork(out)
    assert net.predict_crops(np.zeros((2, net.config.input_size, net.config.input_size, 3), np.uint8)).shape == (2, 68, 2)
    single = tmp_path / "single.onnx"
    result = CliRunner().invoke(app, ["export", str(single), "--model", str(tiny_checkpoint), "--no-flip-test"])
    assert result.exit_code == 0, result.output
    assert OnnxLandmarkNetwork(single).config.flip_test is False
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "x.onnx"), "--model", str(tmp_path / "nope.pt")])
    assert missing.exit_code == 2 and "nope.pt" in missing.output


@pytest.mark.slow
def test_variants_switch_runtime_and_flip_test_with_the_same_weights(tiny_checkpoint, small_crops):
    """``FaceLandmarker.variant``: the in-memory ONNX graph without the flip test equals the torch network's plain
    pass, the flip-test variant equals the two-pass average, and variants share the detector and are cached."""
    import torch

    from facelandmarks.io.images import read_image
    from facelandmarks.model.preprocess import to_tensor

    crops_table, _, _ = small_crops
    crops = np.stack([read_image(p) for p in crops_table["crop_path"]])
    lm = FaceLandmarker.load(tiny_checkpoint, device="cpu")
    x = to_tensor(crops)
    with torch.no_grad():
        plain = lm.model.forward_train(x)["coords"].numpy()
        both = lm.model.predict(x, True).numpy()
    assert np.abs(plain - both).max() > 0.01  # the flip test changes the answer, so the checks below can fail
    no_flip_onnx = lm.variant("onnx", flip_test=False)
    assert no_flip_onnx.runtime == "onnx" and no_flip_onnx.config.flip_test is False
    assert no_flip_onnx.detector is lm.detector and lm.variant("onnx", flip_test=False) is no_flip_onnx
    assert np.abs(no_flip_onnx.predict_crops(crops) - plain).max() < 0.05
    assert np.abs(lm.variant("torch", flip_test=False).predict_crops(crops) - plain).max() < 1e-4
    assert np.abs(lm.variant("onnx", flip_test=True).predict_crops(crops) - both).max() < 0.05
    assert lm.variant() is lm
    twice = lm.variant("torch", flip_test=False).variant("torch", flip_test=True)  # a variant of a variant
    assert np.abs(twice.predict_crops(crops) - both).max() < 1e-4
    assert lm.model.config.flip_test == lm.config.flip_test  # building a graph leaves the torch model as it was
    with pytest.raises(ValueError, match="cannot change"):
        no_flip_onnx.variant("torch")


def test_folding_the_input_normalisation_keeps_the_first_layer_away_from_the_border(tiny_checkpoint, small_crops):
    """Known answer: the folded first convolution on raw pixels equals the original on normalised pixels
    everywhere its 3x3 window stays inside the crop; only the padded border ring may differ."""
    import torch

    from facelandmarks.inference.onnx_runtime import fold_input_normalisation
    from facelandmarks.io.images import read_image
    from facelandmarks.model.checkpoint import load_checkpoint
    from facelandmarks.model.preprocess import to_tensor

    model, _ = load_checkpoint(tiny_checkpoint)
    folded = fold_input_normalisation(model)
    assert not hasattr(model, "input_normalisation_folded")  # the original is left as it was
    crops_table, _, _ = small_crops
    crops = np.stack([read_image(p) for p in crops_table["crop_path"][:4]])
    raw = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        x = to_tensor(crops)
        if model.renormalise:
            x = x * model.input_scale + model.input_shift
        a = model.backbone.conv_stem(x)
        b = folded.backbone.conv_stem(raw)
    assert a.shape == b.shape
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert torch.allclose(a[inner], b[inner], atol=1e-3 * float(a.abs().max()))
    assert (a[:, :, 0] - b[:, :, 0]).abs().max() > 1e-2  # the border ring reads black padding instead of the mean
    # and the whole folded network stays close to the original on real crops
    with torch.no_grad():
        p = model.forward_train(to_tensor(crops))["coords"]
        q = folded.forward_train(raw)["coords"]
    assert (p - q).abs().max() < 1.0


@pytest.mark.slow
def test_int8_export_is_quantised_calibrated_and_close_to_float_on_real_crops(tiny_checkpoint, small_crops, tmp_path):
    import onnx
    from typer.testing import CliRunner

    from facelandmarks.cli import app
    from facelandmarks.data.table import write_table
    from facelandmarks.inference.quantize import calibration_crops, quantize_onnx
    from facelandmarks.io.images import read_image

    crops_table, _, _ = small_crops
    table_path = tmp_path / "crops.parquet"
    write_table(crops_table.assign(split="train"), table_path)
    torch_lm = FaceLandmarker.load(tiny_checkpoint, device="cpu")
    size = torch_lm.config.input_size
    calib = calibration_crops(table_path, size, faces=12)
    assert calib.shape == (12, size, size, 3) and calib.dtype == np.uint8
    assert np.array_equal(calib, calibration_crops(table_path, size, faces=12))  # same table, same sample
    path = quantize_onnx(tiny_checkpoint, tmp_path / "model.int8.onnx", calib)

    graph = onnx.load(str(path))
    made_by = {o: n.op_type for n in graph.graph.node for o in n.output}
    convs = {n.name: n for n in graph.graph.node if n.op_type == "Conv"}
    quantised = [n for name, n in convs.items() if name.startswith(("/backbone/", "/head/lateral", "/head/refine"))]
    # every backbone and head convolution but the output layer reads int8 weights and uint8 activations (QDQ: both
    # through DequantizeLinear)
    assert any(n.name.startswith("/head/") for n in quantised) and any(n.name.startswith("/backbone/") for n in quantised)
    assert all(made_by.get(n.input[0]) == made_by.get(n.input[1]) == "DequantizeLinear" for n in quantised)
    assert len(quantised) == len(convs) - 1
    head_out = convs["/head/out/Conv"]  # the heatmap output layer (float weights) and the decoder stay float32
    assert head_out.input[1] not in made_by and not any(n.op_type == "QuantizeLinear" and n.input[0] == head_out.output[0]
                                                        for n in graph.graph.node)

    int8 = FaceLandmarker.load(path, runtime="onnx", num_threads=1)
    assert int8.config == torch_lm.config and int8.checkpoint_sha256 == torch_lm.checkpoint_sha256
    assert int8.model.quantization["calibration_crops"] == 12
    assert int8.model.describe()["quantization"]["weights"] == "int8 per channel"
    crops = np.stack([read_image(p) for p in crops_table["crop_path"]])
    a, b = torch_lm.predict_crops(crops), int8.predict_crops(crops)
    assert b.shape == a.shape
    err = np.abs(a - b)
    assert 0 < err.mean() < 0.5 and err.max() < 2.0  # rounded (not the float file), but not another answer

    out = tmp_path / "cli.int8.onnx"
    ok = CliRunner().invoke(app, ["export", str(out), "--model", str(tiny_checkpoint), "--quantize", "int8",
                                  "--calibration", str(table_path), "--calibration-faces", "8"])
    assert ok.exit_code == 0, ok.output
    assert "int8" in ok.output and OnnxLandmarkNetwork(out).quantization["calibration_crops"] == 8
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "y.onnx"), "--model", str(tiny_checkpoint),
                                       "--quantize", "int8", "--calibration", str(tmp_path / "no_table.parquet")])
    assert missing.exit_code == 2 and "no_table.parquet" in missing.output and not (tmp_path / "y.onnx").exists()
    bad = CliRunner().invoke(app, ["export", str(tmp_path / "z.onnx"), "--model", str(tiny_checkpoint), "--quantize", "int4"])
    assert bad.exit_code == 2 and "int4" in bad.output


@pytest.mark.slow
def test_uint8_input_and_the_runtime_flip_test_change_no_landmark(tiny_checkpoint, small_crops, tmp_path, monkeypatch):
    """Known answers for the int8 file's fast path: (1) the graph taking uint8 crops (its pixel quantisation, the
    identity, removed) gives the float-input graph's landmarks bit for bit; (2) the flip test run around the
    one-pass graph is exactly ``0.5 * (pass(crop) + mirrored_back(pass(crop[:, ::-1])))``, computed here with the
    session alone; (3) threads and batch sizes change no landmark; (4) a file without the runtime-flip key (the
    old format, both passes inside the graph) is not mirrored a second time."""
    import onnx

    from facelandmarks.inference import quantize
    from facelandmarks.inference.onnx_runtime import ONNX_FLIP_KEY
    from facelandmarks.io.images import read_image
    from facelandmarks.schemes import get_scheme

    crops_table, _, _ = small_crops
    crops = np.stack([read_image(p) for p in crops_table["crop_path"]])
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(3, *crops.shape[1:]), dtype=np.uint8)
    noise[0, :4], noise[1, -4:] = 0, 255  # both ends of the pixel range
    crops = np.concatenate([crops, noise])
    fast = quantize.quantize_onnx(tiny_checkpoint, tmp_path / "fast.onnx", crops[:8], flip_test=True)
    monkeypatch.setattr(quantize, "uint8_input", lambda proto: False)
    plain = quantize.quantize_onnx(tiny_checkpoint, tmp_path / "plain.onnx", crops[:8], flip_test=True)
    monkeypatch.undo()

    graph = onnx.load(str(fast)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert onnx.load(str(plain)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) == sum(
        n.op_type == "QuantizeLinear" for n in onnx.load(str(plain)).graph.node) - 1
    a, b = OnnxLandmarkNetwork(fast, num_threads=1), OnnxLandmarkNetwork(plain, num_threads=1)
    assert a.input_dtype == np.uint8 and b.input_dtype == np.float32 and a.quantization["input"] == "uint8 crops"
    assert a.mirror and a.config.flip_test
    ref = a.predict_crops(crops)
    assert np.array_equal(ref, b.predict_crops(crops))  # (1)

    size = a.config.input_size
    up = a.session.run(["landmarks"], {"crops": crops})[0]
    back = a.session.run(["landmarks"], {"crops": np.ascontiguousarray(crops[:, :, ::-1])})[0]
    assert np.abs(up - ref).max() > 0.01  # the mirrored pass changes the answer, so (2) and (4) can fail
    assert np.array_equal(ref, (0.5 * (up + get_scheme(a.config.scheme).flip(back, size))).astype(np.float32))  # (2)

    for threads, chunk in ((2, 4), (3, 4), (1, 1), (2, 64)):  # (3): how the batch is split into calls
        net = OnnxLandmarkNetwork(fast, num_threads=threads, max_chunk=chunk)
        assert np.allclose(net.predict_crops(crops), ref, atol=1e-4, rtol=0), (threads, chunk)
    assert np.allclose(np.concatenate([a.predict_crops(c[None]) for c in crops]), ref, atol=1e-4, rtol=0)

    old = onnx.load(str(fast))  # (4)
    kept = [p for p in old.metadata_props if p.key != ONNX_FLIP_KEY]
    del old.metadata_props[:]
    old.metadata_props.extend(kept)
    onnx.save(old, str(tmp_path / "old.onnx"))
    legacy = OnnxLandmarkNetwork(tmp_path / "old.onnx", num_threads=2)
    assert not legacy.mirror and legacy.describe()["flip_test"] == "graph"
    assert np.allclose(legacy.predict_crops(crops), up, atol=1e-4, rtol=0)
