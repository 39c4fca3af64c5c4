"""The pieces of `python -m benchmarks` (see benchmarks/__main__.py): one job per module.

- machine.py: what the machine is (CPU, cores, clock, SIMD, OS, Python, package versions) and its name;
- timing.py: interleaved timing blocks and their statistics (median/p90/p99, spread over repeats);
- latency.py: the per-window latency worker, run once per thread setting and repeat in its own process;
- floor.py: multiply-accumulates per program (read from the .tflite) and the CPU's peak;
- footprint.py: import time and resident memory of the torch-free runtime process;
- bridge.py: protocol parsing throughput and frame-to-prediction latency under the simulators;
- plots.py: the PNG plots (matplotlib, optional); report.py: the markdown report and the CSV files.
"""
