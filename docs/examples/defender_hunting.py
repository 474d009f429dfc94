#!/usr/bin/env python3
"""Run an advanced hunting query the way Microsoft's documentation for the Defender for Endpoint
API shows it ("Advanced Hunting API": POST /api/advancedqueries/run with a bearer token and a
JSON body {"Query": ...}; the answer has "Schema" and "Results"), and print the result.

Nothing here is specific to Quarry except the base URL: point API_URL at Quarry and use a Quarry
query key as the token, or at https://api.securitycenter.microsoft.com with an Entra ID token.

    API_URL=http://127.0.0.1:8080 API_TOKEN=qk_... python docs/examples/defender_hunting.py

Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

QUERY = (
    "DeviceProcessEvents | where Timestamp > ago(2h) "
    '| where ProcessCommandLine contains "/Volume" | sort by Timestamp asc'
)


def run_query(api_url: str, token: str, query: str) -> dict:
    url = api_url.rstrip("/") + "/api/advancedqueries/run"
    data = json.dumps({"Query": query}).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": "Bearer " + token,
    }
    req = urllib.request.Request(url, data, headers, method="POST")
    with urllib.request.urlopen(req, timeout=300) as response:
        return json.loads(response.read().decode("utf-8"))


def main() -> int:
    api_url = os.environ.get("API_URL", "https://api.securitycenter.microsoft.com")
    token = os.environ.get("API_TOKEN")
    if not token:
        print("set API_TOKEN to a bearer token (for Quarry: a key with the query scope)", file=sys.stderr)
        return 2
    query = sys.argv[1] if len(sys.argv) > 1 else QUERY
    try:
        result = run_query(api_url, token, query)
    except urllib.error.HTTPError as e:
        # Errors are {"error": {"code", "message", "target"}} (the API's "common errors" page);
        # clients key on code, the message is for people.
        error = json.loads(e.read().decode("utf-8", "replace"))["error"]
        print(f"HTTP {e.code} {error['code']}: {error['message']} (request {error['target']})",
              file=sys.stderr)
        return 1
    schema = result["Schema"]
    results = result["Results"]
    print("Schema: " + ", ".join(f"{c['Name']} ({c['Type']})" for c in schema))
    print(f"{len(results)} result(s)")
    for row in results:
        print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
