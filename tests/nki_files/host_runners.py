"""Host code that runs kernels the ways NKI offers: the simulator, baremetal, benchmark, and a
jit kernel called directly (legacy API), and nki.simulate (current API, in `current_host`)."""

import neuronxcc.nki.language as nl
import numpy as np
from neuronxcc import nki


@nki.jit
def double(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nl.store(out, value=nl.multiply(nl.load(x), 2.0))
    return out


def with_simulate_kernel(x):
    return nki.simulate_kernel(double, x)


def with_baremetal(x):
    return nki.baremetal(double)(x)


def with_benchmark(x):
    bench = nki.benchmark(warmup=2, iters=10)(double)
    report = bench(x)
    return report, bench.benchmark_result.nc_latency.get_latency_percentile(99), bench.outputs


def called_directly(x):
    return double(x)


def reference(x):
    return np.asarray(x) * 2
