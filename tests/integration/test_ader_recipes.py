"""The ADer benchmark recipes (zhangzjn/ADer configs/benchmark/*/*_256_100e.py) as our experiments: each says
in results.json (the protocol's `description`, which the evaluator writes with the protocol) where ADer
selects or reports otherwise, and trains under ADer's weight-decay rule.

ADer's `optim.get_optim` splits the parameters by `add_weight_decay` whenever the recipe sets a weight
decay: no decay on biases and 1-D tensors (`method.no_decay_1d`). Its trainers test at epochs 10, 20, ...,
100 and print the best of those tests per metric ("(Max)"); with `use_adeval=True` its pixel metrics and
AUPRO are the adeval package's binned estimates.
"""

from __future__ import annotations

import pytest

from tests.conftest import compose_config
from uad.builders import build_protocol

# recipe -> whether ADer trains it with a weight decay (AdamW, 1e-4) or none (RD: Adam)
RECIPES = {"uniad_ader256": True, "rd4ad_ader256": False, "vitad_ader256": True, "mambaad_ader256": True}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_an_ader_recipe_says_where_ader_reports_otherwise_and_decays_as_ader(recipe, tmp_path):
    cfg = compose_config([f"experiment={recipe}"], output_dir=tmp_path)
    description = build_protocol(cfg).as_dict()["description"]
    assert "adeval" in description and "exactly" in description  # binned pixel metrics vs our exact ones
    assert "(Max)" in description and "last epoch" in description  # best over its tests vs our last epoch
    decays = RECIPES[recipe]
    assert bool(cfg.method.optimizer.get("weight_decay")) == decays
    assert cfg.method.get("no_decay_1d", False) == decays
