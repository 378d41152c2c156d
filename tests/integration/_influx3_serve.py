"""The 3.x stand-in as a process of its own, for pointing the live 3.x suite at it
(`python -m tests.integration._influx3_serve`): prints its URL and token on the first line of
stdout (as JSON), serves until stdin closes, then prints what it saw as one JSON line: the
databases left, and the requests it received as
`[method, path, database, status, user agent]`."""

from __future__ import annotations

import json
import sys

from tests.influx3_standin import ThreadedInflux3StandIn


def main() -> None:
    with ThreadedInflux3StandIn() as server:
        print(json.dumps({"url": server.url, "token": server.token}), flush=True)
        sys.stdin.read()
        seen = [
            [r.method, r.path, r.database, r.status, r.headers.get("User-Agent", "")]
            for r in list(server.requests)
        ]
        left = sorted(server.databases)
    print(json.dumps({"databases": left, "requests": seen}), flush=True)


if __name__ == "__main__":
    main()
