"""uad entry point: compose the Hydra config and hand it to uad.pipeline.run.

python run.py                                   # default method on the embedded synthetic data
python run.py method=dualad_he backbone=wres50 dataset=visa
python run.py mode=describe method=uniad backbone=effb4 backbone.pretrained=false
python run.py -m method=uniad,dinomaly dataset=mvtec,visa

An error the user can fix (a missing dataset, weights file or checkpoint, a broken image, a bad config value,
an unknown config option or key) prints one line and exits with status 1; HYDRA_FULL_ERROR=1 shows the
traceback too. SIGTERM / SIGINT save a checkpoint, mark the run "interrupted" and exit with 128 + the signal.
The config's values and the dataset root are checked before torch is imported, so such errors come at once.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from uad.config_checks import check_config
from uad.errors import RunInterrupted, UserError
from uad.utils.cli import fail, full_errors, one_line_errors, stop

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        check_config(cfg)
        from uad.pipeline import objective, run  # torch and Lightning: only once the config is sound

        return objective(cfg, run(cfg))  # what a hyperparameter search (hparams_search=optuna) optimises
    except UserError as err:
        if full_errors():
            raise
        fail(str(err))
    except RunInterrupted as err:
        stop(err)


if __name__ == "__main__":
    one_line_errors(CONF_DIR)
    main()
