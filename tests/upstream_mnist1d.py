"""The MNIST-1D package's own training loop and reference CNN, for tests/test_presets.py to hold the
``mnist1d-paper`` preset against.

The installed ``mnist1d`` package holds the data generation only; its training code lives beside its
notebooks in the repository: ``get_model_args``, ``accuracy`` and ``train_model`` below are
https://github.com/greydanus/mnist1d/blob/7878d96082abd200c546a07a4101fa90b30fdf7e/notebooks/train.py and
``ConvBase`` is the class of the same name in its ``models.py`` (Sam Greydanus, Peter Steinbach;
Apache-2.0), statement for statement: only the layout is ruff's, and lint is off for this file. The loop
takes step ``t``'s batch as ``x_train[(t·B) mod n : (t·B) mod n + B]`` and makes ``total_steps + 1``
updates.
"""

# ruff: noqa
import time, copy
import numpy as np

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

from mnist1d.utils import ObjectView


def get_model_args(as_dict=False):
    arg_dict = {
        "input_size": 40,
        "output_size": 10,
        "hidden_size": 256,
        "learning_rate": 1e-2,
        "weight_decay": 0,
        "batch_size": 100,
        "total_steps": 8000,
        "print_every": 1000,
        "eval_every": 250,
        "checkpoint_every": 1000,
        "device": "cpu",
        "seed": 42,
    }
    return arg_dict if as_dict else ObjectView(arg_dict)


def accuracy(model, inputs, targets):
    preds = model(inputs).argmax(-1).cpu().numpy()
    targets = targets.cpu().numpy().astype(np.float32)
    return 100 * sum(preds == targets) / len(targets)


def train_model(dataset, model, args):
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), args.learning_rate, weight_decay=args.weight_decay)

    x_train, x_test = torch.Tensor(dataset["x"]), torch.Tensor(dataset["x_test"])
    y_train, y_test = torch.LongTensor(dataset["y"]), torch.LongTensor(dataset["y_test"])

    model = model.to(args.device)
    x_train, x_test, y_train, y_test = [v.to(args.device) for v in [x_train, x_test, y_train, y_test]]

    results = {"checkpoints": [], "train_losses": [], "test_losses": [], "train_acc": [], "test_acc": []}
    t0 = time.time()
    for step in range(args.total_steps + 1):
        bix = (step * args.batch_size) % len(x_train)  # batch index
        x, y = x_train[bix : bix + args.batch_size], y_train[bix : bix + args.batch_size]

        loss = criterion(model(x), y)
        results["train_losses"].append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

        if args.eval_every > 0 and step % args.eval_every == 0:  # evaluate the model
            test_loss = criterion(model(x_test), y_test)
            results["test_losses"].append(test_loss.item())
            results["train_acc"].append(accuracy(model, x_train, y_train))
            results["test_acc"].append(accuracy(model, x_test, y_test))

        if step > 0 and step % args.print_every == 0:  # print out training progress
            t1 = time.time()
            print(
                "step {}, dt {:.2f}s, train_loss {:.3e}, test_loss {:.3e}, train_acc {:.1f}, test_acc {:.1f}".format(
                    step,
                    t1 - t0,
                    loss.item(),
                    results["test_losses"][-1],
                    results["train_acc"][-1],
                    results["test_acc"][-1],
                )
            )
            t0 = t1

        if args.checkpoint_every > 0 and step % args.checkpoint_every == 0:  # save model checkpoints
            model.step = step
            results["checkpoints"].append(copy.deepcopy(model))
    return results


class ConvBase(nn.Module):
    def __init__(self, output_size, channels=25, linear_in=125):
        super(ConvBase, self).__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.linear = nn.Linear(linear_in, output_size)  # flattened channels -> 10 (assumes input has dim 50)
        print("Initialized ConvBase model with {} parameters".format(self.count_params()))

    def count_params(self):
        return sum([p.view(-1).shape[0] for p in self.parameters()])

    def forward(self, x, verbose=False):  # the print statements are for debugging
        x = x.view(-1, 1, x.shape[-1])
        h1 = self.conv1(x).relu()
        h2 = self.conv2(h1).relu()
        h3 = self.conv3(h2).relu()
        h3 = h3.view(h3.shape[0], -1)  # flatten the conv features
        return self.linear(h3)  # a linear classifier goes on top
