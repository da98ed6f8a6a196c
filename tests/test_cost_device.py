"""The bench on CUDA, tested on the CPU where it can be: the memory account counts the fused workspaces,
the record keeps the device asked, its type and the card apart (and old records still read and print), a
sweep resumed with ``--device auto`` reuses its records, the targets say where they were defined, one
clock, quiet logs. The CUDA-only tests skip without a GPU (scripts/gpu_check.sh runs
them on one)."""

from __future__ import annotations

import json

import pytest
import torch

from oblique.cost import SCHEMA, SCHEMAS, bench, device_label, device_of, format_table, read_bench, run_sweep
from oblique.cost.entries import prepare_entry
from oblique.cost.memory import ACCOUNT_PARTS, memory_account, peak_mem_mb, persistent_tensors
from oblique.cost.targets import TARGETS_DEFINED_ON, evaluate
from oblique.methods.norm_loss import FusedNormLossGrad

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TINY = dict(batch_size=2, rounds=2, warmup=1, micro_repeats=2, threads=1, progress=False)
CPU = torch.device("cpu")


def _batch(n: int = 2, device: torch.device = CPU) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 32, generator=g).to(device), torch.randint(10, (n,), generator=g).to(device)


def _storages(tensors, without=()) -> int:
    """Bytes of the distinct storages of ``tensors``, less those of the storages of ``without``."""
    skip = {t.untyped_storage().data_ptr() for t in without}
    sizes = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(n for ptr, n in sizes.items() if ptr not in skip)


# ---------------------------------------------------------------- 1. the fused workspaces are counted


