import pytest

import numpy_platform as platform


@pytest.fixture
def numpy_platform(monkeypatch):
    """The numpy test platform, in the platform registry for one test."""
    platform.register(monkeypatch)
