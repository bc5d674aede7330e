"""A Locust load test whose simulated users share one token pool per Locust process.

Point it at the loopback emulator (``tokenpool emulator``) or at your own API;
the provider comes from ``acme_pool.toml`` beside this file and the
environment it names (``ACME_TOKEN_URL``, ``ACME_CLIENT_ID``,
``ACME_CLIENT_SECRET``, ``ACME_CA_FILE``)::

    locust -f examples/locustfile.py --headless -u 20 -r 20 -t 10s --host "$ACME_API_URL"

Needs the ``locust`` extra.
"""

from __future__ import annotations

import os
from pathlib import Path

from locust import HttpUser, constant, task

from tokenpool.contrib import locust as tokenpool_locust

tokenpool_locust.install(config=Path(__file__).with_name("acme_pool.toml"), max_in_flight=20)
acme = tokenpool_locust.requests_auth("acme")


class Payouts(HttpUser):
    wait_time = constant(0.1)

    def on_start(self) -> None:
        if os.environ.get("ACME_CA_FILE"):
            self.client.verify = os.environ["ACME_CA_FILE"]  # the emulator's test CA

    @task
    def pay(self) -> None:
        with tokenpool_locust.in_flight():
            self.client.post("/api/resource", json={"amount": 1}, auth=acme)
