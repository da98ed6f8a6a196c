# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # (g) Your own training loop
#
# Norm Loss and ONI in three loops a researcher may already have: a plain PyTorch loop (with autocast and
# a GradScaler), a PyTorch Lightning module, and a Hugging Face `Trainer` on a GPT-2 built from a tiny
# config (nothing downloaded). The hooks are the same five everywhere (README, "Your own training loop");
# the two callbacks run them at the right moments. Each loop records the drift `norm_dev_mean` of the
# weights the forward pass uses, and the figure draws the three side by side.

# %% tags=["parameters"]
# Parameters. SIZE = "small" runs top to bottom in well under a minute on 2 CPU cores (the test suite runs
# it); SIZE = "full" trains each loop ten times longer.
import os

SIZE = os.environ.get("OBLIQUE_NB_SIZE", "small")
OUT = os.environ.get("OBLIQUE_NB_OUT", "studies/notebooks")  # the Trainers' folders go under here
assert SIZE in ("small", "full"), f"SIZE must be 'small' or 'full'; got {SIZE!r}"
STEPS = 24 if SIZE == "small" else 240

# %%
import warnings

import lightning.pytorch as L
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
import transformers

import oblique
from oblique.data import get_dataset
from oblique.integrations.lightning import ObliqueCallback as LightningCallback
from oblique.integrations.transformers import ObliqueCallback as HFCallback
from oblique.models import get_model

warnings.filterwarnings("ignore", module="lightning")  # its advice on workers and loggers, not ours
METHODS = {"nl": {"strength": 0.1}, "oni": {}}
data = get_dataset("mnist1d")
x_train, y_train = data.train.x[: 64 * 8], data.train.y[: 64 * 8]


def drift(model, method) -> float:
    return oblique.model_drift(model, weights=method.effective_filters(model))["mean"]["norm_dev_mean"]


# %% [markdown]
# ## A plain loop: prepare, then the optimizer; unscale before the closed form


# %%
def plain(name: str) -> list[tuple[int, float]]:
    torch.manual_seed(0)
    method = oblique.get_method(name, **METHODS[name])
    model = method.prepare(get_model("resnet1d"))
    optimizer = method.make_optimizer(model, oblique.OptimizerConfig(lr=0.05))
    scaler = torch.amp.GradScaler("cpu")
    curve = []
    for step in range(1, STEPS + 1):
        i = (step - 1) % 8
        x, y = x_train[64 * i : 64 * (i + 1)], y_train[64 * i : 64 * (i + 1)]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
            penalty = method.penalty(model)
        if penalty is not None:
            loss = loss + penalty
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        method.before_step(model)
        scaler.step(optimizer)
        scaler.update()
        method.after_step(model, step)
        curve.append((step, drift(model, method)))
    return curve


curves = {("plain loop", name): plain(name) for name in METHODS}

# %% [markdown]
# ## Lightning: the callback prepares the module in `setup`, before `configure_optimizers`


# %%
class Module(L.LightningModule):
    def __init__(self, callback):
        super().__init__()
        torch.manual_seed(0)
        self.net, self.callback, self.curve = get_model("resnet1d"), callback, []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.curve.append((self.global_step, drift(self, self.callback.method)))

    def configure_optimizers(self):
        return self.callback.make_optimizer(self, oblique.OptimizerConfig(lr=0.05))


loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train), batch_size=64)
for name in METHODS:
    callback = LightningCallback(oblique.get_method(name, **METHODS[name]))
    module = Module(callback)
    L.Trainer(
        max_steps=STEPS,
        callbacks=[callback],
        precision="bf16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    ).fit(module, loader)
    curves[("Lightning", name)] = module.curve

# %% [markdown]
# ## The Hugging Face `Trainer`: a GPT-2 from a tiny config, every attention and MLP matrix targeted
#
# Its LM head is tied to the token embedding; ONI would break the tie, so the head is excluded (ONI
# refuses otherwise, naming both layers).


# %%
class Tokens(torch.utils.data.Dataset):
    def __init__(self):
        self.ids = torch.randint(0, 64, (64, 16), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Record(transformers.TrainerCallback):
    def __init__(self, method, curve):
        self.method, self.curve = method, curve

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.curve.append((state.global_step, drift(model, self.method)))


for name in METHODS:
    torch.manual_seed(0)
    gpt = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, bos_token_id=0, eos_token_id=0)
    )
    method = oblique.get_method(name, targets="all", exclude=["lm_head"], **METHODS[name])
    curve: list[tuple[int, float]] = []
    args = transformers.TrainingArguments(
        output_dir=f"{OUT}/hf_{name}",
        max_steps=STEPS,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        bf16=True,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    transformers.Trainer(
        model=gpt, args=args, train_dataset=Tokens(), callbacks=[HFCallback(method), Record(method, curve)]
    ).train()
    curves[("HF Trainer", name)] = curve

# %% [markdown]
# ## Side by side
#
# Norm Loss pulls every filter toward unit norm, softly: its drift falls from where the initialization
# put it. ONI's rows are orthogonal times γ = √2 by construction, so its `norm_dev_mean` sits near
# √2 − 1 ≈ 0.414 in every loop (`--hp scale=1` puts them at unit norm). The same numbers whatever the
# loop: the hooks, not the framework, decide what the method does.

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
for ax, loop in zip(axes, ("plain loop", "Lightning", "HF Trainer"), strict=True):
    for name in METHODS:
        steps, values = zip(*curves[(loop, name)], strict=True)
        ax.plot(steps, values, label=name)
    ax.set_title(loop)
    ax.set_xlabel("step")
axes[0].set_ylabel("norm_dev_mean")
axes[0].legend()
fig.tight_layout()
plt.show()
