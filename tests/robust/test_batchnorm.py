"""BatchNorm recalibration: the running statistics measured again on given data, the layers'
momentum kept, a network without BatchNorm left alone."""

from __future__ import annotations

import torch
from torch import nn

from core.robust.batchnorm import has_batchnorm, recalibrate_batchnorm
from core.robust.datasets.loading import ImageDataset


def test_the_running_statistics_become_those_of_the_data():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 4, 4) ** 2
    data = ImageDataset(x, torch.zeros(64, dtype=torch.long))
    layer = nn.BatchNorm2d(3)
    model = nn.Sequential(layer)
    assert has_batchnorm(model)
    # Stale statistics, as a short fine-tuning at a high rate leaves them.
    layer.running_mean.fill_(-5.0)
    layer.running_var.fill_(0.01)

    assert recalibrate_batchnorm(model, data, batch_size=64, device=torch.device("cpu")) == 1
    assert torch.allclose(layer.running_mean, x.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(layer.running_var, x.var(dim=(0, 2, 3)), atol=1e-4)
    assert layer.momentum == 0.1 and not model.training


def test_a_network_without_batchnorm_is_left_alone():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.LayerNorm([2, 2, 2]))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    data = ImageDataset(torch.rand(8, 1, 4, 4), torch.zeros(8, dtype=torch.long))
    assert not has_batchnorm(model)
    assert recalibrate_batchnorm(model, data, batch_size=4, device=torch.device("cpu")) == 0
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
