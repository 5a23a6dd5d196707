"""Reads a replseed snapshot with pyarrow and DuckDB, as analytics users would.

Usage: interop_check.py STAGE_DIR SNAPSHOT
Checks, for every table: pyarrow reads all chunks as one table with the
manifest's row count and the MariaDB type in every field's metadata; DuckDB
counts the same rows and can aggregate the natural columns.
"""
import json
import sys

import duckdb
import pyarrow.parquet as pq

stage, snap = sys.argv[1], sys.argv[2]
m = json.load(open(f"{stage}/{snap}/manifest.json"))
con = duckdb.connect()
tables = 0
for d in m["databases"]:
    for t in d["tables"]:
        if not t["chunks"]:
            continue
        files = [f"{stage}/{c['path']}" for c in t["chunks"]]
        table = pq.read_table(files)
        assert table.num_rows == t["rows"], (d["name"], t["name"], table.num_rows, t["rows"])
        for col in t["columns"]:
            field = table.schema.field(col["name"])
            md = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
            assert md.get("mysql.column_type") == col["column_type"], (t["name"], col["name"], md)
        n = con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone()[0]
        assert n == t["rows"], (t["name"], n)
        # Every natural column is usable in SQL.
        for col in t["columns"]:
            q = '"' + col["name"].replace('"', '""') + '"'
            con.execute(f"SELECT count({q}) FROM read_parquet(?)", [files]).fetchone()
        tables += 1
print(f"pyarrow and duckdb read {tables} tables")
