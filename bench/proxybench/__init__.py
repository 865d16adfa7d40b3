"""The parts of bench/proxy_throughput.py: processes, the upstream and targets, wrk, CPU accounting, report."""