def test_account_counts_the_fused_optimizers_workspaces_on_resnet20():
    e = prepare_entry("oblique-rsgd", "resnet20", 10, 0, CPU, *_batch(), 1e-3)  # impl=fused
    account = memory_account(e)  # the step builds the optimizer's plans
    ws = e.opt.workspace_tensors()
    assert ws and account["total"] == sum(account[p] for p in ACCOUNT_PARTS)
    state = [v for st in e.opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    # gathered points, gradients, scratch and row products; the momentum buffers are the state's storage
    expected = _storages(ws, without=state)
    assert account["workspaces"] == expected > 3e6  # ResNet-20: ~3.1 MiB of workspaces
    assert account["optimizer_state"] == _storages(state) > 0
    assert peak_mem_mb(e, CPU) * 2**20 == pytest.approx(account["total"], rel=1e-6)


def test_account_counts_the_fused_norm_loss_workspaces_on_resnet20():
    e = prepare_entry("nl", "resnet20", 10, 0, CPU, *_batch(), 1e-3)  # form=closed
    account = memory_account(e)
    ws = e.method.fused(
        e.model
    ).workspace_tensors()  # the plan the step used: norms and coefficients (per-layer norms on the CPU)
    value = e.method.regularizer_value()  # the last value, kept on the device: persistent too
    assert ws and account["workspaces"] == _storages([*ws, value]) > 0
    # gathered (the CUDA default): the (N, *tail) buffers too, found through the method object
    weights = e.method.target_weights(e.model)
    gathered = FusedNormLossGrad(weights, gather=True)
    found = _storages(persistent_tensors(gathered))
    assert found == _storages(gathered.workspace_tensors()) >= sum(w.numel() * 4 for w in weights)


def test_persistent_tensors_find_a_methods_own_buffers_without_a_table():
    e = prepare_entry("srip", "resnet20", 10, 0, CPU, *_batch(), 1e-3)
    assert memory_account(e)["workspaces"] > 0  # SRIP's power-iteration vectors, kept across steps
    base = prepare_entry("baseline", "resnet20", 10, 0, CPU, *_batch(), 1e-3)
    assert memory_account(base)["workspaces"] == 0  # torch's SGD: nothing beyond its state


# ---------------------------------------------------------------- 2. the record keeps the device apart


@pytest.fixture(scope="module")
def record():
    return bench(model="cnn", methods="nl,oblique-rsgd,oni", device="auto", **TINY)


def test_the_record_keeps_the_device_asked_its_type_and_the_card_apart(record, tmp_path):
    assert record["schema"] == SCHEMA == SCHEMAS[-1]
    used = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert record["device"] == "auto" and record["device_type"] == used.type
    if used.type == "cpu":
        assert record["device_used"] == "cpu" and record["device_name"] == "cpu"
        assert ", cpu (asked auto), " in format_table(record).splitlines()[0]
    env = record["environment"]
    for key in ("cuda", "cudnn", "tf32_matmul", "tf32_cudnn", "cudnn_benchmark", "deterministic_algorithms"):
        assert key in env
    assert env["tf32_matmul"] == torch.backends.cuda.matmul.allow_tf32
    assert device_of(record) == (record["device_type"], record["device_name"])
    df = _read_back(record, tmp_path)
    assert set(df["device_type"]) == {record["device_type"]} and set(df["device"]) == {"auto"}


def _read_back(record: dict, folder):
    (folder / "rec.json").write_text(json.dumps(record))
    return read_bench(folder / "rec.json")


def test_records_of_schema_1_still_read_and_print(record, tmp_path):
    old = json.loads(json.dumps(record))
    old["schema"] = "oblique.bench/1"
    old["device"] = "cuda:0 (NVIDIA H100 80GB HBM3)"
    for key in ("device_used", "device_type", "device_name", "environment"):
        del old[key]
    for t in old["targets"].values():
        del t["defined_on"]
    assert device_of(old) == ("cuda", "NVIDIA H100 80GB HBM3")
    assert device_label(old) == "cuda:0 (NVIDIA H100 80GB HBM3)"
    table = format_table(old)
    assert ", cuda:0 (NVIDIA H100 80GB HBM3), " in table.splitlines()[0]
    assert "target nl:" in table and not any(ln.startswith("environment:") for ln in table.splitlines())
    df = _read_back(old, tmp_path)
    assert set(df["device"]) == {old["device"]} and set(df["device_name"]) == {"NVIDIA H100 80GB HBM3"}
    # a CSV written before the device columns existed
    csv = tmp_path / "old.csv"
    df.drop(columns=["device_type", "device_name"]).to_csv(csv, index=False)
    again = read_bench(csv)
    assert list(again["device_type"]) == ["cuda"] * len(df)
    assert list(again.columns) == list(df.columns)


def test_a_cuda_record_prints_its_card_and_settings(record):
    rec = {
        **json.loads(json.dumps(record)),
        "device": "cuda",
        "device_used": "cuda:0",
        "device_type": "cuda",
        "device_name": "NVIDIA H100",
        "environment": {**record["environment"], "cuda": "12.4", "cudnn": 90100, "cudnn_benchmark": True},
    }
    lines = format_table(rec).splitlines()
    assert ", cuda:0 (NVIDIA H100; asked cuda), " in lines[0]
    assert lines[1].startswith("environment: CUDA 12.4, cuDNN 90100, TF32 matmul ")
    assert "cuDNN benchmark on" in lines[1]


# ---------------------------------------------------------------- 4. the targets say where they were defined


def test_targets_give_a_verdict_only_on_the_device_they_were_defined_on(record):
    targets = record["targets"]
    assert set(targets) == {"nl", "oblique-rsgd", "oni"}
    on_cpu = record["device_type"] == TARGETS_DEFINED_ON
    for t in targets.values():
        assert t["defined_on"] == "cpu" and isinstance(t["holds"], bool) is on_cpu
    # the same measurements, made on a GPU: no verdict, the measurement kept
    moved = json.loads(json.dumps(record))
    evaluate(moved["targets"], moved["methods"], moved["aa"], device_type="cuda")
    moved["device_type"] = "cuda"
    lines = [ln for ln in format_table(moved).splitlines() if ln.startswith("target ")]
    assert len(lines) == 3
    for ln, t in zip(lines, moved["targets"].values(), strict=True):
        assert t["holds"] is None and ln.endswith(": target defined on the CPU; informative here")
        assert t["figure"] in ln and "holds" not in ln.split(t["target"])[-1]
    evaluate(moved["targets"], moved["methods"], moved["aa"])  # measured on the CPU: a verdict
    assert all(isinstance(t["holds"], bool) for t in moved["targets"].values())


# ---------------------------------------------------------------- 3. a resumed sweep compares the device used


def test_a_sweep_resumed_with_device_auto_reuses_its_records(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine, here or not
    import oblique.cost.sweep as sweep

    benched: list[str] = []
    real = sweep.bench

    def counting(config):
        benched.append(config.model)
        return real(config)

    monkeypatch.setattr(sweep, "bench", counting)
    kw = dict(methods="baseline,nl", targets=False, **{**TINY, "rounds": 1, "warmup": 0, "micro_repeats": 1})
    out, models = tmp_path / "sweep", ["wrn10-1", "cnn"]
    first = run_sweep("width", out, models=models, device="cpu", **kw)
    assert benched == models and {r["device"] for r in first} == {"cpu"}
    for asked in ("auto", "cpu"):
        assert run_sweep("width", out, models=models, device=asked, **kw) == first
    assert benched == models  # nothing benched again
    # a record made on a GPU (either schema) is benched again; an old CPU record is reused
    on_gpu = {**first[0], "device": "cuda", "device_used": "cuda:0", "device_type": "cuda"}
    (out / "wrn10-1.json").write_text(json.dumps({**on_gpu, "device_name": "NVIDIA H100"}))
    old = {k: v for k, v in first[1].items() if k not in ("device_used", "device_type", "device_name")}
    (out / "cnn.json").write_text(json.dumps({**old, "schema": "oblique.bench/1", "device": "cpu"}))
    again = run_sweep("width", out, models=models, device="auto", **kw)
    assert benched == [*models, "wrn10-1"] and again[1]["schema"] == "oblique.bench/1"
    (out / "cnn.json").write_text(json.dumps({**old, "schema": "oblique.bench/1", "device": "cuda:0 (H100)"}))
    run_sweep("width", out, models=models, device="auto", **kw)
    assert benched == [*models, "wrn10-1", "cnn"]
    assert len(read_bench(out)) == 4  # two models, two methods each
    # resumed with a method the records lack: benched again with every method asked; with fewer, reused
    wider = run_sweep("width", out, models=models, device="cpu", **{**kw, "methods": "baseline,nl,wd"})
    assert benched == [*models, "wrn10-1", "cnn", *models] and all(
        set(r["methods"]) == {"baseline", "nl", "wd"} for r in wider
    )
    assert run_sweep("width", out, models=models, device="cpu", **kw) == wider and len(benched) == 6


# ---------------------------------------------------------------- 5., 6. one clock, quiet logs


def test_the_bench_uses_the_projects_clock():
    from oblique.clock import Clock
    from oblique.cost import timing

    assert timing.Timer is Clock and timing.Clock is Clock


def test_progress_in_a_log_is_plain_lines(capsys, monkeypatch):
    monkeypatch.setenv("OBLIQUE_LOG_EVERY", "1e-9")  # a line at every update
    bench(model="cnn", methods="baseline", targets=False, **{**TINY, "progress": True})
    err = capsys.readouterr().err
    assert (
        "\r" not in err and err.splitlines() and all(ln.startswith("bench cnn: ") for ln in err.splitlines())
    )


# ---------------------------------------------------------------- on a GPU


@needs_cuda
def test_cuda_account_counts_the_workspaces_once():
    dev = torch.device("cuda")
    x, y = _batch(8, dev)
    warm = prepare_entry("baseline", "resnet20", 10, 0, dev, x, y, 1e-3)
    for _ in range(2):  # cuBLAS and cuDNN handles and workspaces: allocated once per process
        warm.run_step()
    fused = prepare_entry("oblique-rsgd", "resnet20", 10, 0, dev, x, y, 1e-3)
    geoopt = prepare_entry("oblique-rsgd", "resnet20", 10, 0, dev, x, y, 1e-3, {"impl": "geoopt"})
    first = peak_mem_mb(fused, dev)  # a fresh entry: stepped once first, then measured
    assert peak_mem_mb(fused, dev) == pytest.approx(first, rel=0.02)
    state = [v for st in fused.opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    extra_mb = _storages(fused.opt.workspace_tensors(), without=state) / 2**20  # P, G, T, dots
    assert extra_mb > 3
    # the same model and step but the fused optimizer's buffers: counted once (not 0, not twice)
    diff = first - peak_mem_mb(geoopt, dev)
    assert abs(diff - extra_mb) < extra_mb / 4, (first, diff, extra_mb)


@needs_cuda
def test_a_cuda_bench_records_the_card_and_gives_no_cpu_verdicts():
    before = torch.backends.cudnn.benchmark
    rec = bench(model="resnet20", methods="nl,oblique-rsgd", device="cuda", **TINY)
    assert torch.backends.cudnn.benchmark == before  # restored
    assert (rec["device"], rec["device_type"]) == ("cuda", "cuda")
    assert rec["device_used"] == f"cuda:{torch.cuda.current_device()}"
    assert rec["device_name"] == torch.cuda.get_device_name() != "cpu"
    env = rec["environment"]
    assert env["cudnn"] is not None and env["cuda"] is not None
    assert env["cudnn_benchmark"] is not torch.are_deterministic_algorithms_enabled()
    assert all(t["holds"] is None for t in rec["targets"].values())
    table = format_table(rec)
    assert f"({rec['device_name']}; asked cuda)" in table and "informative here" in table
    assert rec["methods"]["oblique-rsgd"]["peak_mem_mb"] > rec["methods"]["baseline"]["peak_mem_mb"]


@needs_cuda
def test_a_cuda_sweep_resumed_with_device_auto_reuses_its_records(tmp_path, monkeypatch):
    import oblique.cost.sweep as sweep

    kw = dict(methods="baseline", targets=False, **{**TINY, "rounds": 1, "warmup": 0, "micro_repeats": 1})
    first = run_sweep("depth", tmp_path, models=["resnet20"], device="cuda", **kw)
    monkeypatch.setattr(sweep, "bench", lambda config: pytest.fail("benched again"))
    assert run_sweep("depth", tmp_path, models=["resnet20"], device="auto", **kw) == first
    assert run_sweep("depth", tmp_path, models=["resnet20"], device="cuda:0", **kw) == first
