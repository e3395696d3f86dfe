"""Fixtures every contract suite shares, whichever store it runs on."""

import pytest

from service.adapters.clock import FrozenClock
from tests.contract.builders import START


@pytest.fixture
def clock() -> FrozenClock:
    """Time stands still at START until a test moves it."""
    return FrozenClock(START)
