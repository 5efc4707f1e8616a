"""kilostar-otel benchmarks: each hot path side by side with what a user could pick instead.

Run everything with ``make bench`` (``python -m benchmarks``): micro-benchmarks with
pytest-benchmark (``bench_micro.py``, cases in ``cases.py``), the export-capacity run against the
embedded OTLP receiver (``capacity.py``), then the table and chart (``report.py``).
"""
