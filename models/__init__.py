"""What one trial trains: families, data, training methods, the trainer and ROUGE. Knows nothing of Optuna.

`from models import NAME` is the contract the search side uses; the modules behind it are this package's
own. Each name is imported on first use (PEP 562): `import models` loads neither torch nor transformers,
so `python -m search.run` starts its workers before torch costs it seconds.
"""
import importlib
import logging

# On CPUs with AVX512-BF16, bitsandbytes warns at import that it could not download an optional
# kernel from the hub. Nothing here downloads at run time, so the warning is noise in every command.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

# name -> "module" that defines it, or "module:name" where the contract names it otherwise
_CONTRACT = {
    # the config a trial trains with
    "TrainConfig": "config", "METHODS": "config", "METRICS": "config",
    # a user's mistakes, each a one-line message, and how a command prints them
    "ConfigError": "errors", "DataError": "errors", "CheckpointError": "errors", "UnknownFamily": "errors",
    "Diverged": "errors", "OutputError": "errors", "USER_ERRORS": "errors",
    "run_cli": "cli", "quiet_libraries": "cli", "parse_overrides": "cli",
    # one training run (models.train is the command's module, hence train_model)
    "train_model": "trainer:train", "Report": "trainer", "Result": "trainer", "KeepCheckpoint": "trainer",
    "model_name": "trainer",
    "check_method_possible": "methods", "check_family_fits": "methods", "load_tokenizer": "methods",
    "get_family": "families",
    # what rank 0 shares with the other processes of a trial under accelerate launch
    "rank": "distributed", "world_size": "distributed", "share": "distributed",
    "wait_for_everyone": "distributed", "close_process_group": "distributed",
    # data a user has, and the bundled demo
    "read_rows": "datafiles", "is_hub": "datafiles", "demo_assets": "demo", "DEMO_OVERRIDES": "demo",
    # a saved checkpoint: its config, its summaries, its ROUGE, its export
    "read_metadata": "generate", "write_submission": "predict", "check_output_file": "predict", "rouge": "metrics",
    "export_checkpoint": "export", "hub_reachable": "hub",
    # ensembles of saved checkpoints: MBR voting and weight soups
    "checkpoint_candidates": "ensemble", "mbr_vote": "ensemble", "rouge_agreement": "ensemble",
    "soup_problem": "ensemble", "greedy_soup": "ensemble", "save_soup": "ensemble",
}
__all__ = list(_CONTRACT)


def __getattr__(name: str):
    if name not in _CONTRACT:
        raise AttributeError(f"module 'models' has no attribute '{name}'")
    module, _, attribute = _CONTRACT[name].partition(":")
    # Looked up where it is defined at every import, not kept here: a name replaced there (as a test's
    # monkeypatch does) is the one the contract hands out.
    return getattr(importlib.import_module(f"models.{module}"), attribute or name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
