"""params.yaml, validated: `Params` and its sections (`params`), the section classes (`sections`) and the
field checks they share (`checks`). A bad field is reported with its path, its value and what was expected."""

from ptune.config.params import Params, load_params, params_from_dict, project_params, torch_dtype_name
from ptune.config.sections import INITS, DataConfig, EvalConfig, PromoteConfig, PromptInit, TrainConfig

__all__ = ["INITS", "DataConfig", "EvalConfig", "Params", "PromoteConfig", "PromptInit", "TrainConfig", "load_params",
           "params_from_dict", "project_params", "torch_dtype_name"]
