"""Quick start: a durable checkout workflow with a step, a race and a durable sleep."""

from dataclasses import dataclass

import litedurable as ld

app = ld.App("litedurable.db")


@dataclass
class Order:
    id: str
    cents: int


@app.step(retries=ld.Retry(max_attempts=5, initial=0.1))
def charge(order_id: str, cents: int) -> str:
    # Runs at least once, and never again once its result is recorded.
    return f"receipt-{order_id}-{cents}-{ld.idempotency_key()}"


@app.step()
def fetch_price(vendor: str) -> float:
    return {"vendor-a": 9.5, "vendor-b": 9.0}[vendor]


@app.workflow()
def checkout(order: Order) -> str:
    receipt = charge(order.id, order.cents)
    a = ld.go(fetch_price, "vendor-a")
    b = ld.go(fetch_price, "vendor-b")
    first = ld.select([a, b, ld.after(30)])  # the same winner on every replay
    ld.sleep(0.1)  # durable: wakes at the recorded instant, even after a restart
    prices = ld.wait_all([a, b])
    won = "vendor-a" if first is a else "vendor-b"
    return f"{receipt}: first quote from {won}, best price {min(prices)}"


if __name__ == "__main__":
    with app:
        handle = app.start(checkout, Order("42", 1999), workflow_id="order-42")
        print(handle.result(timeout=60))
