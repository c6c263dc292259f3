"""uad entry point: compose the Hydra config and hand it to uad.pipeline.run.

python run.py                                   # default method on the embedded synthetic data
python run.py method=dualad_he backbone=wres50 dataset=visa
python run.py mode=describe method=uniad backbone=effb4 backbone.pretrained=false
python run.py -m method=uniad,dinomaly dataset=mvtec,visa

An error the user can fix (a missing dataset, weights file or checkpoint, a broken image) prints its
message alone and exits with status 1; HYDRA_FULL_ERROR=1 shows the traceback too.
"""

import os
import sys

import hydra
from omegaconf import DictConfig

from uad.errors import UserError
from uad.pipeline import objective, run


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        return objective(cfg, run(cfg))  # what a hyperparameter search (hparams_search=optuna) optimises
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
