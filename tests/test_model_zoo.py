"""Drop-in on the models researchers already have (issue 21): each timm and transformers model of
``tests/zoo.py`` × each family: factorize → forward + backward with FD → SGD step → rebalance → save →
reload into a fresh model → outputs equal → collapse → outputs equal.

``python -m tests.test_model_zoo`` prints the model × family table (factorized/kept layers, the factorized
layers' and the whole model's parameter ratio, reload and collapse max-abs differences).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

import tdecomp
from tests.helpers import FAMILIES
from tests.zoo import ZOO, build, logits

RATIO = 0.25
LR, DECAY, CLIP = 0.01, 1e-4, 1.0
# collapse reorders float32 sums (factor chain → one dense matmul/conv): a few ulps of the logits' scale
COLLAPSE_TOL = 1e-5


def run(name: str, family: str, folder: Path) -> dict:
    """The whole drop-in pipeline on ``ZOO[name]``; its row of the table."""
    model, inputs = build(name)
    tdecomp.factorize_model(model, family, RATIO, progress=False)
    report = tdecomp.summarize(model)
    model.train()
    opt = torch.optim.SGD(tdecomp.param_groups(model, DECAY, frobenius_decay=DECAY), lr=LR)
    loss = logits(model, inputs).float().square().mean() + 0.5 * DECAY * tdecomp.frobenius_decay(model)
    loss.backward()
    assert all(f.grad is not None for m in model.modules() if isinstance(m, tdecomp.FactorizedLayer)
               for f in m.factors()), "a factor got no gradient"
    nn.utils.clip_grad_norm_(model.parameters(), CLIP)  # tiny batches through BatchNorm give huge gradients
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    tdecomp.rebalance(model, opt)
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    model.eval()
    with torch.no_grad():
        out = logits(model, inputs)
        tdecomp.save(model, folder / f"{name}-{family}.pt")
        reloaded = logits(tdecomp.load(folder / f"{name}-{family}.pt", ZOO[name].build).eval(), inputs)
        tdecomp.collapse_model(model)
        assert not any(isinstance(m, tdecomp.Factorized) for m in model.modules())
        collapsed = logits(model, inputs)
    scale = float(out.abs().max())
    return {"model": name, "family": family, "factorized": len(report.layers), "kept": len(report.kept),
            "ratio": report.ratio, "model_ratio": report.model_ratio,
            "reload": float((reloaded - out).abs().max()), "collapse": float((collapsed - out).abs().max()),
            "scale": scale}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ZOO)
def test_drop_in(name, family, tmp_path):
    row = run(name, family, tmp_path)
    assert row["factorized"] > 0 and torch.isfinite(torch.tensor(row["scale"]))
    assert row["reload"] == 0.0, "the reloaded model computes something else"
    assert row["collapse"] <= COLLAPSE_TOL * max(row["scale"], 1.0)


def table(rows: list[dict]) -> str:
    head = "| model | family | factorized / kept | layer ratio | model ratio | reload max-abs | collapse max-abs |"
    lines = [head, "|" + "---|" * 7]
    lines += [f"| {r['model']} | {r['family']} | {r['factorized']} / {r['kept']} | {r['ratio']:.3f} | "
              f"{r['model_ratio']:.3f} | {r['reload']:.1e} | {r['collapse']:.1e} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        print(table([run(name, family, Path(folder)) for name in (sys.argv[1:] or ZOO) for family in FAMILIES]))
