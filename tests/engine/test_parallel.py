"""Multi-process training (DistributedDataParallel, gloo): N processes train the model one process would."""

from __future__ import annotations

import itertools

import pytest
import torch

from deepmia.engine.parallel import all_max, broadcast_object, is_main, launch, rank, world_size
from deepmia.engine.trainer import Trainer
from deepmia.errors import InvalidArgumentError

STEPS = 5


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS, 8, 3, generator=g)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(STEPS, 8, 1, generator=g)


def _fit(out_dir: str) -> dict:
    """Train a linear model for STEPS steps on a fixed global batch of 8, this rank taking its share of it."""
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 1)
    x, y = _data()
    share = 8 // world_size()
    rows = slice(rank() * share, (rank() + 1) * share)
    batches = iter((x[i, rows], y[i, rows]) for i in itertools.count(0) if i < STEPS)
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1),
        lambda net, b: torch.nn.functional.mse_loss(net(b[0]), b[1]),
        batches, out_dir=out_dir, steps_per_epoch=STEPS, max_epochs=1, precision="fp32", grad_clip=None,
        lr_schedule="constant", resume=False, validate=lambda net: {"val_rank": float(rank())}, monitor="val_rank",
    )
    state = trainer.fit()
    return {"weight": model.weight.detach().clone(), "bias": model.bias.detach().clone(), "steps": state.step,
            "world": world_size(), "main": is_main(), "agreed": all_max(rank()), "plan": broadcast_object(rank())}


def test_two_processes_train_the_model_one_process_trains(tmp_path):
    one = launch(_fit, 1, str(tmp_path / "one"))
    two = launch(_fit, 2, str(tmp_path / "two"))
    assert one["world"] == 1 and two["world"] == 2 and two["main"]
    assert two["steps"] == one["steps"] == STEPS
    # gradients averaged over the two halves of the batch = the gradient of the whole batch
    assert torch.allclose(one["weight"], two["weight"], atol=1e-5)
    assert torch.allclose(one["bias"], two["bias"], atol=1e-5)
    assert not torch.allclose(one["weight"], torch.nn.Linear(3, 1).weight)  # it did train
    assert two["agreed"] == 1.0 and two["plan"] == 0  # collectives: max over ranks, rank 0's object
    # rank 0 alone validated, logged and wrote the checkpoint
    log = (tmp_path / "two" / "log.csv").read_text()
    assert "val_rank" in log and log.strip().splitlines()[-1].endswith(("0.0", ",0.0"))
    assert (tmp_path / "two" / "model_best.pt").is_file()


def _fails() -> None:
    if rank() == 1:
        raise ValueError("rank 1 broke")


def test_a_failing_process_stops_the_run_with_its_error():
    with pytest.raises(Exception, match="rank 1 broke"):
        launch(_fails, 2)


def test_bad_process_counts_are_refused():
    with pytest.raises(InvalidArgumentError, match="processes must be >= 1"):
        launch(_fails, 0)
    if torch.cuda.device_count() == 0:
        with pytest.raises(InvalidArgumentError, match="need 2 GPUs"):
            launch(_fails, 2, backend="nccl")
