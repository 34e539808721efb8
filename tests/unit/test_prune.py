"""Pruning on tiny models built here: dependency groups, exact rebuild, sparsity, CLI errors."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
L = keras.layers

from edgecnn.errors import DataError, EdgecnnError, ModelError  # noqa: E402
from edgecnn.prune import channel, graph, magnitude  # noqa: E402


def _bn(x, name):
    return L.BatchNormalization(name=name)(x)


def tiny_net(classes=3):
    """Residual Add, depthwise chain, squeeze-excite (keras.ops gate), Concatenate, GAP + Dense head."""
    x0 = keras.Input((16, 16, 3), name="image")
    a = L.ReLU(6.0, name="stem_relu")(_bn(L.Conv2D(16, 3, strides=2, padding="same", use_bias=False,
                                                   name="stem")(x0), "stem_bn"))
    e = L.ReLU(name="expand_relu")(_bn(L.Conv2D(48, 1, name="expand")(a), "expand_bn"))
    d = L.ReLU(name="dw_relu")(_bn(L.DepthwiseConv2D(3, padding="same", name="dw")(L.ZeroPadding2D(
        ((0, 0), (0, 0)), name="pad")(e)), "dw_bn"))
    s = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(d)
    s = L.Conv2D(24, 1, activation="relu", name="se_squeeze")(s)
    s = L.Conv2D(48, 1, name="se_excite")(s)
    s = L.ReLU(6.0, name="se_relu6")(s + 3.0) * (1.0 / 6.0)
    d = L.Multiply(name="se_mul")([d, s])
    p = _bn(L.Conv2D(16, 1, use_bias=False, name="project")(d), "project_bn")
    r = L.Add(name="residual")([a, p])
    b1 = L.Conv2D(16, 3, padding="same", activation="relu", name="branch1")(r)
    b2 = L.Conv2D(24, 1, activation="relu", name="branch2")(r)
    c = L.Concatenate(name="concat")([b1, b2])
    c = L.MaxPooling2D(2, name="pool")(_bn(c, "concat_bn"))
    c = L.Conv2D(32, 1, activation="relu", name="post")(c)
    out = L.Dense(classes, activation="softmax", name="classifier")(L.GlobalAveragePooling2D(name="gap")(c))
    model = keras.Model(x0, out, name="tiny")
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial batch-norm statistics make the equivalence check meaningful
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, n),
                               rng.uniform(0.5, 2, n)])
    return model


def tiny_detector():
    x0 = keras.Input((32, 32, 3), name="image")
    x = L.LeakyReLU(0.1, name="l1")(L.Conv2D(16, 3, padding="same", name="conv1")(x0))
    x = L.MaxPooling2D(2, name="p1")(x)
    x = L.LeakyReLU(0.1, name="l2")(L.Conv2D(64, 3, padding="same", name="conv2")(x))
    return keras.Model(x0, L.Conv2D(2 * (5 + 3), 1, name="head")(x), name="tinydet")


def group_of(g, layer):
    return g.root(g.layers[layer].output[0])


def test_residual_depthwise_se_and_fixed_head_groups():
    m = tiny_net()
    g = graph.analyze(m)
    # residual Add ties the stem conv with the projection
    assert group_of(g, "stem") == group_of(g, "project") == group_of(g, "residual")
    # depthwise, batch norm and the squeeze-excite gate share the expansion's channels
    assert group_of(g, "dw") == group_of(g, "expand") == group_of(g, "se_excite") == group_of(g, "se_mul")
    assert group_of(g, "se_squeeze") != group_of(g, "expand")
    assert g.group(g.layers["classifier"].output[0]).fixed  # softmax over the classes, and a model output
    assert g.group(g.layers["image"].output[0]).fixed == "model input"
    assert sorted(g.group(g.layers["expand"].output[0]).producers) == ["expand", "se_excite"]


def test_concatenate_keeps_segments_with_offsets():
    m = tiny_net()
    g = graph.analyze(m)
    segs = g.roots(g.layers["concat"].output)
    assert segs == [group_of(g, "branch1"), group_of(g, "branch2")]
    assert g.roots(g.layers["concat_bn"].output) == segs
    plan = channel.plan_channels(m, 0.5, scope="layer", graph=g)
    keep = plan.tensor_keep(g.layers["concat"].output)
    n1 = len(plan.keep.get(segs[0], range(16)))
    assert np.all(keep[:n1] < 16) and np.all(keep[n1:] >= 16) and len(keep) == n1 + len(plan.keep[segs[1]])


def test_detector_head_is_fixed_and_yolo_chain_prunes():
    m = tiny_detector()
    g = graph.analyze(m)
    assert g.group(g.layers["head"].output[0]).fixed == "model output"
    pruned, plan = channel.prune_channels(m, 0.5, scope="layer")
    assert pruned.get_layer("head").kernel.shape[-1] == 16
    assert pruned.get_layer("conv2").kernel.shape[-1] == 32


@pytest.mark.parametrize("importance,scope", [("l1", "global"), ("l2", "layer"), ("bn", "global")])
def test_rebuild_equals_original_with_pruned_channels_zeroed(importance, scope):
    m = tiny_net()
    plan = channel.plan_channels(m, 0.5, importance, scope)
    pruned = channel.rebuild(m, plan)
    x = np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    ref = channel.zero_pruned_inputs(m, plan)(x, training=False)
    np.testing.assert_allclose(np.asarray(pruned(x, training=False)), np.asarray(ref), rtol=1e-4, atol=1e-6)
    assert pruned.get_layer("dw").kernel.shape[-2] == pruned.get_layer("expand").kernel.shape[-1] < 48
    assert pruned.get_layer("stem").kernel.shape[-1] == pruned.get_layer("project").kernel.shape[-1]
    for s in plan.summary:  # SIMD-friendly sizes: multiples of 8, never below 8
        assert s["after"] == s["before"] or (s["after"] % channel.MULTIPLE == 0 and s["after"] >= 8)


def test_macs_and_params_shrink():
    from edgecnn.zoo.stats import count_macs, count_params

    m = tiny_net()
    pruned, plan = channel.prune_channels(m, 0.5)
    assert count_macs(pruned) < 0.8 * count_macs(m)
    assert count_params(pruned) < count_params(m)
    assert plan.removed_channels > 0 and pruned.output_shape == m.output_shape


def test_bn_importance_needs_batch_norm():
    with pytest.raises(ModelError, match="needs BatchNormalization.*use importance l1 or l2"):
        channel.plan_channels(tiny_detector(), 0.3, "bn")
    plan = channel.plan_channels(tiny_net(), 0.5, "bn")  # the squeeze-excite conv has none: left whole
    assert [s for s in plan.summary if s["producers"] == ["se_squeeze"]][0]["kept"] == "no batch norm"


def test_unknown_layer_is_named():
    x0 = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, name="c1")(x0)
    x = L.EinsumDense("...c,cd->...d", output_shape=8, name="weird_mix")(x)
    with pytest.raises(ModelError, match="weird_mix.*EinsumDense"):
        graph.analyze(keras.Model(x0, L.Conv2D(4, 1, name="out")(x)))


def test_reshape_is_a_barrier():
    x0 = keras.Input((4, 4, 3))
    x = L.Conv2D(16, 3, padding="same", name="c1")(x0)
    x = L.Reshape((16, 16), name="rs")(x)
    g = graph.analyze(keras.Model(x0, L.Dense(2, name="d")(x)))
    assert "rs" in g.group(g.layers["c1"].output[0]).fixed


def test_polynomial_schedule():
    s = [magnitude.polynomial_sparsity(t, 0.8, 0, 100) for t in range(0, 120, 10)]
    assert s[0] == 0 and s[-1] == pytest.approx(0.8) and all(a <= b for a, b in zip(s, s[1:]))


def _sparse_net():
    x0 = keras.Input((8, 8, 3))
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="first")(x0)
    x = L.Conv2D(64, 1, activation="relu", name="pw1")(x)
    x = L.Conv2D(64, 1, activation="relu", name="pw2")(x)
    return keras.Model(x0, L.Dense(4, name="head")(L.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_reaches_target_and_survives_tflite(scope):
    m = _sparse_net()
    layers = magnitude.target_layers(m)
    assert [layer.name for layer in layers] == ["pw1", "pw2"]  # the RGB stem and the head stay dense
    magnitude.apply_sparsity(layers, 0.75, scope)
    assert magnitude.measured_sparsity(layers) == pytest.approx(0.75, abs=0.002)
    if scope == "layer":
        for layer in layers:
            assert np.mean(layer.kernel.numpy() == 0) == pytest.approx(0.75, abs=0.01)
    enc = magnitude.tflite_sparsity(m)
    assert enc["zero_share"] >= 0.7  # the zeros are in the fp32 flatbuffer
    assert enc["sparse_tensors"] >= 2  # pw1, pw2 stored in the sparse encoding
    assert enc["tflite_gzip_bytes"] < 0.6 * enc["tflite_bytes"]


def test_sparsity_callback_holds_masks_during_training():
    m = _sparse_net()
    layers = magnitude.target_layers(m)
    cb = magnitude.sparsity_callback(layers, 0.5, total_steps=4, frequency=1)
    m.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype(np.float32)
    m.fit(x, np.ones((32, 4), np.float32), batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    assert magnitude.measured_sparsity(layers) == pytest.approx(0.5, abs=0.01)


def test_cli_choices_match_enums():
    from edgecnn.cli import cli
    from edgecnn.prune import Importance, Method, Scope

    params = {p.name: p for p in cli.commands["prune"].params}
    assert list(params["method"].type.choices) == Method.values()
    assert list(params["importance"].type.choices) == Importance.values()
    assert list(params["scope"].type.choices) == Scope.values()


# ---------------------------------------------------------------------------- CLI, in process


def run_cli(capsys, *args):
    from edgecnn.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def write_model(tmp_path, model, name="mymodel"):
    path = tmp_path / f"{name}.keras"
    model.save(path)
    side = {"task": "classification", "classes": [f"c{i}" for i in range(model.output_shape[-1])],
            "preprocessing": {"size": list(model.input_shape[1:3]), "mode": "stretch", "scale": 1 / 127.5,
                              "offset": -1.0}}
    (tmp_path / f"{name}.json").write_text(json.dumps(side))
    return path


def test_cli_prunes_a_model_file_and_quantize_accepts_it(tmp_path, capsys):
    from edgecnn.source import load_source

    path = write_model(tmp_path, tiny_net())
    code, out, err = run_cli(capsys, "prune", str(path), "--method", "channel", "--ratio", "0.4",
                             "--finetune-epochs", "0", "-o", str(tmp_path / "out"), "--format", "json")
    assert code == 0, err
    r = json.loads(out)
    assert r["macs"]["after"] < r["macs"]["before"] and r["accuracy"] is None
    side = json.loads((tmp_path / "out" / "mymodel-pruned.json").read_text())
    assert side["pruning"] == {"method": "channel", "ratio": 0.4, "importance": "l1", "scope": "global"}
    src = load_source(tmp_path / "out" / "mymodel-pruned.keras")
    assert src.name == "mymodel-pruned" and src.classes == ["c0", "c1", "c2"] and src.keras_model is not None


def test_magnitude_through_the_library(tmp_path):
    from edgecnn.prune import prune

    path = write_model(tmp_path, _sparse_net(), "sparse")
    r = prune(path, "magnitude", 0.7, finetune_epochs=0, output_dir=tmp_path / "out", runs=5)
    assert r.sparsity["achieved"] == pytest.approx(0.7, abs=0.01) and r.sparsity["tflite"]["sparse_tensors"] >= 2
    assert r.macs["after"] == r.macs["before"] and r.output.is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    x0 = keras.Input((8, 8, 3))
    x = L.EinsumDense("...c,cd->...d", output_shape=8, name="weird_mix")(L.Conv2D(16, 3, name="c1")(x0))
    odd = write_model(tmp_path, keras.Model(x0, L.Dense(3, name="d")(L.Flatten()(x))), "odd")
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip")
    cases = [((str(odd), "--ratio", "0.3"), "weird_mix"),
             ((str(bad), "--ratio", "0.3"), "cannot read Keras model"),
             ((str(odd), "--ratio", "0.3", "--finetune-epochs", "2"), "needs labelled training data")]
    for args, words in cases:
        code, _, err = run_cli(capsys, "prune", *args, "--method", "channel", "-o", str(tmp_path / "o"),
                               *(() if "--finetune-epochs" in args else ("--finetune-epochs", "0")))
        errors = [line for line in err.strip().splitlines() if line.startswith("Error")]
        assert code == 1 and len(errors) == 1 and err.strip().endswith(errors[0]) and words in errors[0], err


@pytest.mark.parametrize("args, flag", [(("--ratio", "1.5"), "--ratio"), (("--ratio", "0"), "--ratio"),
                                        (("--ratio", "0.3", "--finetune-epochs", "-1"), "--finetune-epochs"),
                                        (("--ratio", "0.3", "--max-drop", "-2"), "--max-drop"),
                                        (("--ratio", "0.3", "--threads", "0"), "--threads")])
def test_out_of_range_options_are_usage_errors_exit_2(tmp_path, capsys, args, flag):
    code, _, err = run_cli(capsys, "prune", "mobilenet_v2", "--method", "channel", *args, "-o", str(tmp_path / "o"))
    errors = [line for line in err.strip().splitlines() if line.startswith("Error")]
    assert code == 2 and len(errors) == 1 and flag in errors[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"finetune_epochs": -1}, r"^--finetune-epochs must be an integer of at least 0, got -1$"),
    ({"threads": 0}, r"^--threads must be an integer of at least 1, got 0$"),
    ({"runs": 0}, r"^runs must be an integer of at least 1, got 0$"),
    ({"ratio": 1.5}, r"^--ratio must be between 0 and 1"),
    ({"max_drop": -1.0}, r"^--max-drop must be"),
])
def test_library_option_errors_name_only_the_wrong_option(tmp_path, kwargs, message):
    from edgecnn.prune import prune

    kwargs = {"ratio": 0.3, **kwargs}
    with pytest.raises(EdgecnnError, match=message):
        prune("mobilenet_v2", "channel", kwargs.pop("ratio"), output_dir=tmp_path / "o", **kwargs)


def test_data_paths_are_refused_before_the_model_is_loaded(tmp_path, monkeypatch):
    import edgecnn.source
    from edgecnn.prune import prune

    monkeypatch.setattr(edgecnn.source, "load_source", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(DataError, match=f"^--data: data set not found: {tmp_path / 'nodata'}$"):
        prune("mobilenet_v2", "channel", 0.3, data=tmp_path / "nodata", output_dir=tmp_path / "o")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="^--val: .*notes.txt: not a data set"):
        prune("mobilenet_v2", "channel", 0.3, finetune_epochs=0, val=tmp_path / "notes.txt", output_dir=tmp_path / "o")


# ---------------------------------------------------------------------------- real models (slow)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                                  "yolo_lite", "yolo_lite_mobilenet"])
def test_every_zoo_model_prunes_exactly(name):
    from edgecnn import zoo
    from edgecnn.zoo.stats import count_macs

    m = zoo.build(name)
    pruned, plan = channel.prune_channels(m, 0.3)  # includes the numerical rebuild check
    assert count_macs(pruned) < 0.85 * count_macs(m) and pruned.output_shape == m.output_shape


@pytest.mark.slow
def test_demo_mobilenet_v2_end_to_end(tmp_path):
    from edgecnn.prune import prune
    from edgecnn.source import load_source

    r = prune("mobilenet_v2", "channel", 0.4, finetune_epochs=0, output_dir=tmp_path, runs=50)
    assert r.macs["reduction"] >= 0.3 and r.accuracy["before"]["top1"] > 0.8 and r.latency["speedup"] > 1
    assert load_source(r.output).task == "classification"
