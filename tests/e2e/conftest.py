"""E2E fixtures: a `Deployment` per test, its worker processes reaped at the end."""

from collections.abc import AsyncIterator, Callable

import pytest

from tests.e2e.harness import Deployment


@pytest.fixture
async def make_deployment(
    rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Callable[[str], Deployment]]:
    """Build deployments on a given MongoDB URL; each is torn down after the test."""
    made: list[Deployment] = []
    logs = tmp_path_factory.mktemp("workers")

    def make(mongodb_url: str) -> Deployment:
        deployment = Deployment(
            amqp_url=rabbitmq_url, mongodb_url=mongodb_url, logs=logs
        )
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        # Shown by pytest when the test failed: what each worker said last.
        print(deployment.report())  # noqa: T201 - the report is the point
        await deployment.close()


@pytest.fixture
def deployment(
    make_deployment: Callable[[str], Deployment], mongodb_url: str
) -> Deployment:
    """A deployment on the shared MongoDB, with no worker started yet."""
    return make_deployment(mongodb_url)
