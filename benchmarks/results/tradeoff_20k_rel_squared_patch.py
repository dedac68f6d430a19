"""Experiment behind `tradeoff_20k_rel_squared.json`: bench_tradeoff.py with
the relative width rule's ratio squared (AD / max AD, squared), patched in.
Not a policy option: it lost 0.6 points to uniform width at the same size.
Run from the repository root with bench_tradeoff.py's arguments."""
import math, sys, importlib.util
sys.argv[0] = "bench_tradeoff"
import keras_adp
from keras_adp import policy as P
orig = P.ADPPolicy.group_width
def group_width(self, width, density, gamma=None, densest=None):
    if self.width_rule != "relative":
        return orig(self, width, density, gamma, densest)
    top = density.overall if densest is None else densest
    ratio = 1.0 if top <= 0 else min(1.0, density.overall / top)
    return self.new_width(width, ratio ** 2)
P.ADPPolicy.group_width = group_width
spec = importlib.util.spec_from_file_location("bt", "benchmarks/bench_tradeoff.py")
bt = importlib.util.module_from_spec(spec); spec.loader.exec_module(bt)
bt.main(sys.argv[1:])
