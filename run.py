"""uad entry point: compose the Hydra config and hand it to uad.pipeline.run.

python run.py                                   # default method on the embedded synthetic data
python run.py method=dualad_he backbone=wres50 dataset=visa
python run.py mode=describe method=uniad backbone=effb4 backbone.pretrained=false
python run.py -m method=uniad,dinomaly dataset=mvtec,visa
"""

import hydra
from omegaconf import DictConfig

from uad.pipeline import objective, run


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return objective(cfg, run(cfg))  # what a hyperparameter search (hparams_search=optuna) optimises


if __name__ == "__main__":
    main()
