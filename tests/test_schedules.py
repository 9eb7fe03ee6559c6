import pytest
import torch
from transformers import get_scheduler

from models.schedules import lr_schedule


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 10), (10, 10), (4, 37)])
def test_schedule_follows_transformers_step_for_step(name, warmup, total):
    def rates(make):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        schedule = make(optimizer)
        out = []
        for _ in range(total + 2):
            out.append(schedule.get_last_lr()[0])
            optimizer.step()
            schedule.step()
        return out

    ours = rates(lambda opt: lr_schedule(name, opt, warmup, total))
    theirs = rates(lambda opt: get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total))
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_unknown_schedule_fails_when_built():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="polynomial"):
        lr_schedule("polynomial", optimizer, 1, 10)
