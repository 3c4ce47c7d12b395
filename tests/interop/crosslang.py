#!/usr/bin/python3
"""The Python side of the cross-language example (tests/interop/crosslang.sh):
reads the message and the analytics event that examples/interop.c wrote,
with exact types (psycopg2; jsonb numbers as Decimal or int, never a
rounded float).

    DATABASE_URL=... tests/interop/crosslang.py HANDOFF.json
"""
import datetime
import json
import os
import sys
from decimal import Decimal

import psycopg2
import psycopg2.extras


def main():
    handoff = json.load(open(sys.argv[1]))
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    # jsonb as Python values with exact numbers: 0.7 -> Decimal('0.7')
    psycopg2.extras.register_default_jsonb(
        conn, loads=lambda s: json.loads(s, parse_float=Decimal))
    cur = conn.cursor()
    cur.execute("SELECT id, role, content, metadata, created_at FROM messages "
                "WHERE conversation_id = %s", (handoff["conversation_id"],))
    rows = cur.fetchall()
    assert len(rows) == 1, rows
    mid, role, content, meta, created = rows[0]
    assert isinstance(mid, int) and role == "assistant", (mid, role)
    assert content == "Grüße aus C", content
    assert meta == {"temp": Decimal("0.7"), "big": 9007199254740993, "model": "m-1"}, meta
    assert isinstance(meta["big"], int)
    assert isinstance(created, datetime.datetime) and created.tzinfo is not None
    print(f"python: message {mid}: metadata {meta}")
    # a filter written in Python finds what C wrote
    cur.execute("SELECT count(*) FROM messages WHERE metadata @> %s::jsonb",
                ('{"temp": 0.7}',))
    assert cur.fetchone()[0] >= 1
    cur.execute("SELECT name, properties, occurred_at, user_id FROM analytics_events "
                "WHERE user_id = %s", (handoff["user_id"],))
    events = cur.fetchall()
    assert len(events) == 1, events
    name, props, occurred, uid = events[0]
    assert name == "interop_prepared" and uid == handoff["user_id"]
    assert props == {"score": Decimal("0.1"), "n": 9007199254740993}, props
    assert isinstance(occurred, datetime.datetime) and occurred.tzinfo is not None
    print(f"python: event {name}: properties {props}")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
