"""A checkout waits for the payment provider's webhook: a durable promise, settled once.

Shows ``ld.promise()``: the workflow publishes the promise's id (``ld.set_event``) and waits
on it; the webhook handler, a small HTTP server, calls ``app.resolve(id, receipt)`` or
``app.reject(id, reason)``. The workflows' process stops while they wait, and the webhooks
arrive while it is down, in an App that runs no workflows. The provider delivers one webhook
twice, as providers do; the second delivery changes nothing (``resolve`` returns False).
When the workflows' App starts again, one order ships and the declined one fails.

    python examples/payment_webhook.py [journal.db]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import litedurable as ld


def make_app(path: str) -> tuple[ld.App, Callable[[str], str]]:
    app = ld.App(path)

    @app.step(name="ship")
    def ship(order: str, receipt: str) -> str:
        return f"{order}: shipped (receipt {receipt})"

    @app.workflow(name="checkout")
    def checkout(order: str) -> str:
        payment = ld.promise()
        ld.set_event("payment_promise", payment.id)  # the callback id given to the provider
        try:
            receipt = payment.result()
        except ld.PromiseRejectedError as exc:
            return f"{order}: not shipped, {exc}"
        return ship(order, receipt)

    return app, checkout


def webhook_server(app: ld.App) -> ThreadingHTTPServer:
    """POST /payments/<promise id> with {"status": "paid", "receipt": ...} or a decline."""

    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            promise_id = self.path.rsplit("/", 1)[-1]
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if body["status"] == "paid":
                settled = app.resolve(promise_id, body["receipt"])
            else:
                settled = app.reject(promise_id, body["reason"])
            answer = b"settled" if settled else b"already settled"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def deliver(server: ThreadingHTTPServer, promise_id: str, body: dict[str, str]) -> str:
    """The payment provider calling the webhook."""
    url = f"http://127.0.0.1:{server.server_address[1]}/payments/{promise_id}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.read().decode())


def main(path: str) -> None:
    run = uuid.uuid4().hex[:8]
    orders = {order: f"{order}-{run}" for order in ("order-1", "order-2")}
    app, checkout = make_app(path)
    with app:
        for order, workflow_id in orders.items():
            app.start(checkout, order, workflow_id=workflow_id)
        promises = {order: app.get_event(workflow_id, "payment_promise", timeout=30)
                    for order, workflow_id in orders.items()}
    print("the checkouts wait for their payments; their process stopped")

    with ld.App(path) as webhooks:  # runs no workflows: it only settles promises
        server = webhook_server(webhooks)
        paid = {"status": "paid", "receipt": "r-981"}
        answers = [deliver(server, promises["order-1"], paid),
                   deliver(server, promises["order-2"], {"status": "declined",
                                                         "reason": "card declined"}),
                   deliver(server, promises["order-1"], paid)]  # the provider retries
        server.shutdown()
        server.server_close()
    print(f"webhook answers: {answers}")

    app, _ = make_app(path)
    with app:
        results = [app.handle(workflow_id).result(timeout=30) for workflow_id in orders.values()]
    for result in results:
        print(result)
    ok = (answers == ["settled", "settled", "already settled"]
          and "shipped (receipt r-981)" in results[0] and "card declined" in results[1])
    print(f"each payment settled once, while its workflow was down: {ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "payment_webhook.db"))
