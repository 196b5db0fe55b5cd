"""The naive consumer of `scripts/bench`: the baseline every service stage is compared with.

What an afternoon's Python script would do with the RAW stream: a nats-py ordered consumer (push,
flow control, no acks) on `sensors.>`, cbor2-decode every payload, and keep a dict of
(district, kind, minute) -> [count, sum of one field] (vehicle `count` for traffic, `pm25_ugm3`
for air). It stops after --count messages and prints one JSON line:

  {"messages": N, "seconds": first-to-last message, "keys": dict size, "decode_errors": E,
   "total": sum of the field over all keys}

Only the standard library, nats-py and cbor2 (scripts/install-deps installs them).
"""
import argparse
import asyncio
import json
import sys
import time

import cbor2
import nats

FIELD = {"traffic": "count", "air": "pm25_ugm3"}


async def consume(url, stream, count, timeout):
    nc = await nats.connect(url)
    js = nc.jetstream()
    table = {}
    state = {"n": 0, "first": None, "last": None, "errors": 0}
    done = asyncio.Event()

    async def on_message(msg):
        now = time.monotonic()
        if state["first"] is None:
            state["first"] = now
        try:
            r = cbor2.loads(msg.data)
            key = (r["district"], r["kind"], r["ts"] // 60_000)
            value = r.get(FIELD.get(r["kind"], ""), 0) or 0
            cell = table.get(key)
            if cell is None:
                table[key] = [1, value]
            else:
                cell[0] += 1
                cell[1] += value
        except (ValueError, KeyError, TypeError, cbor2.CBORDecodeError):
            state["errors"] += 1
        state["n"] += 1
        state["last"] = now
        if state["n"] >= count:
            done.set()

    sub = await js.subscribe("sensors.>", stream=stream, cb=on_message, ordered_consumer=True)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        await sub.unsubscribe()
        await nc.close()
    return {
        "messages": state["n"],
        "seconds": (state["last"] or 0) - (state["first"] or 0),
        "keys": len(table),
        "decode_errors": state["errors"],
        "total": sum(c[1] for c in table.values()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="NATS URL")
    ap.add_argument("--stream", default="RAW", help="stream holding sensors.>")
    ap.add_argument("--count", type=int, required=True, help="messages to read, then stop")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up")
    args = ap.parse_args()
    try:
        result = asyncio.run(consume(args.url, args.stream, args.count, args.timeout))
    except asyncio.TimeoutError:
        print(f"bench_baseline: fewer than {args.count} messages within {args.timeout}s",
              file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
