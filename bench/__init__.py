"""Speed benchmarks of orlab (`make bench` = `python -m bench.run_all`). See bench/RESULTS.md."""
