"""nudgekit entry point: `python run.py experiment=<name>` (see README.md and conf/)."""

import hydra
from omegaconf import DictConfig

import nudgekit.config  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from nudgekit.cli import run

    return run(cfg)


if __name__ == "__main__":
    from nudgekit.launch import launch

    launch(main)  # Hydra's config errors -> one line and exit code 2, like every user error
