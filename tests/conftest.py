import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: full-size or end-to-end checks (run in CI)')


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
