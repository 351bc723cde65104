"""The test harness: embedded PostgreSQL pairs, a tarpit server, sample data and a real Airflow
deployment. It lives in the repository for the tests, the demo and the benchmarks, and is not part of
the installed package (it uses fixed passwords and Airflow internals)."""
