#!/usr/bin/env python3
"""Prints the request and storage counts of an archive per month, and what they cost at the
prices below, as the Markdown tables of docs/costs.md.

The counts follow what pitr does (docs/format.md, README "Flush interval and cost"):
  - one PUT per flush with new writes (a busy master writes at every flush), and one HEAD of
    the generation's snapshot with it;
  - the lease renewed every 5 s (a conditional PUT) by the one writer;
  - compaction at the default levels 1m,1h,24h: every level 0 segment is read once and
    deleted once; each minute, hour and day one compacted object is put and read back once;
    the level 1 and 2 objects are read and deleted once more when the next level takes them;
    a pass lists the archive every 10 s (one LIST per 1,000 objects; an archive kept compact
    holds a few hundred);
  - one scheduled snapshot a day (one multipart upload: a few PUTs per 100 MiB part);
  - retention deletes a day of objects a day (DELETEs are free on all three).

Usage: scripts/costs.py            (prints the tables)
Edit PRICES for your provider and region.
"""

MONTH_S = 30 * 86400

# USD. Requests per 1,000; storage per GB-month. Assumed list prices of a US region for the
# standard/hot tier; check them against your provider's current price page.
PRICES = {
    "S3 Standard": {"put": 0.005, "list": 0.005, "get": 0.0004, "delete": 0.0, "gb": 0.023},
    "GCS Standard (regional)": {"put": 0.005, "list": 0.005, "get": 0.0004, "delete": 0.0, "gb": 0.020},
    "Azure Blob Hot (LRS)": {"put": 0.0065, "list": 0.0065, "get": 0.0005, "delete": 0.0, "gb": 0.0208},
}

FLUSHES = [("1s (default)", 1.0), ("200ms", 0.2), ("50ms", 0.05), ("10s", 10.0)]


def counts(flush_s, compaction):
    seg = MONTH_S / flush_s
    c = {
        "segment PUTs": seg,
        "HEADs with the flushes": seg,
        "lease PUTs": MONTH_S / 5,
        "snapshot PUTs": 30 * 4,
    }
    if compaction:
        minutes, hours, days = MONTH_S / 60, MONTH_S / 3600, MONTH_S / 86400
        compacted = minutes + hours + days
        c["compaction PUTs"] = compacted
        c["compaction GETs"] = seg + minutes + hours + compacted
        c["DELETEs"] = seg + minutes + hours
        c["LISTs"] = MONTH_S / 10
    else:
        c["compaction PUTs"] = c["compaction GETs"] = c["DELETEs"] = c["LISTs"] = 0
    return c


def cost(c, p):
    puts = c["segment PUTs"] + c["lease PUTs"] + c["snapshot PUTs"] + c["compaction PUTs"]
    gets = c["HEADs with the flushes"] + c["compaction GETs"]
    return (puts * p["put"] + gets * p["get"] + c["LISTs"] * p["list"] + c["DELETEs"] * p["delete"]) / 1000


def human(n):
    if n >= 1e6:
        return f"{n / 1e6:.1f} million"
    if n >= 1e3:
        return f"{n / 1e3:,.0f},000".replace(",000,000", ",000")
    return f"{n:,.0f}"


def main():
    keys = list(counts(1, True).keys())
    print("Requests per month (30 days) of a busy master:\n")
    print("| `--flush-interval` | compaction | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for label, f in FLUSHES:
        for comp in (False, True):
            c = counts(f, comp)
            print(f"| {label} | {'on' if comp else 'off'} | " + " | ".join(human(c[k]) for k in keys) + " |")
    print("\nRequests cost per month, USD:\n")
    names = list(PRICES)
    print("| `--flush-interval` | compaction | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for label, f in FLUSHES:
        for comp in (False, True):
            c = counts(f, comp)
            print(f"| {label} | {'on' if comp else 'off'} | " + " | ".join(f"${cost(c, PRICES[n]):,.2f}" for n in names) + " |")
    print("\nStorage per month, USD, 30 days kept (`--retain 30d`), one snapshot a day kept:\n")
    print("| data set (compressed snapshot) | stream written (compressed) per day | stored | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for snap_gb, stream_gb in [(1, 0.5), (10, 5), (50, 20)]:
        stored = 30 * snap_gb + 30 * stream_gb
        print(f"| {snap_gb} GB | {stream_gb} GB | {stored:,.0f} GB | " + " | ".join(f"${stored * PRICES[n]['gb']:,.2f}" for n in names) + " |")
    print("\nPrices used (per 1,000 requests; storage per GB-month):\n")
    print("| provider | PUT | LIST | GET/HEAD | DELETE | storage |")
    print("|---|---|---|---|---|---|")
    for n, p in PRICES.items():
        print(f"| {n} | ${p['put']} | ${p['list']} | ${p['get']} | ${p['delete']} | ${p['gb']} |")


if __name__ == "__main__":
    main()
