import pytest
import torch

from course_lib import train
from course_lib.config import seed_everything


def make_problem(seed: int = 0):
    """A tiny regression problem whose step draws its batch from the global torch RNG."""
    g = torch.Generator().manual_seed(0)  # the data set is the same in every session
    x = torch.randn(256, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(256, generator=g)
    seed_everything(seed)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)

    def step(i):
        idx = torch.randint(0, 256, (32,))  # global RNG: resuming must restore it
        loss = ((model(x[idx]).squeeze(-1) - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    return model, opt, step


def test_history_and_loss_decreases():
    model, opt, step = make_problem()
    history = train.fit(step, 200, progress=False)
    assert history["step"] == list(range(200))
    assert len(history["loss"]) == 200
    assert sum(history["loss"][-20:]) / 20 < 0.1 * sum(history["loss"][:20]) / 20


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    model_a, opt_a, step_a = make_problem(seed=1)
    hist_a = train.fit(step_a, 60, progress=False)

    ckpt = tmp_path / "run.pt"
    model_b, opt_b, step_b = make_problem(seed=1)
    train.fit(step_b, 25, state={"model": model_b, "opt": opt_b}, checkpoint=ckpt,
              checkpoint_every=10, progress=False)
    torch.rand(100)  # the "interruption" disturbs the global RNG; the checkpoint restores it
    model_c, opt_c, step_c = make_problem(seed=99)  # a fresh session with other weights
    hist_c = train.fit(step_c, 60, state={"model": model_c, "opt": opt_c}, checkpoint=ckpt,
                       progress=False)
    for p_a, p_c in zip(model_a.parameters(), model_c.parameters(), strict=True):
        assert torch.equal(p_a, p_c)
    assert hist_c["step"] == list(range(60))
    assert hist_c["loss"] == hist_a["loss"]


def test_checkpoints_load_with_weights_only_and_hold_a_generator(tmp_path):
    model, opt, step = make_problem()
    gen = torch.Generator().manual_seed(5)
    ckpt = tmp_path / "sub" / "c.pt"
    train.fit(step, 5, state={"model": model, "opt": opt, "gen": gen}, checkpoint=ckpt,
              progress=False)
    payload = torch.load(ckpt, weights_only=True)
    assert payload["step"] == 5 and set(payload["state"]) == {"model", "opt", "gen"}
    assert not (tmp_path / "sub" / "c.pt.tmp").exists()
    expected = torch.rand(3, generator=gen)
    gen2 = torch.Generator().manual_seed(0)
    train.load_checkpoint(ckpt, {"gen": gen2})
    assert torch.equal(torch.rand(3, generator=gen2), expected)


def test_nan_stops_with_a_message_and_keeps_the_last_checkpoint(tmp_path):
    model, opt, step = make_problem()
    ckpt = tmp_path / "c.pt"

    def exploding(i):
        out = step(i)
        return {"loss": float("nan")} if i == 13 else out

    with pytest.raises(train.NonFiniteLossError, match=r"Step 13 .*nan.*last good checkpoint"):
        train.fit(exploding, 30, state={"model": model, "opt": opt}, checkpoint=ckpt,
                  checkpoint_every=5, progress=False)
    payload = torch.load(ckpt, weights_only=True)
    assert payload["step"] == 10
    assert all(torch.isfinite(v).all() for v in payload["state"]["model"].values())


def test_inf_is_caught_too():
    with pytest.raises(train.NonFiniteLossError, match="inf"):
        train.fit(lambda i: {"loss": float("inf")}, 3, progress=False)


def test_finished_run_resumes_to_nothing(tmp_path, capsys):
    model, opt, step = make_problem()
    ckpt = tmp_path / "c.pt"
    state = {"model": model, "opt": opt}
    train.fit(step, 4, state=state, checkpoint=ckpt, progress=False)
    history = train.fit(step, 4, state=state, checkpoint=ckpt, progress=False)
    assert history["step"] == [0, 1, 2, 3]
    assert "Resumed" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, error, match", [
    ({"step": 3, "n_steps": 1}, TypeError, "step must be a function"),
    ({"step": lambda i: {}, "n_steps": -1}, ValueError, "n_steps must be a non-negative integer"),
    ({"step": lambda i: {}, "n_steps": 1, "checkpoint_every": -2}, ValueError, "checkpoint_every"),
    ({"step": lambda i: {}, "n_steps": 1, "state": {"x": 3}}, TypeError, "has no state_dict"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        train.fit(**kwargs)


def test_checkpoint_without_an_entry_is_a_clear_error(tmp_path):
    model, opt, step = make_problem()
    ckpt = tmp_path / "c.pt"
    train.fit(step, 2, state={"model": model}, checkpoint=ckpt, progress=False)
    with pytest.raises(KeyError, match="Delete it to start afresh"):
        train.load_checkpoint(ckpt, {"model": model, "opt": opt})


def test_warmup_constant_cosine_schedule():
    f = train.warmup_constant_cosine(warmup=4, decay_from=10, total=30)
    assert [f(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(9) == f(10) == 1.0
    assert f(20) == pytest.approx(0.5) and f(30) == pytest.approx(0.0) and f(40) == pytest.approx(0.0)
    assert all(f(i) >= f(i + 1) for i in range(10, 30))
    assert train.warmup_constant_cosine(0, 0, 2)(0) == 1.0
    with pytest.raises(ValueError, match="decay_from"):
        train.warmup_constant_cosine(5, 3, 10)


def test_timed_adds_the_wall_time_of_each_step_and_keeps_the_metrics(monkeypatch):
    clock = iter([10.0, 10.5, 12.0])
    monkeypatch.setattr(train.time, "perf_counter", lambda: next(clock))
    step = train.timed(lambda i: {"loss": float(i)})
    assert step(0) == {"loss": 0.0, "time_s": 0.5}
    assert step(1) == {"loss": 1.0, "time_s": 1.5}
