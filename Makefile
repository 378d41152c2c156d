.PHONY: demo test unit integration lint bench

demo:            ## the demo pipeline on a throwaway local InfluxDB
	scripts/demo

test:            ## install what the tests need, lint, type-check, run every test
	scripts/test

unit:
	scripts/bootstrap && .venv/bin/pytest tests/unit

integration:
	scripts/bootstrap && .venv/bin/pytest tests/integration

lint:
	scripts/bootstrap && .venv/bin/ruff check src tests && .venv/bin/ruff format --check src tests && .venv/bin/mypy

bench:           ## benchmarks on a throwaway influxd (results in bench/results/)
	scripts/bootstrap && .venv/bin/python bench/catchup.py

.PHONY: soak
soak:            ## memory soak: the daemon through 20,000+ one-second windows under --trace-memory
	scripts/bootstrap && .venv/bin/python bench/soak.py

.PHONY: bench-workers
bench-workers:   ## 1, 2, 3 workers on PostgreSQL state behind a proxy delaying each query (bench/results/workers.json)
	scripts/bootstrap && .venv/bin/python bench/workers.py

.PHONY: bench-transfer
bench-transfer:  ## export and write throughput against curl on a throwaway influxd (bench/results/transfer.json)
	scripts/bootstrap && .venv/bin/python bench/transfer.py

.PHONY: bench-flux-reader
bench-flux-reader:  ## the 2.x export reader, offline, against Arrow parsing the same CSV in one call
	scripts/bootstrap && .venv/bin/python bench/flux_reader.py

.PHONY: bench-influx3-reader
bench-influx3-reader:  ## the 3.x export reader on Parquet/JSONL answers of the 3.x stand-in, against Arrow reading the same bytes in one call
	scripts/bootstrap && .venv/bin/python bench/influx3_reader.py

.PHONY: bench-year
bench-year:      ## a year's catch-up of 1-minute windows: run-once vs the bare loop, RSS, state size (SQLite, PostgreSQL)
	scripts/bootstrap && .venv/bin/python bench/year.py

.PHONY: bench-per-window
bench-per-window:  ## tierflow's overhead per window run alone, per state store (memory, SQLite, PostgreSQL)
	scripts/bootstrap && .venv/bin/python bench/per_window.py
