import os

import pytest

import sleeptime  # noqa: F401  (applies the offline environment defaults)

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def mock_llm():
    from sleeptime.model.providers import mock

    return mock.register()
