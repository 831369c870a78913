"""Benchmark evaluation: k samples per problem, avg@k and unbiased pass@k."""
