"""A citypulse subscriber written with another NATS client (nats-py) and another CBOR library
(cbor2), to prove the contract is usable without any citypulse code.

Subscribes to `sensors.>`, prints "ready" once the subscription is registered, then checks every
message against the contract until it has seen --count messages or --timeout seconds pass, and
prints one JSON summary line:

  {"messages": N, "valid": V, "invalid": {"reason": count, ...}, "sensors": S,
   "seq_gaps": G, "seq_regressions": R, "identity_mismatches": I, "by_kind": {...}}

Checks: the payload is a CBOR map with v == 1; `sensor`, `district`, `kind` equal the subject's
tokens; the required keys of the kind exist with the contract's types; per sensor, `seq` is
previous + 1 (gaps and regressions are counted, not judged: the test compares them with the
simulator's truth file).
"""
import argparse
import asyncio
import json
import re
import sys

import cbor2
import nats

TOKEN = re.compile(r"^[a-z0-9_-]{1,64}$")
TRAFFIC_REQUIRED = {"count": int, "interval_s": int, "occupancy": (int, float), "lanes": int}
AIR_NUMBERS = ("pm25_ugm3", "pm10_ugm3", "o3_ppb", "no2_ppb", "so2_ppb", "co_ppm", "temp_c", "rh_pct")


def check(subject, data):
    """Returns (reason or None, decoded map or None)."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != "sensors" or not all(TOKEN.match(p) for p in parts[1:]):
        return "bad_subject", None
    try:
        msg = cbor2.loads(data)
    except Exception:  # any decoding failure is a contract violation
        return "malformed_cbor", None
    if not isinstance(msg, dict):
        return "not_a_map", None
    if msg.get("v") != 1:
        return "unsupported_version", msg
    for key in ("sensor", "district", "kind"):
        if not isinstance(msg.get(key), str):
            return "wrong_type", msg
    if (msg["district"], msg["kind"], msg["sensor"]) != (parts[1], parts[2], parts[3]):
        return "identity_mismatch", msg
    for key in ("ts", "seq"):
        if not isinstance(msg.get(key), int) or isinstance(msg.get(key), bool) or msg[key] < 0:
            return "wrong_type", msg
    if msg["kind"] == "traffic":
        for key, typ in TRAFFIC_REQUIRED.items():
            if key not in msg:
                return "missing_field", msg
            if not isinstance(msg[key], typ) or isinstance(msg[key], bool):
                return "wrong_type", msg
        if "speed_kmh" in msg and not isinstance(msg["speed_kmh"], (int, float)):
            return "wrong_type", msg
    elif msg["kind"] == "air":
        for key in AIR_NUMBERS:
            if key in msg and (not isinstance(msg[key], (int, float)) or isinstance(msg[key], bool)):
                return "wrong_type", msg
        # Optional since issue 10: the averaging interval, whole seconds.
        if "interval_s" in msg and (not isinstance(msg["interval_s"], int)
                                    or isinstance(msg["interval_s"], bool) or msg["interval_s"] < 0):
            return "wrong_type", msg
    else:
        return "unknown_kind", msg
    return None, msg


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()

    nc = await nats.connect(args.url)
    summary = {"messages": 0, "valid": 0, "invalid": {}, "sensors": 0, "seq_gaps": 0,
               "seq_regressions": 0, "identity_mismatches": 0, "by_kind": {}}
    last_seq = {}
    done = asyncio.Event()

    async def on_msg(m):
        summary["messages"] += 1
        reason, msg = check(m.subject, m.data)
        if reason is None:
            summary["valid"] += 1
            kind = msg["kind"]
            summary["by_kind"][kind] = summary["by_kind"].get(kind, 0) + 1
            prev = last_seq.get(m.subject)
            if prev is not None:
                if msg["seq"] > prev + 1:
                    summary["seq_gaps"] += 1
                elif msg["seq"] <= prev:
                    summary["seq_regressions"] += 1
            last_seq[m.subject] = max(prev or 0, msg["seq"])
        else:
            summary["invalid"][reason] = summary["invalid"].get(reason, 0) + 1
            if reason == "identity_mismatch":
                summary["identity_mismatches"] += 1
        if summary["messages"] >= args.count:
            done.set()

    await nc.subscribe("sensors.>", cb=on_msg)
    await nc.flush()
    print("ready", flush=True)
    try:
        await asyncio.wait_for(done.wait(), timeout=args.timeout)
    except asyncio.TimeoutError:
        pass
    summary["sensors"] = len(last_seq)
    await nc.drain()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
