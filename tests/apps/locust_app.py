"""The locustfile of tests/integrations/test_locust.py: simulated users share one pool per Locust process."""

from __future__ import annotations

import os

import applog
import fleet_options
import httpx
from locust import HttpUser, constant, task

from tokenpool import Secret
from tokenpool.contrib import locust as tokenpool_locust
from tokenpool.providers import ClientCredentials, Provider

applog.configure()


def providers() -> dict[str, Provider]:
    return {
        "generic": ClientCredentials(
            token_url=httpx.URL(os.environ["TOKENPOOL_TEST_TOKEN_URL"]),
            client_id=os.environ["TOKENPOOL_TEST_CLIENT_ID"],
            client_secret=Secret(os.environ["TOKENPOOL_TEST_CLIENT_SECRET"]),
        )
    }


config = fleet_options.config_file()
if config is not None:  # providers, [pool] and [pool.store] from a TOML file
    tokenpool_locust.install(config=config, max_in_flight=16)
else:
    tokenpool_locust.install(
        providers,
        max_in_flight=16,
        ca_file=os.environ["TOKENPOOL_TEST_CA_FILE"],
        **fleet_options.store_options(),
    )
generic = tokenpool_locust.requests_auth("generic")


class ResourceUser(HttpUser):
    wait_time = constant(0.2)

    def on_start(self) -> None:
        self.client.verify = os.environ["TOKENPOOL_TEST_CA_FILE"]

    @task
    def resource(self) -> None:
        with tokenpool_locust.in_flight():
            self.client.get("/api/resource", auth=generic)
