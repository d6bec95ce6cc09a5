"""ccrec.benchmarks: measurements behind BENCHMARKS.md and docs/bench_*.md; not used by ccrec.

ondevice        on-device scoring speed and bundle sizes (launch/benchmark.py)
speed           training speed: seconds per epoch, distillation step cost
                (launch/benchmark_train.py)
synthetic_logs  Yoochoose-layout raw click logs (launch/benchmark_preprocess.py)
"""
