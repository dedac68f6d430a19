"""Which channels should a pruning step keep? Damage of one step by criterion.

vgg_small (BN->ReLU) is trained densely for EPOCHS epochs on 18,000
Fashion-MNIST images (bench_tradeoff's split and optimizer); then every
prunable group is cut by the same fraction (25%, 50%), keeping its channels
by each criterion: highest per-channel activation density (`"density"`,
ADPPolicy's selection until this measurement), largest L1 norm of the
producer kernels (`"l1"`), largest BatchNormalization |gamma|
(`"bn_gamma"`), random, and lowest density (a sanity check). BN statistics
are re-estimated on 512 training images (as the trainer does), then test
accuracy (10,000 images) is printed right after the cut and after a quarter
epoch of training the pruned model (same samples and seed for every
criterion; fresh optimizer).

    python benchmarks/bench_selection.py SEED EPOCHS
"""
import sys, types, importlib.util, json
import keras, numpy as np
import keras_adp
from keras_adp import policy as policy_lib
from keras_adp.rebuild import recalibrate_batch_norm
from keras_adp import scoring
spec = importlib.util.spec_from_file_location("bt", "benchmarks/bench_tradeoff.py")
bt = importlib.util.module_from_spec(spec); spec.loader.exec_module(bt)
seed = int(sys.argv[1]); epochs = int(sys.argv[2])
args = types.SimpleNamespace(model="vgg_small", base_width=1.0, epochs=6, batch_size=128, lr=2e-3)
data = bt.load(20000, 10000, "idx"); args.train_size = len(data["x"])
model = bt.build(args, 1.0, seed)
for epoch in range(epochs):
    keras.utils.set_random_seed(seed + epoch)
    model.fit(data["x"], data["y"], batch_size=128, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
def test_acc(m):
    return float(np.mean(np.argmax(m.predict(data["x_test"], batch_size=512, verbose=0), -1) == data["y_test"]))
calib = data["x"][:512]
groups = [g for g in keras_adp.channel_groups(model) if g.prunable]
dens = keras_adp.measure_density(model, calib)
print(f"seed {seed}, dense after {epochs} epochs: test {100*test_acc(model):.2f}", flush=True)
rng = np.random.default_rng(seed)
for frac in (0.25, 0.5):
    for sel in ("density", "l1", "bn_gamma", "random", "anti-density"):
        keep = {}
        if sel in ("l1", "bn_gamma"):
            scores = scoring.channel_scores(model, groups, sel)
        for g in groups:
            if g.name not in dens: continue
            k = max(4, int(round(g.size * (1 - frac))))
            d = dens[g.name].channels
            if sel == "density": order = np.argsort(-d, kind="stable")
            elif sel == "anti-density": order = np.argsort(d, kind="stable")
            elif sel == "random": order = rng.permutation(g.size)
            else: order = np.argsort(-scores[g.name], kind="stable")
            keep[g.name] = np.sort(order[:k])
        pruned = keras_adp.prune_channels(model, keep)
        recalibrate_batch_norm(pruned, calib)
        instant = test_acc(pruned)
        keras.utils.set_random_seed(1000 + seed)
        pruned.fit(data["x"][:4500], data["y"][:4500], batch_size=128, epochs=1, verbose=0)
        tuned = test_acc(pruned)
        print(f"  cut {frac:.2f} keep by {sel:<12}: instant {100*instant:6.2f}  after 1/4 epoch {100*tuned:6.2f}", flush=True)
